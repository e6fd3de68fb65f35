"""The collector's counts, read back from the one metrics registry (``backend.metrics.Metrics``).

Nothing is counted here: ``CollectorStats`` only reads the registry's counters, so the
statistics line, the run summary and ``GET /metrics`` can never disagree.
"""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import Counter

from backend.metrics import Metrics


def counter_total(counter: Counter, **where: str) -> float:
    """Sum of one labelled counter's ``_total`` samples whose labels match ``where``.

    Walks only this counter's children (not the whole registry), so it is cheap enough
    for a statistics line every few ticks.
    """
    total = 0.0
    for family in counter.collect():
        for s in family.samples:
            if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in where.items()):
                total += s.value
    return total


def counter_by(counter: Counter, label: str) -> dict[str, int]:
    """One counter's ``_total`` grouped by ``label``; zero entries left out."""
    out: Tally = Tally()
    for family in counter.collect():
        for s in family.samples:
            if s.name.endswith("_total") and s.value:
                out[s.labels.get(label, "")] += int(s.value)
    return dict(out)


class CollectorStats:
    """Read-only view of one collector's counters in ``metrics``.

    ``sample_streams``: names of the streams whose rows are samples (``flushed``,
    ``recovered`` count those only). All values are ints.
    """

    def __init__(self, metrics: Metrics, sample_streams: tuple[str, ...]):
        self._m = metrics
        self._streams = sample_streams

    @property
    def collected(self) -> int:
        """Samples accepted (recovered ones included)."""
        return int(counter_total(self._m.samples_collected))

    @property
    def skipped(self) -> int:
        """Samples not taken, any reason."""
        return int(counter_total(self._m.samples_skipped))

    @property
    def skip_reasons(self) -> dict[str, int]:
        """Skipped samples by reason."""
        return counter_by(self._m.samples_skipped, "reason")

    @property
    def flushed(self) -> int:
        """Samples written by every enabled sink."""
        return int(sum(counter_total(self._m.rows_flushed, stream=s) for s in self._streams))

    @property
    def files(self) -> int:
        """Sample files written by flushes, all sinks (tape and candle files are not counted, as in round 1)."""
        return int(sum(counter_total(self._m.files_written, stream=s) for s in self._streams))

    @property
    def recovered(self) -> int:
        """Samples recovered from the spool at start."""
        return int(sum(counter_total(self._m.rows_recovered, stream=s) for s in self._streams))

    @property
    def flush_failures(self) -> int:
        """Flush attempts that failed (each kept for a retry)."""
        return int(counter_total(self._m.flush_failures))
