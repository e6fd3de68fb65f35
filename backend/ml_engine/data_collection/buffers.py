"""Columnar in-memory row buffers built from preallocated numpy blocks.

A row append writes into preallocated arrays (no per-row Python objects), so a
buffered sample costs its raw bytes plus a few int64 columns, and appending never
copies earlier rows: when a block is full a new one is allocated. Blocks grow by need:
a buffer's first block holds ``FIRST_BLOCK_ROWS`` rows and each next one twice the
previous, up to ``BLOCK_ROWS``, so an idle or young buffer reserves a few rows, not
256 (500 symbols x 3 streams would otherwise reserve ~190 MB before the first sample),
and at most half of a buffer's bytes are ever unused. Near the collector's memory cap a
new block is only as large as the room left (``RowBuffer.append``). The byte count is kept as a
running total, so asking a buffer its size costs O(1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.ml_engine.data_collection.records import RowLayout

BLOCK_ROWS = 256  #: the largest block
FIRST_BLOCK_ROWS = 4  #: rows of a buffer's first block
#: bytes a block costs beyond its rows (its four numpy arrays and itself; ~0.6 kB measured
#: with tracemalloc), counted in ``nbytes`` so that many small blocks are not under-counted
BLOCK_OVERHEAD = 640


@dataclass
class Columns:
    """Rows of one stream key, oldest first.

    ``seq`` int64 (n,); ``ints`` name -> int64 (n,); ``floats`` name -> float64 (n,);
    ``matrix`` float32 (n, width), or None for a stream without a vector.
    """

    seq: np.ndarray
    ints: dict[str, np.ndarray]
    floats: dict[str, np.ndarray]
    matrix: np.ndarray | None

    def __len__(self) -> int:
        return int(self.seq.size)

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        total = self.seq.nbytes + sum(a.nbytes for a in self.ints.values()) + sum(a.nbytes for a in self.floats.values())
        return total + (self.matrix.nbytes if self.matrix is not None else 0)

    @property
    def first_seq(self) -> int:
        """Seq of the oldest row (the rows must not be empty)."""
        return int(self.seq[0])

    @property
    def last_seq(self) -> int:
        """Seq of the newest row (the rows must not be empty)."""
        return int(self.seq[-1])

    def columns(self) -> "Columns":
        """Itself (``BlockRows`` builds its columns here)."""
        return self

    def select(self, index: np.ndarray | slice) -> "Columns":
        """The rows at ``index`` (a slice, an integer index array or a boolean mask)."""
        return Columns(
            self.seq[index],
            {k: v[index] for k, v in self.ints.items()},
            {k: v[index] for k, v in self.floats.items()},
            None if self.matrix is None else self.matrix[index],
        )

    @staticmethod
    def from_arrays(layout: RowLayout, seq: np.ndarray, ints: np.ndarray, floats: np.ndarray, matrix: np.ndarray | None) -> "Columns":
        """Columns from (n,) seq, (n, len(layout.ints)) int64, (n, len(layout.floats)) float64, (n, width) float32."""
        return Columns(
            np.ascontiguousarray(seq, dtype=np.int64),
            {name: np.ascontiguousarray(ints[:, j], dtype=np.int64) for j, name in enumerate(layout.ints)},
            {name: np.ascontiguousarray(floats[:, j], dtype=np.float64) for j, name in enumerate(layout.floats)},
            None if not layout.width else np.ascontiguousarray(matrix, dtype=np.float32),
        )

    def int_matrix(self, layout: RowLayout) -> np.ndarray:
        """The int fields as one (n, len(layout.ints)) int64 array, in layout order."""
        if not layout.ints:
            return np.empty((len(self), 0), np.int64)
        return np.column_stack([self.ints[n] for n in layout.ints]).astype(np.int64, copy=False)

    def float_matrix(self, layout: RowLayout) -> np.ndarray:
        """The float fields as one (n, len(layout.floats)) float64 array, in layout order."""
        if not layout.floats:
            return np.empty((len(self), 0), np.float64)
        return np.column_stack([self.floats[n] for n in layout.floats]).astype(np.float64, copy=False)


class _Block:

    __slots__ = ("seq", "ints", "floats", "matrix", "n", "nbytes", "cap")

    def __init__(self, n_ints: int, n_floats: int, width: int, rows: int = BLOCK_ROWS):
        self.cap = rows
        self.seq = np.empty(rows, dtype=np.int64)
        self.ints = np.empty((rows, n_ints), dtype=np.int64)
        self.floats = np.empty((rows, n_floats), dtype=np.float64)
        self.matrix = np.empty((rows, width), dtype=np.float32) if width else None
        self.n = 0
        m = self.matrix.nbytes if self.matrix is not None else 0
        self.nbytes = self.seq.nbytes + self.ints.nbytes + self.floats.nbytes + m + BLOCK_OVERHEAD


class BlockRows:
    """Rows taken out of a ``RowBuffer`` without copying them: the filled blocks themselves.

    Taking a buffer this way is O(blocks) on the event loop; ``columns()`` builds the
    contiguous ``Columns`` (the copy) later, on the flush thread. The blocks are never
    written again once taken.
    """

    def __init__(self, layout: RowLayout, blocks: list["_Block"]):
        self.layout = layout
        self._blocks = blocks
        self._rows = sum(b.n for b in blocks)
        self.nbytes = sum(b.nbytes for b in blocks)  #: bytes of the blocks

    def __len__(self) -> int:
        return self._rows

    @property
    def first_seq(self) -> int:
        """Seq of the oldest row (the rows must not be empty)."""
        return int(self._blocks[0].seq[0])

    @property
    def last_seq(self) -> int:
        """Seq of the newest row (the rows must not be empty)."""
        b = self._blocks[-1]
        return int(b.seq[b.n - 1])

    def columns(self) -> Columns:
        """The rows as contiguous ``Columns``, oldest first."""
        blocks, lay = self._blocks, self.layout
        if not blocks:
            return Columns(
                np.empty(0, np.int64),
                {n: np.empty(0, np.int64) for n in lay.ints},
                {n: np.empty(0, np.float64) for n in lay.floats},
                np.empty((0, lay.width), np.float32) if lay.width else None,
            )
        seq = np.concatenate([b.seq[: b.n] for b in blocks])
        ints = np.concatenate([b.ints[: b.n] for b in blocks])
        floats = np.concatenate([b.floats[: b.n] for b in blocks])
        matrix = np.concatenate([b.matrix[: b.n] for b in blocks]) if lay.width else None
        return Columns.from_arrays(lay, seq, ints, floats, matrix)


class RowBuffer:
    """Rows of one stream key waiting for a flush (event-loop thread only)."""

    def __init__(self, layout: RowLayout):
        self.layout = layout
        self._blocks: list[_Block] = []
        self._rows = 0
        self.nbytes = 0  #: bytes allocated by the blocks (running total)
        #: bytes of one row (seq, ints, floats, vector)
        self.row_bytes = 8 * (1 + len(layout.ints) + len(layout.floats)) + 4 * layout.width
        #: the most one append can allocate once the room is used up: a block of one row
        self.row_cost = self.row_bytes + BLOCK_OVERHEAD

    def __len__(self) -> int:
        return self._rows

    def append(self, seq: int, ints: tuple, floats: tuple, vector: np.ndarray | None = None,
               room: int = 1 << 62) -> int:
        """Append one row; returns the bytes newly allocated (0, or one block when the last was full).

        ``room``: the bytes a new block may take. A block that would be larger holds as
        many rows as fit (at least one: ``row_cost`` bytes), so near a memory cap the
        buffers grow by the rows they hold, not by doubling: 300 buffers filling together
        would otherwise allocate 300 doubled blocks in one tick.
        """
        block = self._blocks[-1] if self._blocks else None
        grown = 0
        if block is None or block.n == block.cap:
            rows = FIRST_BLOCK_ROWS if block is None else min(BLOCK_ROWS, 2 * block.cap)
            if rows * self.row_bytes + BLOCK_OVERHEAD > room:
                rows = max(1, (room - BLOCK_OVERHEAD) // self.row_bytes)
            block = _Block(len(self.layout.ints), len(self.layout.floats), self.layout.width, rows)
            self._blocks.append(block)
            grown = block.nbytes
            self.nbytes += grown
        i = block.n
        block.seq[i] = seq
        block.ints[i] = ints
        block.floats[i] = floats
        if vector is not None:
            block.matrix[i] = vector
        block.n = i + 1
        self._rows += 1
        return grown

    def extend(self, seq: np.ndarray, ints: np.ndarray, floats: np.ndarray, room: int = 1 << 62) -> int:
        """Append many rows at once (no vector): seq (n,), ints (n, len(layout.ints)), floats (n, len(layout.floats)).

        The rows fill what is left of the last block, then go into one new block sized to
        hold the rest (the next block size when that is larger and fits in ``room``, the
        bytes a new block may take, as in ``append``), each part one vectorised copy.
        Returns the bytes newly allocated.
        """
        n = len(seq)
        lay = self.layout
        if not n:
            return 0
        if lay.width:
            raise ValueError("extend takes rows without a vector")
        grown = 0
        done = 0
        block = self._blocks[-1] if self._blocks else None
        while done < n:
            if block is None or block.n == block.cap:
                rows = FIRST_BLOCK_ROWS if block is None else min(BLOCK_ROWS, 2 * block.cap)
                if rows * self.row_bytes + BLOCK_OVERHEAD > room:  # near the cap: only what the rows need
                    rows = 1
                block = _Block(len(lay.ints), len(lay.floats), 0, max(rows, n - done))
                self._blocks.append(block)
                grown += block.nbytes
            i = block.n
            k = min(block.cap - i, n - done)
            block.seq[i:i + k] = seq[done:done + k]
            block.ints[i:i + k] = ints[done:done + k]
            block.floats[i:i + k] = floats[done:done + k]
            block.n = i + k
            done += k
        self.nbytes += grown
        self._rows += n
        return grown

    def peek(self) -> BlockRows:
        """Every buffered row, left in the buffer (call ``columns()`` at once: later appends are not in it)."""
        return BlockRows(self.layout, list(self._blocks))

    def take(self) -> BlockRows:
        """Remove every buffered row (oldest first) without copying it; see ``BlockRows``."""
        blocks = self._blocks
        self._blocks, self._rows, self.nbytes = [], 0, 0
        return BlockRows(self.layout, blocks)


def concat_columns(parts: list[Columns]) -> Columns:
    """Rows of several ``Columns`` of one layout, in the order given."""
    first = parts[0]
    return Columns(
        np.concatenate([p.seq for p in parts]),
        {k: np.concatenate([p.ints[k] for p in parts]) for k in first.ints},
        {k: np.concatenate([p.floats[k] for p in parts]) for k in first.floats},
        None if first.matrix is None else np.concatenate([p.matrix for p in parts]),
    )
