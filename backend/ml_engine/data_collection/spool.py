"""Write-ahead spool: every collected row is appended here before it is acknowledged.

Why: samples sit in RAM for hours (2000 samples ~ 16 h per symbol) before they are
flushed to parquet and the legacy format; a crash must not lose them.

Durability window: each record is handed to the kernel with one ``os.write`` before
``append_*`` returns, so it survives ``kill -9`` and any crash of this process. It is
``fsync``-ed by ``sync()``, which the bot calls once per tick (group commit): an OS
crash or power loss can lose at most the rows of the last tick (one ``interval``).

Format: a sequence of segment files ``wal_<n>.log`` in the spool folder; each record
is ``<u32 length><u32 crc32><payload>``; payload byte 0 is the record type. A torn or
corrupt tail record (power loss mid-write) fails its CRC and ends the segment.

Records:
* KEY    key_id -> (stream, symbol, source). Streams: "sample", "tape", "candle".
* ROW    key_id, seq, then the stream's fixed-size row (see ``ROW_LAYOUT``).
* BLOCK  key_id and n rows column by column (checkpoints rewrite buffers this way).
* INTENT flush_id and the (key_id, first_seq, last_seq) ranges a flush job covers.
* DONE   flush_id: every sink of that job has been written.

Recovery replays the segments: rows covered by a DONE intent are dropped; intents
without DONE are re-run with the SAME flush_id (the sinks skip names they already
hold, so a half-finished flush completes exactly once); other rows are flushed anew.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from backend.ml_engine.feature_store.atomic import fsync_dir as _fsync_dir
from backend.ml_engine.feature_store.feature_schema import FEATURE_COUNT

REC_KEY, REC_ROW, REC_INTENT, REC_DONE, REC_BLOCK = 1, 2, 3, 4, 5
_HDR = struct.Struct("<II")
_ROW_HEAD = struct.Struct("<BHq")  # type, key_id, seq

# stream -> (int64 fields, float64 fields, float32 vector width)
ROW_LAYOUT: dict[str, tuple[tuple[str, ...], tuple[str, ...], int]] = {
    "sample": (("ts", "collected_at"), ("mid",), FEATURE_COUNT),
    "tape": (("ts",), ("mid", "bid", "ask"), 0),
    "candle": (("ts",), ("open", "high", "low", "close", "volume", "turnover"), 0),
}
_ROW_STRUCTS = {
    stream: struct.Struct("<" + "q" * len(ints) + "d" * len(floats)) for stream, (ints, floats, _) in ROW_LAYOUT.items()
}


@dataclass(frozen=True)
class StreamKey:
    stream: str
    symbol: str  # "*" for streams buffered across symbols
    source: str


@dataclass
class SpooledRow:
    seq: int
    ints: tuple[int, ...]
    floats: tuple[float, ...]
    vector: np.ndarray | None


@dataclass
class RecoveredSpool:
    rows: dict[StreamKey, dict[int, SpooledRow]] = field(default_factory=dict)
    intents: dict[str, list[tuple[StreamKey, int, int]]] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    segments: list[Path] = field(default_factory=list)
    torn_records: int = 0

    def pending_intents(self) -> dict[str, list[tuple[StreamKey, int, int]]]:
        return {fid: ranges for fid, ranges in self.intents.items() if fid not in self.done}

    def unflushed_rows(self) -> dict[StreamKey, list[SpooledRow]]:
        """Rows that no intent covers (intents, done or not, own their rows)."""
        covered: dict[StreamKey, list[tuple[int, int]]] = {}
        for ranges in self.intents.values():
            for key, lo, hi in ranges:
                covered.setdefault(key, []).append((lo, hi))
        out: dict[StreamKey, list[SpooledRow]] = {}
        for key, rows in self.rows.items():
            spans = covered.get(key, [])
            keep = [r for seq, r in sorted(rows.items()) if not any(lo <= seq <= hi for lo, hi in spans)]
            if keep:
                out[key] = keep
        return out

    def rows_in(self, key: StreamKey, lo: int, hi: int) -> list[SpooledRow]:
        rows = self.rows.get(key, {})
        return [rows[s] for s in range(lo, hi + 1) if s in rows]


class SpoolLockedError(RuntimeError):
    pass


class Spool:
    """Append-only, thread-safe; one writer process per spool folder (enforced by a lock file)."""

    def __init__(self, folder: Path, *, fsync: bool = True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        # Two collectors on one data folder would recover and flush each other's rows.
        self._lock_fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolLockedError(
                f"another collector is already running on {self.folder.parent} (its spool {self.folder} is locked); "
                "stop it or use a different --data-dir"
            ) from None
        self.fsync_enabled = fsync
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._segment: Path | None = None
        self._key_ids: dict[StreamKey, int] = {}
        self._bytes = 0
        self._dirty = False

    # --- segments ----------------------------------------------------------------
    def segments(self) -> list[Path]:
        return sorted(self.folder.glob("wal_*.log"), key=lambda p: int(p.stem.split("_")[1]))

    def open_new_segment(self) -> Path:
        """Start a fresh segment; later appends go there. Old segments stay until dropped."""
        with self._lock:
            existing = self.segments()
            number = int(existing[-1].stem.split("_")[1]) + 1 if existing else 1
            path = self.folder / f"wal_{number:08d}.log"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o644)
            if self._fd is not None:
                os.close(self._fd)
            self._fd, self._segment, self._bytes = fd, path, 0
            self._key_ids = {}
            _fsync_dir(self.folder)
            return path

    @property
    def segment_bytes(self) -> int:
        return self._bytes

    def drop_segments_before(self, path: Path) -> None:
        keep = int(path.stem.split("_")[1])
        for seg in self.segments():
            if int(seg.stem.split("_")[1]) < keep:
                seg.unlink(missing_ok=True)
        _fsync_dir(self.folder)

    # --- appends -------------------------------------------------------------------
    def _write(self, payload: bytes) -> None:
        # one write() per record: the kernel has it once this returns (survives kill -9)
        os.write(self._fd, _HDR.pack(len(payload), zlib.crc32(payload)) + payload)
        self._bytes += _HDR.size + len(payload)
        self._dirty = True

    def _key_id(self, key: StreamKey) -> int:
        kid = self._key_ids.get(key)
        if kid is None:
            kid = len(self._key_ids) + 1
            self._key_ids[key] = kid
            meta = json.dumps([key.stream, key.symbol, key.source]).encode()
            self._write(struct.pack("<BH", REC_KEY, kid) + meta)
        return kid

    def append_row(self, key: StreamKey, seq: int, ints: tuple, floats: tuple, vector: np.ndarray | None = None) -> None:
        body = _ROW_STRUCTS[key.stream].pack(*ints, *floats)
        with self._lock:
            kid = self._key_id(key)
            payload = _ROW_HEAD.pack(REC_ROW, kid, seq) + body
            if vector is not None:
                payload += vector.tobytes()
            self._write(payload)

    def append_block(self, key: StreamKey, seq: np.ndarray, ints: np.ndarray, floats: np.ndarray, vectors: np.ndarray | None) -> None:
        """Many rows of one key as a single record (checkpoints): one write, one CRC.

        ``ints``/``floats`` are (n, fields) in ``ROW_LAYOUT`` order, ``vectors`` (n, width) float32.
        """
        n = int(seq.size)
        if n == 0:
            return
        parts = [
            struct.pack("<BHI", REC_BLOCK, 0, n),
            np.ascontiguousarray(seq, dtype="<i8").tobytes(),
            np.ascontiguousarray(ints, dtype="<i8").tobytes(),
            np.ascontiguousarray(floats, dtype="<f8").tobytes(),
        ]
        if vectors is not None:
            parts.append(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
        with self._lock:
            kid = self._key_id(key)
            parts[0] = struct.pack("<BHI", REC_BLOCK, kid, n)
            self._write(b"".join(parts))

    def append_intent(self, flush_id: str, ranges: list[tuple[StreamKey, int, int]]) -> None:
        with self._lock:
            body = json.dumps([flush_id, [[self._key_id(k), lo, hi] for k, lo, hi in ranges]]).encode()
            self._write(bytes([REC_INTENT]) + body)

    def append_done(self, flush_id: str) -> None:
        with self._lock:
            self._write(bytes([REC_DONE]) + flush_id.encode())

    def sync(self) -> None:
        """Group commit: make every record appended so far durable on disk."""
        with self._lock:
            if self._fd is None or not self._dirty or not self.fsync_enabled:
                self._dirty = False
                return
            fd = self._fd
            self._dirty = False
        os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                if self.fsync_enabled:
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    # --- recovery ------------------------------------------------------------------
    def recover(self) -> RecoveredSpool:
        out = RecoveredSpool(segments=self.segments())
        for seg in out.segments:
            key_map: dict[int, StreamKey] = {}
            for payload in _records(seg, out):
                kind = payload[0]
                if kind == REC_KEY:
                    kid = struct.unpack_from("<H", payload, 1)[0]
                    stream, symbol, source = json.loads(payload[3:])
                    key_map[kid] = StreamKey(stream, symbol, source)
                elif kind == REC_ROW:
                    _, kid, seq = _ROW_HEAD.unpack_from(payload, 0)
                    key = key_map[kid]
                    ints_names, floats_names, width = ROW_LAYOUT[key.stream]
                    packer = _ROW_STRUCTS[key.stream]
                    values = packer.unpack_from(payload, _ROW_HEAD.size)
                    vector = None
                    if width:
                        vector = np.frombuffer(payload, dtype=np.float32, count=width, offset=_ROW_HEAD.size + packer.size).copy()
                    n_int = len(ints_names)
                    out.rows.setdefault(key, {})[seq] = SpooledRow(seq, values[:n_int], values[n_int:], vector)
                elif kind == REC_BLOCK:
                    _, kid, n = struct.unpack_from("<BHI", payload, 0)
                    key = key_map[kid]
                    ints_names, floats_names, width = ROW_LAYOUT[key.stream]
                    off = struct.calcsize("<BHI")
                    seq = np.frombuffer(payload, "<i8", n, off)
                    off += 8 * n
                    ints = np.frombuffer(payload, "<i8", n * len(ints_names), off).reshape(n, len(ints_names))
                    off += 8 * n * len(ints_names)
                    floats = np.frombuffer(payload, "<f8", n * len(floats_names), off).reshape(n, len(floats_names))
                    off += 8 * n * len(floats_names)
                    vectors = np.frombuffer(payload, "<f4", n * width, off).reshape(n, width) if width else None
                    rows = out.rows.setdefault(key, {})
                    for i, s in enumerate(seq.tolist()):
                        rows[s] = SpooledRow(
                            s, tuple(ints[i].tolist()), tuple(floats[i].tolist()), vectors[i].copy() if width else None
                        )
                elif kind == REC_INTENT:
                    flush_id, ranges = json.loads(payload[1:])
                    out.intents[flush_id] = [(key_map[kid], lo, hi) for kid, lo, hi in ranges]
                elif kind == REC_DONE:
                    out.done.add(payload[1:].decode())
        return out


def _records(path: Path, out: RecoveredSpool) -> Iterator[bytes]:
    data = path.read_bytes()
    pos = 0
    while pos + _HDR.size <= len(data):
        length, crc = _HDR.unpack_from(data, pos)
        start, end = pos + _HDR.size, pos + _HDR.size + length
        if length == 0 or end > len(data) or zlib.crc32(data[start:end]) != crc:
            out.torn_records += 1
            return
        yield data[start:end]
        pos = end
    if pos != len(data):
        out.torn_records += 1
