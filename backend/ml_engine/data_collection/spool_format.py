"""The spool's on-disk records: how they are encoded, and how a segment file is decoded.

A segment file ``wal_<n>.log`` is a sequence of records ``<u32 length><u32 crc32><payload>``;
payload byte 0 is the record type. A torn or corrupt record (power loss mid-write) fails
its length or CRC check and ends the segment: nothing after it is read.

Format 2 (``SPOOL_FORMAT_VERSION``; every segment this build writes):

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
* DONE flush_id: every sink of that flush has been written.

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


def frame(payload: bytes) -> bytes:
    """One record as written to disk: length, CRC-32 of the payload, payload."""
    return RECORD_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


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


def encode_done(flush_id: str) -> bytes:
    """DONE payload."""
    return bytes([REC_DONE]) + flush_id.encode()


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
    torn: int = 0
    problem: str | None = None


def iter_records(data: bytes) -> Iterator[bytes | None]:
    """Payloads of a segment's bytes in order; yields None once for a torn/corrupt tail, then stops."""
    pos = 0
    while pos + RECORD_HEADER.size <= len(data):
        length, crc = RECORD_HEADER.unpack_from(data, pos)
        start, end = pos + RECORD_HEADER.size, pos + RECORD_HEADER.size + length
        if length == 0 or end > len(data) or zlib.crc32(data[start:end]) != crc:
            yield None
            return
        yield data[start:end]
        pos = end
    if pos != len(data):
        yield None


def _keys(items: list) -> list[Range]:
    return [(StreamKey(s, sym, src), int(lo), int(hi)) for s, sym, src, lo, hi in items]


def decode_segment(path: Path) -> DecodedSegment:
    """Decode ``path`` (format 1 or 2); never raises for bad content, reports it in ``problem``.

    Raises ``OSError`` only when the file cannot be read.
    """
    out = DecodedSegment(path)
    data = path.read_bytes()
    key_map: dict[int, StreamKey] = {}
    v1_widths: set[int] = set()
    pending_rows: dict[StreamKey, list[tuple[int, bytes, int]]] = {}
    first = True
    try:
        for payload in iter_records(data):
            if payload is None:
                out.torn += 1
                break
            kind = payload[0]
            if first:
                first = False
                if kind == REC_HEADER:
                    head = json.loads(payload[1:])
                    out.format_version = int(head["format"])
                    out.feature_version = int(head["feature_version"])
                    out.feature_names = tuple(head["feature_names"])
                    out.layouts = {s: RowLayout.from_json(v) for s, v in head["layouts"].items()}
                    continue
                out.layouts = dict(V1_LAYOUTS)
            if kind == REC_KEY:
                kid = struct.unpack_from("<H", payload, 1)[0]
                stream, symbol, source = json.loads(payload[3:])
                key_map[kid] = StreamKey(stream, symbol, source)
            elif kind == REC_ROW:
                _, kid, seq = ROW_HEAD.unpack_from(payload, 0)
                key = key_map[kid]
                pending_rows.setdefault(key, []).append((seq, payload, ROW_HEAD.size))
            elif kind == REC_BLOCK:
                _, kid, n = BLOCK_HEAD.unpack_from(payload, 0)
                key = key_map[kid]
                lay = out.layouts[key.stream]
                ni, nf = len(lay.ints), len(lay.floats)
                off = BLOCK_HEAD.size
                width = lay.width
                if out.format_version == 1 and lay.width == 0 and key.stream == "sample":
                    width = (len(payload) - off - 8 * n * (1 + ni + nf)) // (4 * n)
                    v1_widths.add(width)
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
                out.events.append(("done", payload[1:].decode()))
            elif kind == REC_STATE:
                st = json.loads(payload[1:])
                done_below = {StreamKey(s, sym, src): int(w) for s, sym, src, w in st["done_below"]}
                done: dict[StreamKey, list[tuple[int, int]]] = {}
                for key, lo, hi in _keys(st["done"]):
                    done.setdefault(key, []).append((lo, hi))
                intents = {fid: _keys(ranges) for fid, ranges in st["intents"]}
                out.events.append(("state", done_below, done, intents))
            else:
                raise ValueError(f"unknown record type {kind}")
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
    except (KeyError, ValueError, TypeError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as exc:
        out.problem = f"undecodable record ({type(exc).__name__}: {exc})"
    if out.format_version == 1 and "sample" in out.layouts:
        base = out.layouts["sample"]
        width = v1_widths.pop() if len(v1_widths) == 1 else (-1 if v1_widths else 0)
        out.layouts["sample"] = RowLayout(base.ints, base.floats, width)
        for key, ch in out.rows.items():
            if key.stream == "sample":
                ch.layout = out.layouts["sample"]
    return out
