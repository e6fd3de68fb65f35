"""Write-ahead spool: every collected row is appended here before it is acknowledged.

Why: samples sit in RAM for hours (2000 samples ~ 16 h per symbol) before they are
flushed to parquet and the legacy format; a crash must not lose them.

Durability window: each record is handed to the kernel with one ``os.write`` before
``append_*`` returns, so it survives ``kill -9`` and any crash of this process. It is
``fsync``-ed by ``sync()``, which the bot calls once per tick (group commit): an OS
crash or power loss can lose at most the rows of the last tick (one ``interval``).

Segments (record format: ``spool_format``): appends go to the newest segment
``wal_<n>.log``. Past ``segment_limit`` bytes, ``rotate()`` opens the next one, which
starts with a header and a STATE record (watermarks and unfinished flushes, a few KB),
so no row is ever rewritten to rotate. An older segment is deleted once every row in
it has been written by every sink; one still pinned by a few unflushed rows (a quiet
symbol's samples) is compacted when its unflushed part is under half of it: those rows
alone are copied into the newest segment, then it is deleted. Rotation therefore costs
O(keys + unfinished flushes), compaction O(its segment), and the spool stays within
about twice the unflushed data plus one segment. Rotation may run on any thread.

Recovery (``recover`` then ``begin``): see ``spool_recovery`` for the rules. Segments
written by a build with other features or layouts are moved, byte for byte, into
``.incompatible-<UTC time>/`` beside a ``REASON.txt``; their compatible rows (tape,
candles) are recovered. Segments with damaged regions are moved, byte for byte, into
``.damaged-<UTC time>/`` (``REASON.txt`` names each region) once their good records
are safe in the new segment; nothing here deletes them.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.contracts.versions import SPOOL_FORMAT_VERSION, current_feature_version
from backend.ml_engine.data_collection.buffers import Columns
from backend.ml_engine.data_collection.records import RowLayout, StreamKey
from backend.ml_engine.data_collection.spool_format import (
    ROW_HEAD,
    REC_ROW,
    Range,
    decode_segment,
    encode_block,
    encode_done,
    encode_header,
    encode_intent,
    encode_key,
    encode_state,
    frame,
)
from backend.ml_engine.data_collection.spool_recovery import RecoveredSpool, assemble
from backend.ml_engine.feature_store.atomic import fsync_dir
from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES

log = logging.getLogger("backend.ml_engine.data_collection")

SEGMENT_LIMIT = 64 * 1024 * 1024
BLOCK_RECORD_BYTES = 1024 * 1024  # one copy record holds at most ~1 MB: appends never wait long for the lock


class SpoolLockedError(RuntimeError):
    """Another process holds this spool folder (a second collector on the same data)."""


@dataclass
class _Segment:
    number: int
    path: Path
    bytes: int = 0
    keys: dict[StreamKey, list[int]] = field(default_factory=dict)  # key -> [min seq, max seq, rows]


@dataclass
class _BeginWork:
    """What ``Spool.begin`` has to write, kept until the disk takes it."""

    rec: RecoveredSpool
    pending_parts: dict
    live: dict
    written: bool = False  # the new segment holds every unfinished row
    aside: Path | None = None


def _number(path: Path) -> int:
    return int(path.stem.split("_")[1])


class Spool:
    """Append-only write-ahead log of one collector; thread-safe; one process per folder (lock file).

    ``layouts``: the row layout of every stream this build writes. ``feature_names``: the
    sample vector's names, stamped in each segment header. Raises ``SpoolLockedError``
    when another process holds the folder, ``OSError`` when it cannot be created.
    """

    def __init__(self, folder: Path, layouts: dict[str, RowLayout], *, fsync: bool = True,
                 feature_version: int | None = None, feature_names: tuple[str, ...] = FEATURE_NAMES,
                 segment_limit: int = SEGMENT_LIMIT):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        # Two collectors on one data folder would recover and flush each other's rows.
        self._lock_fd: int | None = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolLockedError(
                f"another collector is already running on {self.folder.parent} (its spool {self.folder} is locked); "
                "stop it or use a different --data-dir"
            ) from None
        self.layouts = dict(layouts)
        self.feature_names = tuple(feature_names)
        self.feature_version = current_feature_version().version if feature_version is None else feature_version
        self.fsync_enabled = fsync
        self.segment_limit = int(segment_limit)
        self._lock = threading.Lock()
        self._maint = threading.Lock()  # one rotation/compaction at a time
        self._fd: int | None = None
        self._begin: _BeginWork | None = None  # what ``begin`` has still to write (a full disk at start-up)
        self._current: _Segment | None = None
        self._old: dict[int, _Segment] = {}
        self._key_ids: dict[StreamKey, int] = {}
        self._dirty = False
        self._total = sum(p.stat().st_size for p in self.segments())
        self.written_bytes = 0  #: bytes of records this process appended (all segments; write volume)
        self.rotations = 0  #: segments this process opened past ``segment_limit`` (``rotate`` calls that ran)
        # what is not yet written by every sink (see ``_watermarks``)
        self._pending: dict[str, list[Range]] = {}
        self._claimed_hi: dict[StreamKey, int] = {}
        self._last_seq: dict[StreamKey, int] = {}
        self._done_spans: dict[StreamKey, list[tuple[int, int]]] = {}

    # --- sizes -----------------------------------------------------------------------
    @property
    def bookkeeping_bytes(self) -> int:
        """Estimated RAM of the spool's tables, in bytes (counted in the collector's memory cap).

        Per stream key ~0.5 kB (its id, watermarks and per-segment span), ~0.2 kB per
        pending flush range and per written span not yet folded into a watermark: about
        0.8 MB for 500 symbols x 3 streams with a few hundred flushes in flight.
        """
        with self._lock:
            segs = sum(len(seg.keys) for seg in self._old.values()) + (len(self._current.keys) if self._current else 0)
            ranges = sum(len(r) for r in self._pending.values())
            spans = sum(len(v) for v in self._done_spans.values())
            keys = len(self._last_seq)
        return 320 * keys + 160 * segs + 200 * (ranges + spans)

    def segments(self) -> list[Path]:
        """Segment files in the spool folder, oldest first."""
        return sorted(self.folder.glob("wal_*.log"), key=_number)

    @property
    def segment_bytes(self) -> int:
        """Bytes appended to the current segment."""
        return self._current.bytes if self._current else 0

    @property
    def total_bytes(self) -> int:
        """Bytes of every segment of this spool on disk (running count)."""
        return self._total

    @property
    def rotation_due(self) -> bool:
        """True when the current segment has passed ``segment_limit``."""
        return self._current is not None and self._current.bytes > self.segment_limit

    # --- recovery ----------------------------------------------------------------------
    def recover(self) -> RecoveredSpool:
        """Read every segment left by an earlier process; changes no file.

        Returns the classified rows and flushes (``spool_recovery.RecoveredSpool``). A
        segment that cannot be read at all (``OSError``) is listed in ``set_aside``.
        """
        decoded = []
        unreadable = {}
        for path in self.segments():
            try:
                decoded.append(decode_segment(path))
            except OSError as exc:
                unreadable[path] = f"cannot be read ({exc})"
        rec = assemble(decoded, self.layouts, current_feature_version().names_sha256)
        rec.set_aside.update(unreadable)
        rec.segments = self.segments()
        return rec

    @property
    def started(self) -> bool:
        """True once ``begin`` has completed (the new segment is written and old segments are dealt with)."""
        return self._begin is None and self._fd is not None

    def begin(self, rec: RecoveredSpool) -> Path | None:
        """Start writing after ``recover``: a new segment holding every unfinished row, then old segments go.

        The new segment gets the header, a STATE with ``rec``'s unfinished flushes, and the
        live and pending rows (as block records), and is fsync-ed before any old segment
        is touched; then segments in ``rec.set_aside`` are moved intact into
        ``.incompatible-<UTC time>/`` (returned; None when there were none) and the others
        are deleted. A crash in between leaves duplicates that the next recovery merges.

        Raises ``OSError`` when the disk refuses (a full disk at start-up): the sequence
        numbers and unfinished flushes are taken over all the same, no old segment is
        touched, and no partial new segment is left; ``finish_begin`` retries the writes.
        Until it succeeds, appends raise ``OSError``.
        """
        pending_parts = rec.pending_parts()
        live = rec.live_rows()
        with self._lock:
            for key, nxt in rec.next_seq.items():
                self._last_seq[key] = nxt - 1
                self._claimed_hi[key] = nxt - 1
            # live rows are claimed by no flush yet: the watermark must stay at the first of them,
            # or a crash before their flushes are declared would count them as done
            for key, cols in live.items():
                self._claimed_hi[key] = min(self._claimed_hi.get(key, -1), int(cols.seq.min()) - 1)
            # a pending flush whose rows were all set aside is not waited for
            self._pending = {fid: [r for r in rec.pending[fid] if r[0] in parts] for fid, parts in pending_parts.items()}
            for ranges in self._pending.values():
                for key, lo, hi in ranges:
                    self._claimed_hi[key] = max(self._claimed_hi.get(key, -1), hi)
        self._begin = _BeginWork(rec, pending_parts, live)
        return self.finish_begin()

    def finish_begin(self) -> Path | None:
        """Write what ``begin`` could not (its new segment, then the old segments' moves); see ``begin``.

        Returns the ``.incompatible-*`` folder (None when there was none); does nothing
        once ``begin`` has completed. Raises ``OSError`` when the disk still refuses.
        """
        work = self._begin
        if work is None:
            return None
        rec = work.rec
        if not work.written:
            self._write_first_segment(work)
            work.written = True
        if rec.set_aside and work.aside is None:
            work.aside = self._set_aside(rec.set_aside)
        damaged = {p: d for p, d in rec.damage.items() if p not in rec.set_aside}
        if damaged and rec.damaged_dir is None:
            rec.damaged_dir = self._set_aside(
                {p: "; ".join(f"{d.length} bytes at offset {d.offset} ({d.records} record(s){', to the end' if d.tail else ''})"
                              for d in regions) for p, regions in damaged.items()},
                prefix=".damaged",
                intro="These spool segments had damaged regions (a flipped bit, a torn write); they are kept here\n"
                      "unchanged. Every record outside the regions below was recovered and flushed; the rows\n"
                      "inside them are lost.\n\n")
        for path in rec.segments:
            if path not in rec.set_aside and path not in damaged:
                self._unlink(path)
        fsync_dir(self.folder)
        self._begin = None
        return work.aside

    def _write_first_segment(self, work: "_BeginWork") -> None:
        """The new segment with every unfinished row, fsync-ed; on ``OSError`` none is left behind."""
        with self._lock:
            self._open_segment_locked(self._watermarks_locked(), work.rec.done_spans)
        try:
            for parts in work.pending_parts.values():
                for key, cols in parts.items():
                    self.append_block(key, cols)
            for key, cols in work.live.items():
                self.append_block(key, cols)
            self._fsync_current()
            fsync_dir(self.folder)
        except OSError:
            with self._lock:
                fd, seg = self._fd, self._current
                self._fd, self._current, self._key_ids, self._dirty = None, None, {}, False
                self._total -= seg.bytes
            os.close(fd)
            seg.path.unlink(missing_ok=True)
            raise

    def _set_aside(self, reasons: dict[Path, str], prefix: str = ".incompatible", intro: str | None = None) -> Path:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = self.folder / f"{prefix}-{stamp}"
        n = 1
        while target.exists():
            n += 1
            target = self.folder / f"{prefix}-{stamp}-{n}"
        target.mkdir()
        lines = [f"{p.name}: {why}" for p, why in reasons.items()]
        try:
            (target / "REASON.txt").write_text((intro or (
                "These spool segments were left by a build this one cannot fully read; they are kept here unchanged.\n"
                "Their rows of streams this build can read (price tape, candles) were recovered and flushed;\n"
                "their other rows (samples of another feature version) are only here.\n\n")) + "\n".join(lines) + "\n"
            )
        except OSError:  # a full disk: no half-made folder is left; the segments stay where they are
            (target / "REASON.txt").unlink(missing_ok=True)
            target.rmdir()
            raise
        for path in reasons:
            size = path.stat().st_size if path.exists() else 0
            os.replace(path, target / path.name)
            self._total -= size
        fsync_dir(target)
        return target

    # --- appends -----------------------------------------------------------------------
    def _write_locked(self, payload: bytes) -> None:
        # the kernel has the record once this returns (survives kill -9)
        if self._fd is None:
            raise OSError(errno.ENOSPC if self._begin is not None else errno.EBADF,
                          "the spool has no segment open (start-up could not write it yet)" if self._begin is not None
                          else "the spool is closed")
        data = frame(payload)
        view = memoryview(data)
        try:
            while view:  # os.write may write fewer bytes than asked (signals, some filesystems)
                view = view[os.write(self._fd, view):]
        except OSError:
            # take back the part written, so the segment ends on a whole record; if even that
            # fails, the reader skips the torn record (format 3 resynchronises)
            written = len(data) - len(view)
            if written:
                try:
                    os.ftruncate(self._fd, self._current.bytes)
                except OSError:
                    self._current.bytes += written
                    self._total += written
            raise
        self._current.bytes += len(data)
        self.written_bytes += len(data)
        self._total += len(data)
        self._dirty = True

    def _key_id_locked(self, key: StreamKey) -> int:
        kid = self._key_ids.get(key)
        if kid is None:
            kid = len(self._key_ids) + 1
            self._key_ids[key] = kid
            self._write_locked(encode_key(kid, key))
        return kid

    def _track_locked(self, key: StreamKey, lo: int, hi: int, n: int) -> None:
        span = self._current.keys.get(key)
        if span is None:
            self._current.keys[key] = [lo, hi, n]
        else:
            if lo < span[0]:
                span[0] = lo
            if hi > span[1]:
                span[1] = hi
            span[2] += n
        if hi > self._last_seq.get(key, -1):
            self._last_seq[key] = hi

    def append_row(self, key: StreamKey, seq: int, ints: tuple, floats: tuple, vector: np.ndarray | None = None) -> None:
        """Append one row of ``key`` (fields in ``layouts[key.stream]`` order; vector float32 (width,))."""
        body = self.layouts[key.stream].packer.pack(*ints, *floats)
        with self._lock:
            kid = self._key_id_locked(key)
            payload = ROW_HEAD.pack(REC_ROW, kid, seq) + body
            if vector is not None:
                payload += vector.tobytes()
            self._write_locked(payload)
            span = self._current.keys.get(key)
            if span is None:
                self._current.keys[key] = [seq, seq, 1]
            else:
                span[1] = seq
                span[2] += 1
            self._last_seq[key] = seq

    def append_block(self, key: StreamKey, cols: Columns) -> None:
        """Append many rows of ``key`` as block records of at most ~1 MB each."""
        n = len(cols)
        if not n:
            return
        lay = self.layouts[key.stream]
        self.append_arrays(key, cols.seq, cols.int_matrix(lay), cols.float_matrix(lay), cols.matrix if lay.width else None)

    def append_arrays(self, key: StreamKey, seq: np.ndarray, ints: np.ndarray, floats: np.ndarray,
                      vectors: np.ndarray | None = None) -> None:
        """``append_block`` of rows given as matrices: seq (n,), ints (n, fields), floats (n, fields), vectors or None.

        The raw-events path hands its encoded rows over this way, with no column split.
        """
        n = len(seq)
        if not n:
            return
        lay = self.layouts[key.stream]
        step = max(1, BLOCK_RECORD_BYTES // (8 + lay.row_bytes))
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            part = seq[lo:hi]
            with self._lock:
                kid = self._key_id_locked(key)
                self._write_locked(encode_block(kid, part, ints[lo:hi], floats[lo:hi],
                                                None if vectors is None else vectors[lo:hi]))
                self._track_locked(key, int(part.min()), int(part.max()), hi - lo)

    def append_intent(self, flush_id: str, ranges: list[Range]) -> None:
        """Record that flush ``flush_id`` is about to write the rows of ``ranges`` (key, first, last seq)."""
        with self._lock:
            ids = [(self._key_id_locked(k), lo, hi) for k, lo, hi in ranges]
            self._write_locked(encode_intent(flush_id, ids))
            self._pending[flush_id] = list(ranges)
            for key, lo, hi in ranges:
                if hi > self._claimed_hi.get(key, -1):
                    self._claimed_hi[key] = hi

    def append_done(self, flush_id: str) -> None:
        """Record that every sink of ``flush_id`` has been written (its rows are done)."""
        with self._lock:
            ranges = self._pending.get(flush_id, ())
            ids = [(self._key_id_locked(k), lo, hi) for k, lo, hi in ranges]
            self._write_locked(encode_done(flush_id, ids))
            finished = self._pending.pop(flush_id, ())
            # a key with no other flush pending is done up to its claimed rows: its spans are
            # below its watermark, so they are dropped now rather than at the next rotation
            # (500 symbols flushed often under a small cap would otherwise hold 0.2 kB per
            # key per flush until the spool rotates)
            busy = {k for ranges in self._pending.values() for k, _, _ in ranges}
            for key, lo, hi in finished:
                if key in busy:
                    self._done_spans.setdefault(key, []).append((lo, hi))
                else:
                    self._done_spans.pop(key, None)

    def sync(self) -> None:
        """Group commit: make every record appended so far durable on disk."""
        with self._lock:
            if self._fd is None or not self._dirty or not self.fsync_enabled:
                self._dirty = False
                return
            fd = os.dup(self._fd)  # a rotation may close the original meanwhile
            self._dirty = False
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _fsync_current(self) -> None:
        if self.fsync_enabled:
            self.sync()

    # --- segments ------------------------------------------------------------------------
    def _watermarks_locked(self) -> dict[StreamKey, int]:
        """Per key, the lowest seq not yet written by every sink (every lower row is done)."""
        low: dict[StreamKey, int] = {}
        for key, last in self._last_seq.items():
            claimed = self._claimed_hi.get(key, -1)
            low[key] = claimed + 1 if last > claimed else last + 1
        for ranges in self._pending.values():
            for key, lo, _ in ranges:
                if lo < low.get(key, lo + 1):
                    low[key] = lo
        for key, spans in list(self._done_spans.items()):
            w = low.get(key)
            kept = [s for s in spans if w is None or s[1] >= w]
            if kept:
                self._done_spans[key] = kept
            else:
                del self._done_spans[key]
        return low

    def _open_segment_locked(self, low: dict[StreamKey, int], done_spans: dict[StreamKey, list[tuple[int, int]]]) -> int | None:
        if self._current is not None:
            number = self._current.number + 1
        else:  # first segment of this process: after every segment an earlier one left
            existing = self.segments()
            number = _number(existing[-1]) + 1 if existing else 1
        path = self.folder / f"wal_{number:08d}.log"
        # the new segment becomes current only once its header and state are written: a full
        # disk leaves the current segment as it was (and no headless segment behind)
        head = frame(encode_header(SPOOL_FORMAT_VERSION, self.feature_version, self.feature_names, self.layouts)) + frame(
            encode_state(low, done_spans, self._pending))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o644)
        try:
            view = memoryview(head)
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        old_fd = self._fd
        if self._current is not None:
            self._old[self._current.number] = self._current
        self._fd, self._current, self._key_ids = fd, _Segment(number, path, len(head)), {}
        self._total += len(head)
        self._dirty = True
        return old_fd

    def rotate(self) -> None:
        """Open the next segment, then delete or compact older ones (see the module docstring).

        Safe on any thread while others append; raises ``OSError`` when the disk refuses.
        """
        with self._maint:
            with self._lock:
                if self._fd is None:
                    return
                low = self._watermarks_locked()
                old_fd = self._open_segment_locked(low, {k: list(v) for k, v in self._done_spans.items()})
                self.rotations += 1
                done_spans = {k: list(v) for k, v in self._done_spans.items()}
                old = list(self._old.values())
            if old_fd is not None:
                if self.fsync_enabled:
                    os.fsync(old_fd)
                os.close(old_fd)
            fsync_dir(self.folder)
            self._clean(old, low, done_spans)

    def _clean(self, old: list[_Segment], low: dict[StreamKey, int], done_spans: dict[StreamKey, list[tuple[int, int]]]) -> None:
        removed = False
        for seg in old:
            live_bytes = 0
            for key, (lo, hi, rows) in seg.keys.items():
                w = low.get(key, hi + 1)
                if hi >= w:
                    live_bytes += min(rows, hi - max(lo, w) + 1) * (8 + self.layouts[key.stream].row_bytes)
            if live_bytes == 0:
                self._drop(seg)
                removed = True
            elif live_bytes * 2 <= seg.bytes:
                self._compact(seg, low, done_spans)
                removed = True
        if removed:
            fsync_dir(self.folder)

    def _compact(self, seg: _Segment, low: dict[StreamKey, int], done_spans: dict[StreamKey, list[tuple[int, int]]]) -> None:
        """Copy the rows of ``seg`` that are not done into the current segment, then delete ``seg``."""
        decoded = decode_segment(seg.path)
        if decoded.problem:  # our own segment should always decode; keep it rather than guess
            log.warning("Spool segment %s could not be compacted (%s); it is kept", seg.path, decoded.problem)
            return
        for key, ch in decoded.rows.items():
            lay = self.layouts.get(key.stream)
            if lay is None or not ch.rows:
                continue
            seq = np.concatenate(ch.seq)
            keep = seq >= low.get(key, 0)
            for lo, hi in done_spans.get(key, ()):
                keep &= ~((seq >= lo) & (seq <= hi))
            if keep.any():
                cols = Columns.from_arrays(lay, seq, np.concatenate(ch.ints), np.concatenate(ch.floats),
                                           np.concatenate(ch.vectors) if lay.width else None)
                self.append_block(key, cols.select(keep))
        self._fsync_current()
        self._drop(seg)

    def _drop(self, seg: _Segment) -> None:
        self._unlink(seg.path)
        with self._lock:
            self._old.pop(seg.number, None)

    def _unlink(self, path: Path) -> None:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        with self._lock:
            self._total -= size

    def close(self, *, remove_segments: bool = False) -> None:
        """Close the current segment and release the folder lock.

        ``remove_segments``: every row has been written by every sink, so the segments
        hold nothing to recover; they are deleted (not while ``begin`` is unfinished:
        the old segments then stay for the next start). Raises ``OSError`` when the final fsync
        fails (the lock goes with the process).
        """
        with self._maint:
            with self._lock:
                fd, self._fd = self._fd, None
            if fd is not None:
                try:
                    if self.fsync_enabled:
                        os.fsync(fd)
                finally:
                    os.close(fd)
            # unfinished ``begin``: the old segments may hold rows found nowhere else
            if remove_segments and self._begin is None:
                for path in self.segments():
                    self._unlink(path)
                fsync_dir(self.folder)
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None
