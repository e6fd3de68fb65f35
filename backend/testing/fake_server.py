"""The aiohttp plumbing the fake exchanges share (``fake_bybit.py``, ``fake_binance.py``).

Both fakes serve REST and WebSocket on one port of 127.0.0.1, driven by the market
simulator (``SimMarket``) on the exchange's own clock (local time plus
``clock_offset_ms``). What is the same for both lives here: listening and stopping, the
registry of open connections and their writer tasks, the push loop, fault injection
(``inject``/``pending_faults``/``clear_faults``: each fault applies to the next ``count``
matching events and is counted as ``counts["fault_<kind>"]``), the IP-ban switch
(``ban(seconds)``; ``counts["rest_banned"]``, ``counts["rest_banned_late"]`` and
``banned_at``), ``pause``/``resume``, and the command line's serve loop (signals, the
atomic port file, the stats file), and ``fake_process``, which runs a fake's command line as
a child process for a test. What the messages look like stays in each fake.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from aiohttp import web

from backend.symbols import InvalidSymbolError, validate_symbol
from backend.venues.sim.market import SimMarket

__all__ = ["Fault", "FakeServerBase", "fake_process", "num", "serve", "symbols_arg"]

log = logging.getLogger(__name__)


def num(x: float) -> str:
    """A number as the exchanges write it in JSON strings: positional, no trailing zeros."""
    return np.format_float_positional(float(x), trim="-")


def symbols_arg(text: str) -> list[str]:
    """``--symbols`` (comma-separated) -> validated symbols; ``ArgumentTypeError`` for a bad or empty list."""
    try:
        out = [validate_symbol(s.strip()) for s in text.split(",") if s.strip()]
    except InvalidSymbolError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not out:
        raise argparse.ArgumentTypeError("at least one symbol is required")
    return out


@dataclass
class Fault:
    """An injected fault: ``kind`` for ``symbol`` (None: any) for the next ``count`` events, with ``params``."""

    kind: str
    symbol: str | None
    count: int
    params: dict[str, Any]


class FakeServerBase:
    """One fake exchange's server: a subclass sets ``label`` (its name in log lines) and ``FAULTS`` (the fault
    kinds ``inject`` accepts), calls ``_init_server`` from its constructor, and implements ``_routes``
    (the aiohttp routes), ``_started`` (publish the first books, start the push loop: ``_spawn``) and
    ``_push_round``; an async context manager.

    ``_conns`` holds the open connections: objects with ``ws`` (the ``WebSocketResponse``) and a queue
    ``out`` that ``_writer`` sends from.
    """

    label = "exchange"
    FAULTS: tuple[str, ...] = ()

    def _init_server(self, symbols: Iterable[str], *, seed: int, host: str, port: int, push_interval_s: float,
                     clock_offset_ms: int, quiet: Iterable[str], sim_start_ms: int | None = None) -> None:
        """Set the state both fakes share (call first from the subclass's ``__init__``; the simulator and the
        random generator are seeded here, in that order)."""
        self.symbols = [validate_symbol(s) for s in symbols]
        self.host, self.port = host, port
        self.push_interval_s = push_interval_s
        self.clock_offset_ms = int(clock_offset_ms)
        self.quiet: set[str] = set(quiet)
        self.silent = False
        self.ban_until = 0.0  # monotonic s
        self.banned_at: list[float] = []
        self._rng = random.Random(seed)
        self.market = SimMarket(self.symbols, seed=seed, start_ms=sim_start_ms or self._now())
        self._faults: list[Fault] = []
        self._conns: set[Any] = set()
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []
        self._paused = asyncio.Event()
        self._paused.set()
        self.counts: dict[str, int] = {}

    # --- lifecycle ----------------------------------------------------------------------
    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def _routes(self, app: web.Application) -> None:
        """Add the fake's REST and WebSocket routes."""
        raise NotImplementedError

    def _started(self) -> None:
        """Listening: publish the first books and start the background tasks (``_spawn``)."""

    def _spawn(self, coro) -> None:
        """Run ``coro`` in the background until ``stop``."""
        self._tasks.append(asyncio.create_task(coro))

    async def start(self) -> None:
        """Listen (``port`` is then the bound port) and start publishing."""
        app = web.Application()
        self._routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._started()

    async def stop(self) -> None:
        """Stop publishing, close every connection and the listener."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for c in list(self._conns):
            await c.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def rest_url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    # --- control ------------------------------------------------------------------------
    def inject(self, kind: str, symbol: str | None = None, count: int = 1, **params: Any) -> None:
        """Apply fault ``kind`` (see the fake's module docstring) to the next ``count`` matching events;
        ``ValueError`` for an unknown kind."""
        if kind not in self.FAULTS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(self.FAULTS)}")
        self._faults.append(Fault(kind, symbol, count, params))

    def clear_faults(self) -> None:
        """Drop every fault injected and not yet applied."""
        self._faults.clear()

    def pending_faults(self) -> int:
        """Injected fault applications not yet used."""
        return sum(f.count for f in self._faults)

    def ban(self, seconds: float) -> None:
        """An IP ban: every REST request is refused (the fake's ban status) for ``seconds`` from now."""
        self.ban_until = time.monotonic() + seconds

    def pause(self) -> None:
        """Stop publishing WebSocket updates (the published book stays as it is)."""
        self._paused.clear()

    def resume(self) -> None:
        """Publish WebSocket updates again."""
        self._paused.set()

    @property
    def connections(self) -> int:
        """Open WebSocket connections."""
        return len(self._conns)

    def _now(self) -> int:
        """The exchange's clock: local time plus ``clock_offset_ms`` (ms since the epoch)."""
        return int(time.time() * 1000) + self.clock_offset_ms

    def _count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def _take_fault(self, kinds: tuple[str, ...] | str, symbol: str | None) -> Fault | None:
        """The first injected fault of ``kinds`` matching ``symbol``, used once (and counted); None if none."""
        kinds = (kinds,) if isinstance(kinds, str) else kinds
        for f in self._faults:
            if f.kind in kinds and (f.symbol is None or symbol is None or f.symbol == symbol):
                f.count -= 1
                if f.count <= 0:
                    self._faults.remove(f)
                self._count(f"fault_{f.kind}")
                return f
        return None

    def _banned_request(self) -> float | None:
        """During a ban: count the request (``rest_banned``; ``rest_banned_late`` when it came more than 1 s
        after the first, when a client had a second to learn of the ban) and return the seconds left."""
        now = time.monotonic()
        if now >= self.ban_until:
            return None
        self._count("rest_banned")
        if self.banned_at and now - self.banned_at[0] > 1.0:
            self._count("rest_banned_late")
        self.banned_at.append(now)
        return self.ban_until - now

    # --- WebSocket ----------------------------------------------------------------------
    async def _serve_conn(self, conn: Any, on_message: Callable[[Any], Any]) -> None:
        """Register ``conn`` (counted in ``ws_connections``), start its writer and hand every frame to
        ``on_message`` (a coroutine function; it returns True to close) until the client goes."""
        self._conns.add(conn)
        self._count("ws_connections")
        writer = asyncio.create_task(self._writer(conn))
        try:
            async for msg in conn.ws:
                if await on_message(msg):
                    break
        finally:
            self._conns.discard(conn)
            writer.cancel()

    async def _writer(self, conn: Any) -> None:
        try:
            while True:
                await conn.ws.send_str(await conn.out.get())
        except (asyncio.CancelledError, ConnectionError, RuntimeError):
            pass

    def _push_held(self) -> bool:
        """True while pushes are held back (besides ``pause``)."""
        return False

    def _push_round(self) -> None:
        """Publish one round of book changes, trades and bars."""
        raise NotImplementedError

    async def _push_loop(self) -> None:
        while True:
            await asyncio.sleep(self.push_interval_s)
            await self._paused.wait()
            if self._push_held():
                continue
            try:
                self._push_round()
            except Exception:  # a bug here must not silently stop the feed
                log.exception("fake %s push failed", self.label.lower())



async def serve(fake: FakeServerBase, args: argparse.Namespace, *,
                scheduled: Callable[[asyncio.AbstractEventLoop], None], listening: str,
                stopped: Callable[[], None] | None = None) -> int:
    """The command line's server: start ``fake``, run ``scheduled(loop)`` (the timed states), write the port
    file atomically (``args.port_file``), log ``listening``, serve until SIGTERM/SIGINT, then stop, remove the
    port file, call ``stopped`` and write ``args.stats_file``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await fake.start()
    scheduled(loop)
    info = {"port": fake.port, "rest_url": fake.rest_url, "ws_url": fake.ws_url, "pid": os.getpid()}
    if args.port_file is not None:
        tmp = args.port_file.with_name("." + args.port_file.name + ".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, args.port_file)
    logging.getLogger(type(fake).__module__).info("%s", listening.format(fake=fake))
    try:
        await stop.wait()
    finally:
        await fake.stop()
        if args.port_file is not None:
            try:
                args.port_file.unlink()
            except FileNotFoundError:
                pass
        if stopped is not None:
            stopped()
        if args.stats_file is not None:
            args.stats_file.write_text(json.dumps(fake.counts))
    return 0


@contextlib.contextmanager
def fake_process(module: str, port_file: Path, *args: str, cwd: Path | None = None,
                 start_timeout_s: float = 30.0) -> Iterator[dict]:
    """Run ``python -m <module> --port-file PORT_FILE ARGS`` (a fake's command line) as a child process until the
    block ends (then SIGTERM); yields the port file's JSON once it listens. Fails with the child's stderr when
    it exits first, or when it does not listen within ``start_timeout_s``."""
    proc = subprocess.Popen([sys.executable, "-m", module, "--port-file", str(port_file), *args],
                            cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not port_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"{module} exited before listening: {proc.stderr.read()}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{module} did not start within {start_timeout_s:g} s")
            time.sleep(0.05)
        yield json.loads(port_file.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        proc.stderr.close()
