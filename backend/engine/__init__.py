"""The engine: one tick of the bot as a pure step (``TickEngine``), the fixed-rate ``Scheduler``,
and the runtime ``Bot`` that wires a market source, the engine and the collector together."""
