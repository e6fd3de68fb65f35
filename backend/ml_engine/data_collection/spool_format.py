"""The spool's on-disk records: how they are encoded, and how a segment file is decoded.

Framing, format 3 (``SPOOL_FORMAT_VERSION``; every segment this build writes), byte by byte::

    0..3   MAGIC  b"\xf7LBW" (sync marker)
    4..7   u32 LE payload length (> 0)
    8..11  u32 LE CRC-32 of bytes 4..7 followed by the payload
    12..   payload; byte 0 is the record type

A record that fails its checks (a flipped bit, a torn write) costs only itself: the
reader scans forward for the next MAGIC whose length and CRC check out and goes on from
there, reporting each skipped region (offset, bytes, records in it). The CRC covers the
length, so a damaged length is never trusted. Records that rows depend on (HEADER,
STATE, KEY, INTENT, DONE) are written twice in a row, so one damaged copy costs nothing;
a damaged ROW or BLOCK costs the rows inside it. A segment starting with MAGIC is
format 3; anything else is read with the format 1/2 framing ``<u32 length><u32 crc32 of
the payload><payload>``, where the first bad record ends the segment.

Records (formats 2 and 3; format 3 adds the flush ranges to DONE):

* HEADER (first record): JSON ``{"format", "feature_version", "feature_names",
  "layouts": {stream: [ints, floats, width]}}``: enough to decode every row of the
  segment, and to decide whether its samples match this build's features.
* STATE (second record): JSON ``{"done_below": [[stream, symbol, source, W]], "done":
  [[stream, symbol, source, lo, hi]], "intents": [[flush_id, [[stream, symbol, source,
  lo, hi]]]]}``: at the moment the segment was opened, every row of a key with seq < W,
  and every listed range, was written by every sink; the listed intents were the flushes
  still unfinished. Records of older segments add nothing to it, which is why an older
  segment may be deleted as soon as its rows are done.
* KEY ``<BH>`` key id + JSON [stream, symbol, source] (ids are per segment).
* ROW ``<BHq>`` key id, seq, then the layout's packed fields and the float32 vector.
* BLOCK ``<BHI>`` key id, n, then n seqs, n x ints, n x floats (int64/float64 LE), n x width float32.
* INTENT JSON [flush_id, [[key_id, first_seq, last_seq]]]: a flush about to touch the sinks.
* DONE flush_id (format 2) or JSON [flush_id, [[key_id, first_seq, last_seq]]] (format 3,
  so a DONE alone marks its rows done): every sink of that flush has been written.

Format 1 (round 1) had no HEADER or STATE; its layouts were those of ``V1_LAYOUTS`` with
the sample width inferred from each record's length.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from backend.contracts.versions import names_digest
from backend.ml_engine.data_collection.records import RowLayout, StreamKey

REC_KEY, REC_ROW, REC_INTENT, REC_DONE, REC_BLOCK, REC_HEADER, REC_STATE = 1, 2, 3, 4, 5, 6, 7
RECORD_HEADER = struct.Struct("<II")
ROW_HEAD = struct.Struct("<BHq")  # type, key_id, seq
BLOCK_HEAD = struct.Struct("<BHI")  # type, key_id, n

#: the row layouts of round 1 (format 1); the sample width is read from each record
V1_LAYOUTS: dict[str, RowLayout] = {
    "sample": RowLayout(("ts", "collected_at"), ("mid",), 0),
    "tape": RowLayout(("ts",), ("mid", "bid", "ask")),
    "candle": RowLayout(("ts",), ("open", "high", "low", "close", "volume", "turnover")),
}

Range = tuple[StreamKey, int, int]


def names_digest_or_none(names: tuple[str, ...] | None) -> str | None:
    """``names_digest`` of a header's feature names; None for a format 1 segment (no names)."""
    return None if names is None else names_digest(names)


MAGIC = b"\xf7LBW"
FRAME_HEAD = struct.Struct("<4sII")  # magic, length, crc32(length bytes + payload)
#: record types written twice (see the module docstring)
DOUBLED = frozenset({REC_HEADER, REC_STATE, REC_KEY, REC_INTENT, REC_DONE})


def frame_v2(payload: bytes) -> bytes:
    """One record as formats 1 and 2 wrote it: length, CRC-32 of the payload, payload."""
    return RECORD_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def frame(payload: bytes) -> bytes:
    """One record as this build writes it (format 3; see the module docstring); control records twice."""
    length = struct.pack("<I", len(payload))
    one = MAGIC + length + struct.pack("<I", zlib.crc32(payload, zlib.crc32(length))) + payload
    return one + one if payload[0] in DOUBLED else one


@dataclass(frozen=True)
class Damage:
    """A region of a segment the reader skipped: ``offset`` and ``length`` in bytes, ``records``
    the record starts (MAGIC) found inside it (at least 1), ``tail`` when it runs to the end."""

    offset: int
    length: int
    records: int
    tail: bool = False


def encode_header(format_version: int, feature_version: int, feature_names: tuple[str, ...], layouts: dict[str, RowLayout]) -> bytes:
    """HEADER payload."""
    body = {"format": format_version, "feature_version": feature_version, "feature_names": list(feature_names),
            "layouts": {name: lay.to_json() for name, lay in layouts.items()}}
    return bytes([REC_HEADER]) + json.dumps(body).encode()


def _k(key: StreamKey) -> list[str]:
    return [key.stream, key.symbol, key.source]


def encode_state(done_below: dict[StreamKey, int], done: dict[StreamKey, list[tuple[int, int]]],
                 intents: dict[str, list[Range]]) -> bytes:
    """STATE payload (see the module docstring)."""
    body = {
        "done_below": [_k(k) + [w] for k, w in done_below.items()],
        "done": [_k(k) + [lo, hi] for k, spans in done.items() for lo, hi in spans],
        "intents": [[fid, [_k(k) + [lo, hi] for k, lo, hi in ranges]] for fid, ranges in intents.items()],
    }
    return bytes([REC_STATE]) + json.dumps(body).encode()


def encode_key(key_id: int, key: StreamKey) -> bytes:
    """KEY payload."""
    return struct.pack("<BH", REC_KEY, key_id) + json.dumps(_k(key)).encode()


def encode_block(key_id: int, seq: np.ndarray, ints: np.ndarray, floats: np.ndarray, vectors: np.ndarray | None) -> bytes:
    """BLOCK payload of n rows: seq (n,), ints (n, fields), floats (n, fields), vectors (n, width) or None."""
    parts = [
        BLOCK_HEAD.pack(REC_BLOCK, key_id, int(seq.size)),
        np.ascontiguousarray(seq, dtype="<i8").tobytes(),
        np.ascontiguousarray(ints, dtype="<i8").tobytes(),
        np.ascontiguousarray(floats, dtype="<f8").tobytes(),
    ]
    if vectors is not None:
        parts.append(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
    return b"".join(parts)


def encode_intent(flush_id: str, ranges: list[tuple[int, int, int]]) -> bytes:
    """INTENT payload from (key_id, first_seq, last_seq) ranges."""
    return bytes([REC_INTENT]) + json.dumps([flush_id, [list(r) for r in ranges]]).encode()


def encode_done(flush_id: str, ranges: list[tuple[int, int, int]]) -> bytes:
    """DONE payload (format 3) from the flush's (key_id, first_seq, last_seq) ranges."""
    return bytes([REC_DONE]) + json.dumps([flush_id, [list(r) for r in ranges]]).encode()


@dataclass
class RowChunks:
    """Rows of one key decoded from one segment, as column chunks (concatenate to use)."""

    layout: RowLayout
    seq: list[np.ndarray] = field(default_factory=list)
    ints: list[np.ndarray] = field(default_factory=list)
    floats: list[np.ndarray] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Number of rows decoded."""
        return int(sum(s.size for s in self.seq))


@dataclass
class DecodedSegment:
    """What one segment file holds.

    ``format_version`` 1 or 2; ``feature_version``/``feature_names`` from the header (None
    for format 1); ``layouts`` by stream (for format 1 the sample width is the one its
    records have, or -1 when they disagree); ``rows`` by key; ``events`` the control
    records in file order: ``("state", done_below, done, intents)``, ``("intent", flush_id,
    ranges)``, ``("done", flush_id)``; ``torn`` records that ended the file early;
    ``problem`` a reason the segment could not be decoded at all (None when it could).
    """

    path: Path
    format_version: int = 1
    feature_version: int | None = None
    feature_names: tuple[str, ...] | None = None
    layouts: dict[str, RowLayout] = field(default_factory=dict)
    rows: dict[StreamKey, RowChunks] = field(default_factory=dict)
    events: list[tuple] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    problem: str | None = None

    @property
    def torn(self) -> int:
        """Records skipped as damaged (an estimate inside a region: the record starts found)."""
        return sum(d.records for d in self.damage)


def _iter_v2(data: bytes) -> Iterator[tuple[int, bytes | Damage]]:
    """Formats 1 and 2: (offset, payload) in order; the first bad record ends the file (one ``Damage``)."""
    pos = 0
    while pos + RECORD_HEADER.size <= len(data):
        length, crc = RECORD_HEADER.unpack_from(data, pos)
        start, end = pos + RECORD_HEADER.size, pos + RECORD_HEADER.size + length
        if length == 0 or end > len(data) or zlib.crc32(data[start:end]) != crc:
            break
        yield pos, data[start:end]
        pos = end
    if pos != len(data):
        yield pos, Damage(pos, len(data) - pos, 1, tail=True)


def _valid_at(data: bytes, pos: int) -> int:
    """End offset of a valid format-3 record at ``pos``, or -1."""
    if pos + FRAME_HEAD.size > len(data):
        return -1
    magic, length, crc = FRAME_HEAD.unpack_from(data, pos)
    end = pos + FRAME_HEAD.size + length
    if magic != MAGIC or length == 0 or end > len(data):
        return -1
    if zlib.crc32(data[pos + FRAME_HEAD.size:end], zlib.crc32(data[pos + 4:pos + 8])) != crc:
        return -1
    return end


def _iter_v3(data: bytes) -> Iterator[tuple[int, bytes | Damage]]:
    """Format 3: (offset, payload) of every valid record; a ``Damage`` for each skipped region."""
    pos, n = 0, len(data)
    while pos < n:
        end = _valid_at(data, pos)
        if end > 0:
            yield pos, data[pos + FRAME_HEAD.size:end]
            pos = end
            continue
        # resynchronise: the next MAGIC that starts a valid record
        nxt = data.find(MAGIC, pos + 1)
        while nxt >= 0 and _valid_at(data, nxt) < 0:
            nxt = data.find(MAGIC, nxt + 1)
        stop = n if nxt < 0 else nxt
        records = max(1, data.count(MAGIC, pos, stop))
        yield pos, Damage(pos, stop - pos, records, tail=nxt < 0)
        pos = stop


def iter_records(data: bytes) -> Iterator[tuple[int, bytes | Damage]]:
    """(offset, payload or ``Damage``) of a segment's bytes, in file order, either framing."""
    return _iter_v3(data) if data[:4] == MAGIC else _iter_v2(data)


def _keys(items: list) -> list[Range]:
    return [(StreamKey(s, sym, src), int(lo), int(hi)) for s, sym, src, lo, hi in items]


def _first_is_v2(data: bytes) -> bool:
    """True when ``data`` opens with a format 1/2 record (a format 3 file opens with MAGIC,
    or, when that MAGIC is damaged, with bytes that are no valid format 1/2 record)."""
    if data[:4] == MAGIC or len(data) < RECORD_HEADER.size:
        return False
    length, crc = RECORD_HEADER.unpack_from(data, 0)
    end = RECORD_HEADER.size + length
    return 0 < length and end <= len(data) and zlib.crc32(data[RECORD_HEADER.size:end]) == crc


class _BadRecord(Exception):
    """A record that passed its checksum but cannot be used (e.g. a row of a key whose KEY is lost)."""


def decode_segment(path: Path) -> DecodedSegment:
    """Decode ``path`` (format 1, 2 or 3); never raises for bad content.

    Damaged regions are skipped and listed in ``damage`` (format 3 goes on after them);
    ``problem`` is set only when nothing of the segment can be interpreted (no usable
    header, an unreadable header). Raises ``OSError`` only when the file cannot be read.
    """
    out = DecodedSegment(path)
    data = path.read_bytes()
    v3 = bool(data) and not _first_is_v2(data)
    records = _iter_v3(data) if v3 else _iter_v2(data)
    key_map: dict[int, StreamKey] = {}
    v1_widths: set[int] = set()
    pending_rows: dict[StreamKey, list[tuple[int, bytes, int]]] = {}
    first = True

    def rows_key(kid: int) -> StreamKey:
        key = key_map.get(kid)
        if key is None or key.stream not in out.layouts:
            raise _BadRecord(f"row of unknown key id {kid}")
        return key

    def one(payload: bytes) -> None:
        kind = payload[0]
        if kind == REC_HEADER:
            return  # the second copy
        if kind == REC_KEY:
            kid = struct.unpack_from("<H", payload, 1)[0]
            stream, symbol, source = json.loads(payload[3:])
            key_map[kid] = StreamKey(stream, symbol, source)
        elif kind == REC_ROW:
            _, kid, seq = ROW_HEAD.unpack_from(payload, 0)
            key = rows_key(kid)
            lay = out.layouts[key.stream]
            if not (out.format_version == 1 and key.stream == "sample"):
                if len(payload) != ROW_HEAD.size + lay.packer.size + 4 * lay.width:
                    raise _BadRecord("row of the wrong size")
            pending_rows.setdefault(key, []).append((seq, payload, ROW_HEAD.size))
        elif kind == REC_BLOCK:
            _, kid, n = BLOCK_HEAD.unpack_from(payload, 0)
            key = rows_key(kid)
            lay = out.layouts[key.stream]
            ni, nf = len(lay.ints), len(lay.floats)
            off = BLOCK_HEAD.size
            width = lay.width
            if out.format_version == 1 and lay.width == 0 and key.stream == "sample":
                width = (len(payload) - off - 8 * n * (1 + ni + nf)) // (4 * n)
                v1_widths.add(width)
            if n == 0 or len(payload) != off + 8 * n * (1 + ni + nf) + 4 * n * width:
                raise _BadRecord("block of the wrong size")
            ch = out.rows.setdefault(key, RowChunks(lay))
            ch.seq.append(np.frombuffer(payload, "<i8", n, off).astype(np.int64))
            off += 8 * n
            ch.ints.append(np.frombuffer(payload, "<i8", n * ni, off).reshape(n, ni).astype(np.int64))
            off += 8 * n * ni
            ch.floats.append(np.frombuffer(payload, "<f8", n * nf, off).reshape(n, nf).astype(np.float64))
            off += 8 * n * nf
            if width:
                ch.vectors.append(np.frombuffer(payload, "<f4", n * width, off).reshape(n, width).astype(np.float32))
        elif kind == REC_INTENT:
            flush_id, ranges = json.loads(payload[1:])
            out.events.append(("intent", flush_id, [(key_map[kid], int(lo), int(hi)) for kid, lo, hi in ranges]))
        elif kind == REC_DONE:
            if v3:
                flush_id, ranges = json.loads(payload[1:])
                out.events.append(("done", flush_id, [(key_map[kid], int(lo), int(hi)) for kid, lo, hi in ranges]))
            else:
                out.events.append(("done", payload[1:].decode(), None))
        elif kind == REC_STATE:
            st = json.loads(payload[1:])
            done_below = {StreamKey(s, sym, src): int(w) for s, sym, src, w in st["done_below"]}
            done: dict[StreamKey, list[tuple[int, int]]] = {}
            for key, lo, hi in _keys(st["done"]):
                done.setdefault(key, []).append((lo, hi))
            intents = {fid: _keys(ranges) for fid, ranges in st["intents"]}
            out.events.append(("state", done_below, done, intents))
        else:
            raise _BadRecord(f"unknown record type {kind}")

    for offset, item in records:
        if isinstance(item, Damage):
            out.damage.append(item)
            continue
        payload = item
        if first:
            first = False
            if payload[0] == REC_HEADER:
                try:
                    head = json.loads(payload[1:])
                    out.format_version = int(head["format"])
                    out.feature_version = int(head["feature_version"])
                    out.feature_names = tuple(head["feature_names"])
                    out.layouts = {s: RowLayout.from_json(v) for s, v in head["layouts"].items()}
                except (KeyError, ValueError, TypeError) as exc:
                    out.problem = f"unreadable header ({type(exc).__name__}: {exc})"
                    return out
                continue
            if v3:  # both copies of the header are damaged: no layout to read rows with
                out.problem = "its header is damaged"
                return out
            out.layouts = dict(V1_LAYOUTS)
        try:
            one(payload)
        except (_BadRecord, KeyError, ValueError, TypeError, struct.error, json.JSONDecodeError, UnicodeDecodeError):
            # checksum-valid but unusable: this record alone is lost
            out.damage.append(Damage(offset, len(payload) + (FRAME_HEAD.size if v3 else RECORD_HEADER.size), 1))
    for key, rows in pending_rows.items():
        lay = out.layouts[key.stream]
        packer = lay.packer
        ni = len(lay.ints)
        width = lay.width
        if out.format_version == 1 and key.stream == "sample":
            widths = {(len(p) - off - packer.size) // 4 for _, p, off in rows}
            v1_widths.update(widths)
            width = widths.pop() if len(widths) == 1 else -1
        if width < 0:
            continue
        ch = out.rows.setdefault(key, RowChunks(lay))
        values = np.array([packer.unpack_from(p, off) for _, p, off in rows], dtype=object).reshape(len(rows), -1)
        ch.seq.append(np.array([s for s, _, _ in rows], dtype=np.int64))
        ch.ints.append(values[:, :ni].astype(np.int64).reshape(len(rows), ni))
        ch.floats.append(values[:, ni:].astype(np.float64).reshape(len(rows), len(lay.floats)))
        if width:
            vec = b"".join(p[off + packer.size: off + packer.size + 4 * width] for _, p, off in rows)
            ch.vectors.append(np.frombuffer(vec, "<f4").reshape(len(rows), width).astype(np.float32))
    if out.format_version == 1 and "sample" in out.layouts:
        base = out.layouts["sample"]
        width = v1_widths.pop() if len(v1_widths) == 1 else (-1 if v1_widths else 0)
        out.layouts["sample"] = RowLayout(base.ints, base.floats, width)
        for key, ch in out.rows.items():
            if key.stream == "sample":
                ch.layout = out.layouts["sample"]
    return out
