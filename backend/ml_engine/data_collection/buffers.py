"""Columnar in-memory row buffers built from preallocated numpy blocks.

A row append writes into preallocated arrays (no per-row Python objects), so a
buffered sample costs its raw bytes plus a few int64 columns, and appending never
copies earlier rows: when a block is full a new one is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK_ROWS = 256


@dataclass
class Columns:
    """Rows taken out of a buffer: ``seq``, named int64/float64 columns and an optional float32 matrix."""

    seq: np.ndarray
    ints: dict[str, np.ndarray]
    floats: dict[str, np.ndarray]
    matrix: np.ndarray | None

    def __len__(self) -> int:
        return int(self.seq.size)

    @staticmethod
    def concat(parts: list["Columns"]) -> "Columns":
        first = parts[0]
        return Columns(
            np.concatenate([p.seq for p in parts]),
            {k: np.concatenate([p.ints[k] for p in parts]) for k in first.ints},
            {k: np.concatenate([p.floats[k] for p in parts]) for k in first.floats},
            None if first.matrix is None else np.concatenate([p.matrix for p in parts]),
        )


class _Block:
    __slots__ = ("seq", "ints", "floats", "matrix", "n")

    def __init__(self, n_ints: int, n_floats: int, width: int):
        self.seq = np.empty(BLOCK_ROWS, dtype=np.int64)
        self.ints = np.empty((BLOCK_ROWS, n_ints), dtype=np.int64)
        self.floats = np.empty((BLOCK_ROWS, n_floats), dtype=np.float64)
        self.matrix = np.empty((BLOCK_ROWS, width), dtype=np.float32) if width else None
        self.n = 0

    @property
    def nbytes(self) -> int:
        m = self.matrix.nbytes if self.matrix is not None else 0
        return self.seq.nbytes + self.ints.nbytes + self.floats.nbytes + m


class RowBuffer:
    def __init__(self, int_names: tuple[str, ...], float_names: tuple[str, ...], width: int = 0):
        self.int_names, self.float_names, self.width = int_names, float_names, width
        self._blocks: list[_Block] = []
        self._rows = 0

    def __len__(self) -> int:
        return self._rows

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self._blocks)

    @property
    def row_nbytes(self) -> int:
        return 8 + 8 * len(self.int_names) + 8 * len(self.float_names) + 4 * self.width

    def append(self, seq: int, ints: tuple, floats: tuple, vector: np.ndarray | None = None) -> None:
        block = self._blocks[-1] if self._blocks else None
        if block is None or block.n == BLOCK_ROWS:
            block = _Block(len(self.int_names), len(self.float_names), self.width)
            self._blocks.append(block)
        i = block.n
        block.seq[i] = seq
        block.ints[i] = ints
        block.floats[i] = floats
        if vector is not None:
            block.matrix[i] = vector
        block.n = i + 1
        self._rows += 1

    def take(self) -> Columns:
        """Remove and return every buffered row (oldest first)."""
        out = self.peek()
        self._blocks, self._rows = [], 0
        return out

    def peek(self) -> Columns:
        """Copy of every buffered row (oldest first), leaving the buffer as it is."""
        blocks = self._blocks
        seq = np.concatenate([b.seq[: b.n] for b in blocks]) if blocks else np.empty(0, np.int64)
        ints = np.concatenate([b.ints[: b.n] for b in blocks]) if blocks else np.empty((0, len(self.int_names)), np.int64)
        floats = (
            np.concatenate([b.floats[: b.n] for b in blocks]) if blocks else np.empty((0, len(self.float_names)), np.float64)
        )
        matrix = None
        if self.width:
            matrix = np.concatenate([b.matrix[: b.n] for b in blocks]) if blocks else np.empty((0, self.width), np.float32)
        return Columns(
            seq,
            {name: ints[:, j].copy() for j, name in enumerate(self.int_names)},
            {name: floats[:, j].copy() for j, name in enumerate(self.float_names)},
            matrix,
        )
