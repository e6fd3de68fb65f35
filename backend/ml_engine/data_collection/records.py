"""Row identities and fixed row layouts shared by the collector's buffers, spool and sinks."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class StreamKey:
    """Which rows a sequence number counts: one stream (``sample``, ``tape``, ...) of one symbol from one source."""

    stream: str
    symbol: str
    source: str


@dataclass(frozen=True)
class RowLayout:
    """The fixed-size row of a stream: named int64 fields, named float64 fields, a float32 vector.

    ``width`` is the vector length (the feature count for samples, 0 when a stream has no
    vector). A row takes ``row_bytes`` bytes in the spool and in RAM, plus its int64 seq.
    """

    ints: tuple[str, ...]
    floats: tuple[str, ...]
    width: int = 0

    @cached_property
    def packer(self) -> struct.Struct:
        """Little-endian struct of the int and float fields (the vector follows as raw float32)."""
        return struct.Struct("<" + "q" * len(self.ints) + "d" * len(self.floats))

    @property
    def row_bytes(self) -> int:
        """Bytes of one row without its seq: 8 per int and float field, 4 per vector element."""
        return 8 * (len(self.ints) + len(self.floats)) + 4 * self.width

    def to_json(self) -> list:
        """``[ints, floats, width]``, the form stored in spool segment headers."""
        return [list(self.ints), list(self.floats), self.width]

    @staticmethod
    def from_json(value: list) -> "RowLayout":
        """Inverse of ``to_json``; raises ``ValueError`` on anything else."""
        try:
            ints, floats, width = value
            return RowLayout(tuple(str(x) for x in ints), tuple(str(x) for x in floats), int(width))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a row layout: {value!r}") from exc
