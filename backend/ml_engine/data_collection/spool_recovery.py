"""From decoded spool segments to what recovery must do (pure: no file access).

Rules (DESIGN.md §4: recovered exactly once, never truncated, never silently dropped):

* A stream's rows in a segment are *compatible* when the segment's layout of that stream
  equals this build's and, for a stream with a feature vector, the segment's feature
  names are this build's (format 1 segments: ``FEATURE_VERSIONS[1]``, recognised by the
  vector width). Compatible rows are recovered; a segment holding any other rows (or
  an undecodable record) is *set aside* intact by the caller, and only its compatible
  rows are recovered from it. Samples of another feature version cannot become valid
  rows of this build's store (their features differ), so they stay in the set-aside
  copy, whole, for a conversion tool.
* A row is *done* when its seq is below its key's ``done_below`` in a STATE record, in a
  STATE's done range, in the range of an intent with a DONE record, or in an intent a
  later STATE no longer lists (it had finished by then).
* Damaged regions of a segment (see ``spool_format``) cost only the records in them; the
  segment's other records count as usual.
* Intents without DONE are *pending*: their rows are re-written under the same flush id.
* Every other compatible row is *live*: flushed anew.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.contracts.versions import FEATURE_VERSIONS
from backend.ml_engine.data_collection.buffers import Columns
from backend.ml_engine.data_collection.records import RowLayout, StreamKey
from backend.ml_engine.data_collection.spool_format import Damage, DecodedSegment, Range, names_digest_or_none


@dataclass
class RecoveredSpool:
    """What the spool segments of an earlier process hold, classified.

    * ``segments``: every segment read, oldest first; ``set_aside``: those to move aside,
      with the reason; ``set_aside_rows``: rows per stream that stay only there.
    * ``rows``: compatible rows by key, sorted by seq, each seq once.
    * ``pending``: flush id -> ranges of unfinished flushes; ``done_below``, ``done_spans``:
      what had been written; ``next_seq``: per key, one past the highest seq seen anywhere.
    * ``damage``: per segment, the regions skipped as damaged (``Damage``: offset, bytes,
      records); such a segment's good records are recovered and the file itself is moved
      to ``damaged_dir`` by ``Spool.begin``. ``torn_records``: records skipped, in all.
    """

    segments: list[Path] = field(default_factory=list)
    set_aside: dict[Path, str] = field(default_factory=dict)
    set_aside_rows: dict[str, int] = field(default_factory=dict)
    rows: dict[StreamKey, Columns] = field(default_factory=dict)
    pending: dict[str, list[Range]] = field(default_factory=dict)
    done_below: dict[StreamKey, int] = field(default_factory=dict)
    done_spans: dict[StreamKey, list[tuple[int, int]]] = field(default_factory=dict)
    next_seq: dict[StreamKey, int] = field(default_factory=dict)
    torn_records: int = 0
    damage: dict[Path, list[Damage]] = field(default_factory=dict)
    damaged_dir: Path | None = None

    @property
    def damaged_bytes(self) -> int:
        """Bytes skipped as damaged, all segments."""
        return sum(d.length for regions in self.damage.values() for d in regions)

    def _done_mask(self, key: StreamKey, seq: np.ndarray) -> np.ndarray:
        mask = seq < self.done_below.get(key, 0)
        for lo, hi in self.done_spans.get(key, ()):
            mask |= (seq >= lo) & (seq <= hi)
        return mask

    def pending_parts(self) -> dict[str, dict[StreamKey, Columns]]:
        """Rows of each pending flush, by flush id then key (keys with no rows left out)."""
        out: dict[str, dict[StreamKey, Columns]] = {}
        for fid, ranges in self.pending.items():
            parts = {}
            for key, lo, hi in ranges:
                cols = self.rows.get(key)
                if cols is None:
                    continue
                sel = cols.select((cols.seq >= lo) & (cols.seq <= hi))
                if len(sel):
                    parts[key] = sel
            if parts:
                out[fid] = parts
        return out

    def live_rows(self) -> dict[StreamKey, Columns]:
        """Rows neither done nor owned by a pending flush, by key, oldest first."""
        owned: dict[StreamKey, list[tuple[int, int]]] = {}
        for ranges in self.pending.values():
            for key, lo, hi in ranges:
                owned.setdefault(key, []).append((lo, hi))
        out = {}
        for key, cols in self.rows.items():
            mask = ~self._done_mask(key, cols.seq)
            for lo, hi in owned.get(key, ()):
                mask &= ~((cols.seq >= lo) & (cols.seq <= hi))
            if mask.any():
                out[key] = cols.select(mask)
        return out


def _compatible(seg: DecodedSegment, stream: str, layouts: dict[str, RowLayout], digest: str) -> str | None:
    """None when ``stream``'s rows of ``seg`` can be read as this build's, else why not."""
    mine = layouts.get(stream)
    theirs = seg.layouts.get(stream)
    if mine is None:
        return f"stream '{stream}' is unknown to this build"
    if theirs is None or theirs.ints != mine.ints or theirs.floats != mine.floats:
        return f"stream '{stream}' has another row layout"
    if mine.width or theirs.width:
        if seg.format_version == 1:
            v1 = FEATURE_VERSIONS[1]
            if theirs.width != v1.count:
                return f"its samples have {theirs.width if theirs.width >= 0 else 'mixed'} features (this build: {mine.width})"
            if v1.names_sha256 != digest:
                return f"its samples are feature version 1 ({v1.count} features; this build: {mine.width})"
        else:
            if theirs.width != mine.width or names_digest_or_none(seg.feature_names) != digest:
                return (f"its samples are feature version {seg.feature_version} with {theirs.width} features "
                        f"(this build: {mine.width} features, another feature list)")
    return None


def assemble(decoded: list[DecodedSegment], layouts: dict[str, RowLayout], feature_digest: str) -> RecoveredSpool:
    """Classify the rows and flushes of ``decoded`` (oldest segment first); see the module rules."""
    out = RecoveredSpool(segments=[d.path for d in decoded])
    chunks: dict[StreamKey, list[tuple]] = {}
    intents: dict[str, list[Range]] = {}
    done_fids: set[str] = set()
    done_spans: dict[StreamKey, list[tuple[int, int]]] = {}

    def add_done(ranges: list[Range]) -> None:
        for key, lo, hi in ranges:
            done_spans.setdefault(key, []).append((lo, hi))

    for seg in decoded:
        out.torn_records += seg.torn
        if seg.damage:
            out.damage[seg.path] = list(seg.damage)
        if seg.problem:
            out.set_aside[seg.path] = seg.problem
            for key, ch in seg.rows.items():
                out.set_aside_rows[key.stream] = out.set_aside_rows.get(key.stream, 0) + ch.rows
            continue
        for key, ch in seg.rows.items():
            if ch.rows:
                hi = int(max(s.max() for s in ch.seq))
                out.next_seq[key] = max(out.next_seq.get(key, 0), hi + 1)
            why = _compatible(seg, key.stream, layouts, feature_digest)
            if why is not None:
                out.set_aside.setdefault(seg.path, why)
                out.set_aside_rows[key.stream] = out.set_aside_rows.get(key.stream, 0) + ch.rows
                continue
            lay = layouts[key.stream]
            for i in range(len(ch.seq)):
                chunks.setdefault(key, []).append(
                    (ch.seq[i], ch.ints[i], ch.floats[i], ch.vectors[i] if lay.width else None)
                )
        for event in seg.events:
            if event[0] == "intent":
                intents[event[1]] = event[2]
            elif event[0] == "done":
                done_fids.add(event[1])
                if event[2] is not None:  # format 3: the DONE names its rows, even when the INTENT is lost
                    add_done(event[2])
            else:  # "state": what was unfinished when this segment opened; everything else had finished
                _, below, spans, listed = event
                for key, w in below.items():
                    out.done_below[key] = max(out.done_below.get(key, 0), w)
                for key, sp in spans.items():
                    done_spans.setdefault(key, []).extend(sp)
                for fid, ranges in intents.items():
                    if fid not in listed:
                        add_done(ranges)
                intents = dict(listed)
    for fid, ranges in intents.items():
        if fid in done_fids:
            add_done(ranges)
        else:
            out.pending[fid] = ranges
    out.done_spans = done_spans
    for key, parts in chunks.items():
        lay = layouts[key.stream]
        seq = np.concatenate([p[0] for p in parts])
        ints = np.concatenate([p[1] for p in parts])
        floats = np.concatenate([p[2] for p in parts])
        vec = np.concatenate([p[3] for p in parts]) if lay.width else None
        # the same row may sit in two segments (a compaction copy): keep one, in seq order
        _, first = np.unique(seq, return_index=True)
        out.rows[key] = Columns.from_arrays(lay, seq[first], ints[first], floats[first], None if vec is None else vec[first])
    return out
