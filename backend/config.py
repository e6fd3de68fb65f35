"""The one settings object of the product.

Values come, highest priority first, from: command-line overrides passed to
``configure(...)``, environment variables, the ``.env`` file at the repository
root, and the defaults below.

Environment variables carry the prefix ``LOBBOT_`` (``LOBBOT_INTERVAL=1.5``).
A few well-known names are also accepted without the prefix because users and
tools already spell them that way: ``DATA_DIR``, ``BYBIT_REST_URL``,
``BYBIT_WS_URL``, ``BINANCE_REST_URL``, ``BINANCE_WS_URL`` and ``MLFLOW_TRACKING_URI``.

Paths never depend on the current directory: ``data_dir`` defaults to
``<repo>/data`` where ``<repo>`` is the folder holding ``backend/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import threading
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from backend.contracts.groups import MARKET_GROUPS, PAPER_TRADES, PREDICTIONS, validate_group_name
from backend.contracts.labels import DEFAULT_THRESHOLD_PCT
from backend.credentials import CredentialError, parse_url
from backend.symbols import SymbolsFileError, read_symbols_file, validate_symbol

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "LOBBOT_"


def _alias(name: str) -> AliasChoices:
    """Accept both ``LOBBOT_<NAME>`` and the bare ``<NAME>``."""
    return AliasChoices(f"{ENV_PREFIX}{name}", name)


class Settings(BaseSettings):
    """Every setting of the bot, collector, labeller and trainer, validated by pydantic.

    Build it through ``get_settings()`` / ``configure()`` rather than directly, so the
    whole process shares one object. Intervals and ages are in seconds, memory in MB.

    Raises:
        pydantic.ValidationError: on construction, when a value is out of range, a
            symbol is not a plain ticker (see ``backend.symbols``) or symbols repeat.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=str(REPO_ROOT / ".env"),
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        # a rejected value may be a URL with a password: error texts never quote inputs
        hide_input_in_errors=True,
    )

    # --- storage -------------------------------------------------------------
    data_dir: Path = Field(
        default=REPO_ROOT / "data",
        validation_alias=_alias("DATA_DIR"),
        description="Root of all collected data (feature store, legacy batches, spool, MLflow).",
    )

    # --- bot -------------------------------------------------------------------
    source: Literal["bybit", "bybit-ws", "binance", "binance-ws", "sim", "replay"] = Field(
        default="bybit", description="Market source: Bybit or Binance USD-M REST polling, their WebSocket local "
        "books, or the simulator."
    )
    symbols_all: bool = Field(
        default=False, description="Collect every trading Bybit linear USDT perpetual (``--symbols all``): the "
        "list comes from instruments-info at start and is refreshed every instruments_refresh_s while running.")
    symbols: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["BTCUSDT", "ETHUSDT"],
        description="Comma-separated linear perpetual symbols; 'all' (every trading Bybit linear USDT "
        "perpetual) or '@FILE' (one symbol per line, # comments) also work. Empty when symbols_all.",
    )
    instruments_refresh_s: float = Field(
        default=86_400.0, gt=0, description="Bybit sources: seconds (or 90s, 30m, 1d) between instruments-info "
        "checks while running: delisted symbols are dropped, and with --symbols all new listings join.")
    interval: float = Field(default=3.0, gt=0, description="Seconds between ticks.")
    collection_interval: int = Field(default=10, ge=1, description="Ticks between collected samples.")
    max_samples_per_file: int = Field(default=2000, ge=1, description="Samples per symbol before a flush.")
    max_buffer_memory_mb: float = Field(default=200.0, gt=0, description="Memory cap of all sample buffers.")
    use_legacy_format: bool = Field(default=True, description="Also write the legacy .npy/.json batches.")
    enable_feature_store: bool = Field(default=True, description="Write the parquet feature store.")
    feature_store_group: str = Field(default="training_features", description="Feature group for samples.")
    seed: int | None = Field(default=None, description="Random seed (simulator, training).")
    stats_interval: int = Field(default=100, ge=1, description="Ticks between statistics lines.")
    max_iterations: int | None = Field(default=None, ge=0, description="Stop after N ticks (0: recover and exit).")
    book_depth: int = Field(default=50, ge=1, le=500, description="Levels kept per side of every book.")
    max_book_age_s: float = Field(default=15.0, gt=0, description="A book older than this is stale.")
    max_clock_skew_s: float = Field(default=5.0, gt=0, description="A book this far in the future is rejected.")
    spool_fsync: bool = Field(default=True, description="fsync the write-ahead spool (group commit per tick).")

    # --- simulator ---------------------------------------------------------------
    fast: bool = Field(default=False, description="Simulator: run on a virtual clock, no sleeping.")
    duration: str | None = Field(default=None, description="Simulator: simulated time to run, e.g. 24h, 90m.")
    sim_start: str | None = Field(default=None, description="Simulator: ISO start time (UTC), default now.")

    # --- raw events and replay (DESIGN.md §6.4) -------------------------------------
    record_raw: bool | None = Field(
        default=None, description="Store what the venue delivered in the raw_events group "
        "(default: on for live sources, off for sim; never for replay).")
    replay_from: str | None = Field(default=None, description="Replay: first UTC date of raw events (YYYY-MM-DD).")
    replay_to: str | None = Field(default=None, description="Replay: last UTC date of raw events (YYYY-MM-DD).")
    allow_mixed_versions: bool = Field(
        default=False, description="Replay: write into a group holding rows of another feature version.")

    # --- exchange ----------------------------------------------------------------
    bybit_rest_url: str = Field(
        default="https://api.bybit.com", validation_alias=_alias("BYBIT_REST_URL"), description="Bybit v5 REST base URL."
    )
    bybit_ws_url: str = Field(
        default="wss://stream.bybit.com/v5/public/linear",
        validation_alias=_alias("BYBIT_WS_URL"),
        description="Bybit v5 public linear WebSocket URL.",
    )
    binance_rest_url: str = Field(
        default="https://fapi.binance.com", validation_alias=_alias("BINANCE_REST_URL"),
        description="Binance USD-M futures REST base URL.",
    )
    binance_ws_url: str = Field(
        default="wss://fstream.binance.com", validation_alias=_alias("BINANCE_WS_URL"),
        description="Binance USD-M futures market-stream base URL (the bot adds /stream?streams=...).",
    )
    http_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one REST request.")
    http_max_retries: int = Field(default=5, ge=0, description="Retries on 429/5xx/rate-limit retCodes.")
    ws_ping_interval_s: float = Field(default=20.0, gt=0, description="WebSocket application ping period.")

    # --- training / tracking -------------------------------------------------------
    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias=_alias("MLFLOW_TRACKING_URI"), description="MLflow tracking URI."
    )

    # --- model in the loop, paper trading only (DESIGN.md §6.6, docs/paper_trading.md) -----
    model_uri: str | None = Field(
        default=None, description="MLflow model to predict with at every collection tick "
        "(models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/model); none by default.")
    model_label_threshold_pct: float = Field(
        default=DEFAULT_THRESHOLD_PCT, ge=0, allow_inf_nan=False,
        description="The label threshold (%) the predictions will be labelled with; a --model must have been "
        "trained on labels made with the same threshold.")
    paper_enter_prob: float = Field(default=0.6, gt=0.5, le=1.0,
                                    description="Paper trading: enter when P(up) or P(down) reaches this.")
    paper_notional_quote: float = Field(default=1000.0, gt=0, description="Paper trading: quote notional per trade.")
    paper_taker_fee_bps: float = Field(default=5.5, ge=0, description="Paper trading: taker fee per fill, bps.")
    paper_slippage_bps: float = Field(default=1.0, ge=0, description="Paper trading: slippage per fill, bps.")

    log_level: str = Field(default="INFO", description="Logging level.")

    @model_validator(mode="before")
    @classmethod
    def _symbols_all(cls, data: Any) -> Any:
        # ``--symbols all``: the list is the venue's, resolved at start (symbols_all), not a ticker "ALL"
        if isinstance(data, dict) and isinstance(data.get("symbols"), str) and data["symbols"].strip().lower() == "all":
            data = dict(data, symbols=[], symbols_all=True)
        return data

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().startswith("@"):
            try:
                return read_symbols_file(Path(value.strip()[1:]).expanduser())
            except SymbolsFileError as exc:
                raise ValueError(str(exc)) from None
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("instruments_refresh_s", mode="before")
    @classmethod
    def _refresh_duration(cls, value: Any) -> Any:
        return duration_seconds(value) if isinstance(value, str) else value

    @field_validator("symbols")
    @classmethod
    def _check_symbols(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if not value and info.data.get("symbols_all"):
            return value  # resolved from the venue at start
        if not value:
            raise ValueError("at least one symbol is required")
        checked = [validate_symbol(s) for s in value]
        if len(set(checked)) != len(checked):
            raise ValueError(f"duplicate symbols in {checked}")
        return checked

    @field_validator("bybit_rest_url", "bybit_ws_url", "binance_rest_url", "binance_ws_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        # parsed as aiohttp/websockets will parse it: a token they would split is refused here, masked
        try:
            parse_url(value)
        except CredentialError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("feature_store_group")
    @classmethod
    def _check_group(cls, value: str) -> str:
        validate_group_name(value)
        if value in MARKET_GROUPS:
            raise ValueError(f"{value!r} holds market records, not samples: choose another feature group")
        if value in (PREDICTIONS, PAPER_TRADES):
            raise ValueError(f"{value!r} holds what a --model run predicted or paper-traded, not samples: "
                             "choose another feature group")
        return value

    @field_validator("replay_from", "replay_to")
    @classmethod
    def _replay_date(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            return dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            raise ValueError(f"{value!r} is not a date: use a UTC date such as 2025-11-07") from None

    @model_validator(mode="after")
    def _replay_options(self) -> "Settings":
        if self.source == "replay" and self.record_raw:
            raise ValueError("--record-raw does not apply to --source replay (it replays recorded raw events)")
        if self.source != "replay" and (self.replay_from or self.replay_to):
            raise ValueError("--replay-from / --replay-to apply to --source replay only")
        if self.replay_from and self.replay_to and self.replay_from > self.replay_to:
            raise ValueError(f"--replay-from {self.replay_from} is after --replay-to {self.replay_to}: "
                             "give the earlier date first")
        if self.source == "replay" and self.use_legacy_format:
            # the legacy format has no groups: replayed batches would sit beside the recorded ones and
            # every legacy reader would count each sample twice; a replay writes its group only
            object.__setattr__(self, "use_legacy_format", False)
        return self

    @model_validator(mode="after")
    def _all_symbols_options(self) -> "Settings":
        if not self.symbols_all:
            return self
        if self.source not in ("bybit", "bybit-ws"):
            raise ValueError("--symbols all lists Bybit's linear USDT perpetuals: it applies to --source bybit-ws "
                             "(or bybit); give the symbols by name (or @FILE) for other sources")
        if self.model_uri:
            raise ValueError("--model predicts for a fixed list of symbols: give them by name (or @FILE), "
                             "not --symbols all")
        self.symbols = []  # LOBBOT_SYMBOLS_ALL=true beside a symbol list: the venue's list wins
        return self

    @property
    def records_raw(self) -> bool:
        """Whether this run stores raw venue events: ``record_raw``, else on for live sources only."""
        if self.source == "replay":
            return False
        return self.record_raw if self.record_raw is not None else self.source != "sim"

    @model_validator(mode="after")
    def _no_links_out(self) -> "Settings":
        problems = links_leaving(self.data_dir)
        if problems:
            raise ValueError(
                "symlinks under the data dir lead outside it, so data would be written (or read) where nobody "
                "looks for it: " + "; ".join(problems) + ". Replace each link by a real folder, or point "
                "DATA_DIR (--data-dir) at the other disk instead"
            )
        return self

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # A relative DATA_DIR is taken relative to the repository, not the cwd.
        value = value.expanduser()
        value = value if value.is_absolute() else (REPO_ROOT / value).resolve()
        # the folder is created on first use; a file on its way (or in its place) can never hold it
        for part in (value, *value.parents):
            if part.exists() or part.is_symlink():
                if not part.is_dir():
                    what = "is" if part == value else "lies under"
                    raise ValueError(f"{value} {what} {part}, which is a file, not a folder: point DATA_DIR "
                                     f"(--data-dir) at a folder")
                break
        return value

    # --- derived paths -------------------------------------------------------------
    @property
    def feature_store_root(self) -> Path:
        """Root of the parquet feature store: ``<data_dir>/feature_store/offline``."""
        return self.data_dir / "feature_store" / "offline"

    @property
    def legacy_root(self) -> Path:
        """Root of the legacy ``.npy``/``.json`` batches: ``<data_dir>/ml_training``."""
        return self.data_dir / "ml_training"

    @property
    def spool_dir(self) -> Path:
        """Folder of the collector's write-ahead spool: ``<data_dir>/spool`` (``spool_replay`` for a replay,
        so a replay can run beside a collecting bot on the same data)."""
        return self.data_dir / ("spool_replay" if self.source == "replay" else "spool")

    @property
    def mlflow_dir(self) -> Path:
        """Default MLflow store when no tracking URI is set: ``<data_dir>/mlflow``."""
        return self.data_dir / "mlflow"


def _candidates(root: Path) -> list[Path]:
    """The folders under ``root`` that the product reads or writes by name, to the depth it names them."""
    out = [root / "feature_store", root / "feature_store" / "offline", root / "ml_training", root / "spool", root / "mlflow"]
    offline, legacy = root / "feature_store" / "offline", root / "ml_training"
    for group in _entries(offline):
        out.append(group)
        out.extend(_entries(group))
    for symbol in _entries(legacy):
        out.append(symbol)
        out.extend(symbol / sub for sub in ("features", "labels", "metadata"))
    return out


def _entries(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError:  # absent, not a folder, unreadable: nothing to check there
        return []


def links_leaving(data_dir: Path) -> list[str]:
    """``"<link> -> <target>"`` for each symlink under ``data_dir`` (at the depths the product
    names: store groups and days, legacy symbols and their three folders, spool, mlflow) whose
    target lies outside ``data_dir``. ``data_dir`` itself may be a link."""
    try:
        root = data_dir.resolve()
    except OSError:
        return []
    out = []
    for path in _candidates(data_dir):
        if not path.is_symlink():
            continue
        target = path.resolve()
        if not target.is_relative_to(root):
            out.append(f"{path} -> {target}")
    return out


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str, *, unit_required: bool = False, what: str = "duration") -> float:
    """``"1d"`` -> 86400.0: a number of seconds, or a number with a unit s, m, h or d.

    The one duration parser of every command line (``--duration``, ``--instruments-refresh``,
    training's ``--window``). With ``unit_required`` a bare number is refused, because
    "24" could mean hours as easily as seconds; ``what`` names the option in the message.

    Raises:
        ValueError: anything else (the message shows the accepted forms).
    """
    m = _DURATION_RE.match(text or "")
    if not m:
        raise ValueError(f"invalid {what} {text!r}: use {'' if unit_required else 'seconds or '}e.g. 90s, 30m, 12h, 1d")
    if float(m.group(1)) <= 0:
        raise ValueError(f"invalid {what} {text!r}: must be more than zero")
    if unit_required and not m.group(2):
        n = m.group(1)
        raise ValueError(f"invalid {what} {text!r}: give a unit, e.g. {n}h for hours "
                         f"({n}s, {n}m and {n}d are seconds, minutes and days)")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def field_name(loc: str) -> str:
    """The ``Settings`` field an error location names: itself, or the field whose alias it is
    (pydantic reports an aliased field by the alias it was given, e.g. ``LOBBOT_DATA_DIR``)."""
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if name == loc or (isinstance(alias, AliasChoices) and loc in alias.choices) or alias == loc:
            return name
    return loc


def settings_error_text(exc: ValidationError) -> str:
    """One line per invalid setting (``name: why``), for printing instead of pydantic's traceback."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {str(e['msg']).removeprefix('Value error, ')}"
        for e in exc.errors()
    )


_lock = threading.Lock()
_settings: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings (built from the environment on first use).

    Raises:
        pydantic.ValidationError: the environment or ``.env`` holds an invalid value.
    """
    global _settings
    with _lock:
        if _settings is None:
            _settings = Settings()
        return _settings


def configure(**overrides: Any) -> Settings:
    """Rebuild the process-wide settings with CLI overrides on top of the environment.

    ``None`` values are ignored so argparse defaults of ``None`` mean "not given".
    The settings object is replaced, never mutated: process-wide objects built from
    older settings (the feature store) compare the object they were built from with
    ``get_settings()`` and rebuild themselves, so this module imports nothing above it.

    Raises:
        pydantic.ValidationError: an override or environment value is invalid (a bad
            symbol, a non-positive interval, an unknown source, ...).
    """
    global _settings
    given = {k: v for k, v in overrides.items() if v is not None}
    with _lock:
        _settings = Settings(**given)
        return _settings


def configure_or_exit(parser: argparse.ArgumentParser, **overrides: Any) -> Settings:
    """``configure(**overrides)`` for a command-line app: invalid settings (from the options,
    the environment or ``.env``) end the program through ``parser.error`` (exit status 2)
    with one line per setting, never a traceback."""
    try:
        return configure(**overrides)
    except ValidationError as exc:
        parser.error(f"invalid settings: {settings_error_text(exc)}")
        raise  # unreachable: parser.error exits


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    """Add the ``--data-dir`` option shared by every command-line app.

    Its default is ``None`` so that ``configure(data_dir=args.data_dir)`` falls back to
    ``$DATA_DIR`` and then ``<repo>/data`` when the option is not given.
    """
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="root of all data (default: $DATA_DIR or <repo>/data)",
    )
