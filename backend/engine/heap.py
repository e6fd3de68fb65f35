"""The garbage collector's view of the bot's start-up heap.

CPython's cyclic collector walks every tracked container object on a full (generation-2)
collection, and that walk runs on whichever thread triggered it: in the bot, usually the
event loop. After the imports and start-up of the bot (pandas, pyarrow, TA-Lib, MLflow,
torch with ``--model``) hundreds of thousands of such objects are alive for the whole run,
so each full collection stalled the loop for 20-40 ms (``bench/collector_bench.py`` at 40
symbols: loop lag max 36-51 ms, every spike a generation-2 pause). ``gc.freeze()``
(CPython >= 3.7, "gc — Garbage Collector interface") moves the objects alive at that moment
into a permanent generation that collections skip; objects made later are collected as
before, and reference counting still frees frozen objects that become unreachable.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_startup_heap"]


def freeze_startup_heap() -> int:
    """Collect once (so today's garbage is not kept forever), then freeze every object alive now.

    Call it once, after start-up and before the first tick. Returns the number of frozen
    objects (``gc.get_freeze_count()``). A cycle among frozen objects that later becomes
    garbage is not reclaimed; start-up objects live for the whole run, so that costs little.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
