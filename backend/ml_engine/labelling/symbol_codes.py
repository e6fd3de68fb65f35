"""The one symbol-to-code mapping: Arrow ``symbol`` columns to small integer codes.

The labelling core, training and its persistence baseline all work on integer symbol
codes (row i's code indexes a list of symbol names). Dictionary-encoded columns (how
the store reads ``symbol``) only map their small dictionaries and gather, instead of
hashing every string.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ArrowStrings = pa.ChunkedArray | pa.Array


def _chunks(symbols: ArrowStrings) -> list[pa.Array]:
    return list(symbols.chunks) if isinstance(symbols, pa.ChunkedArray) else [symbols]


def symbol_values(symbols: ArrowStrings) -> pa.Array:
    """The distinct symbols of a string column, plain or dictionary-encoded, in first-seen order."""
    chunks = _chunks(symbols)
    if chunks and pa.types.is_dictionary(chunks[0].type):
        values = pa.chunked_array([c.dictionary for c in chunks], type=pa.string())
    else:
        values = pa.chunked_array(chunks, type=pa.string())
    out = pc.unique(values)
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def sorted_universe(*columns: ArrowStrings) -> pa.Array:
    """Sorted distinct symbols over several columns: a code space that does not depend on file order."""
    values = [symbol_values(c) for c in columns]
    merged = pc.unique(pa.chunked_array(values, type=pa.string())) if values else pa.array([], pa.string())
    merged = merged.combine_chunks() if isinstance(merged, pa.ChunkedArray) else merged
    return merged.take(pc.sort_indices(merged))


def symbol_codes(symbols: ArrowStrings, universe: pa.Array | list[str]) -> np.ndarray:
    """Index of each row's symbol in ``universe``: (n,) int32, -1 where the symbol is not in it."""
    universe = universe if isinstance(universe, pa.Array) else pa.array(universe, type=pa.string())
    parts = []
    for chunk in _chunks(symbols):
        if pa.types.is_dictionary(chunk.type):
            remap = pc.index_in(chunk.dictionary, value_set=universe).fill_null(-1)
            remap = remap.to_numpy(zero_copy_only=False).astype(np.int32)
            parts.append(remap[chunk.indices.to_numpy(zero_copy_only=False)])
        else:
            found = pc.index_in(chunk, value_set=universe).fill_null(-1)
            parts.append(found.to_numpy(zero_copy_only=False).astype(np.int32))
    return np.concatenate(parts) if parts else np.empty(0, np.int32)
