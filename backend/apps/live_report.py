"""``python -m backend.apps.live_report``: how a model did live, beside its test metrics (DESIGN.md §6.6).

Reads the ``predictions`` group (label it first: ``python preprocessing_add_future_labels_parquet.py
--feature-group predictions``), scores each model at its own horizon over its labelled
predictions (accuracy and macro-F1, the training code's definitions), scores the
persistence baseline on the same rows (the direction of the move over the horizon before
each prediction, from the price tape, at the model's label threshold: the baseline
training reports), totals the model's paper fills from the ``paper_trades`` group (gross and
net PnL, fees, turnover; open positions at the last tape mid), prints them beside the test
metrics logged with the model's run and logs them to that run (``live_*`` and ``paper_*``
metrics) unless ``--no-log``.

Exit status: 0 done, 1 nothing to report or a model that cannot be resolved, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import numpy as np
import pyarrow as pa

from backend.config import add_data_dir_argument, configure_or_exit
from backend.contracts.groups import PAPER_TRADES, PREDICTIONS
from backend.contracts.labels import direction_column
from backend.contracts.labels import DEFAULT_TOLERANCE_S
from backend.ml_engine.feature_store.feature_store import FeatureStoreError, get_feature_store
from backend.ml_engine.live.records import column_numpy as _np
from backend.ml_engine.labelling.symbol_codes import symbol_codes
from backend.ml_engine.live.live_metrics import last_mids, live_report, live_scores, mids_at, paper_stats
from backend.ml_engine.live.model_loader import ModelLoadError, label_threshold, resolve_run_id
from backend.ml_engine.training_orchestrator.baselines import persistence_predictions, read_tape
from backend.ml_engine.training_orchestrator.evaluate import score
from backend.ml_engine.training_orchestrator.errors import TrackingError
from backend.ml_engine.training_orchestrator.tracking import probe_database, resolve_tracking, scrub

__all__ = ["build_parser", "main", "model_report", "threshold_notes"]

#: how far past the last prediction or fill the tape is read for the last mid (the bot's last ticks)
TAPE_TAIL_MS = 86_400_000


def build_parser() -> argparse.ArgumentParser:
    """The option parser."""
    p = argparse.ArgumentParser(
        prog="python -m backend.apps.live_report",
        description="Live accuracy and macro-F1 of the models the bot ran with --model, beside their test metrics, "
        "and their paper-trading PnL; logged to each model's MLflow run.",
    )
    p.add_argument("--model", action="append", default=None, metavar="URI",
                   help="model URI as the bot was given it (repeatable; default: every model in the predictions group)")
    add_data_dir_argument(p)
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: as training resolves it)")
    p.add_argument("--start-date", default=None, help="first UTC date, YYYY-MM-DD (default: all)")
    p.add_argument("--end-date", default=None, help="last UTC date, inclusive, YYYY-MM-DD (default: all)")
    p.add_argument("--no-log", action="store_true", help="print only; do not log the live metrics to the MLflow runs")
    return p


def _date(parser: argparse.ArgumentParser, text: str | None) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        parser.error(f"invalid date {text!r}: use YYYY-MM-DD")


def model_report(store, uri: str, preds: pa.Table, trades: pa.Table, test_metrics: dict, threshold_pct: float) -> dict:
    """One model's live figures from its rows of the two groups (already filtered to ``uri``).

    Returns ``report`` (``LiveReport``), ``persistence`` (live macro-F1 of the persistence
    baseline on the same labelled rows, NaN without any), ``paper`` (``fills_pnl``) and ``metrics``
    (what is logged to MLflow).
    """
    horizon = int(_np(preds, "horizon_s")[0]) if preds.num_rows else 0
    realised = preds.column(direction_column(horizon)).cast(pa.float64()).fill_null(np.nan).to_numpy() if preds.num_rows else np.zeros(0)
    predicted = _np(preds, "predicted_direction").astype(np.int64) if preds.num_rows else np.zeros(0, np.int64)
    scores = live_scores(np.full(predicted.shape, uri, dtype=object), predicted, realised).get(uri, (None, 0, 0))
    report = live_report(uri, scores, test_metrics)
    ts = _np(preds, "timestamp").astype(np.int64) if preds.num_rows else np.zeros(0, np.int64)
    symbols = np.unique(_np(preds, "symbol").astype(str)).tolist() if preds.num_rows else []
    persistence = float("nan")
    tape = None
    if preds.num_rows:
        codes = symbol_codes(preds.column("symbol"), symbols)
        # to the end of the recorded tape after the last prediction: open paper positions are marked at its last mid
        trade_end = int(_np(trades, "timestamp").max()) if trades.num_rows else 0
        end = max(int(ts.max()), trade_end) + horizon * 1000 + TAPE_TAIL_MS
        tape = read_tape(store, symbols, int(ts.min()) - (horizon + int(DEFAULT_TOLERANCE_S) + 1) * 1000, end)
        # the price at prediction time is the tape row of the same book (same symbol and timestamp)
        mid = mids_at(tape, codes, ts)
        labelled = np.isfinite(realised) & np.isfinite(mid)
        if labelled.any():
            pers, _info = persistence_predictions(ts[labelled], codes[labelled], mid[labelled], horizon, threshold_pct,
                                                  DEFAULT_TOLERANCE_S, tape=tape)
            persistence = score("live persistence", realised[labelled].astype(np.int64), pers.astype(np.int64)).macro_f1
    last_mid = last_mids(tape, symbols) if tape is not None else {}
    if trades.num_rows:
        order = np.argsort(_np(trades, "timestamp").astype(np.int64), kind="stable")
        side = np.where(_np(trades, "side")[order] == "buy", 1.0, -1.0)
        paper = paper_stats(_np(trades, "symbol")[order], side * _np(trades, "qty")[order], _np(trades, "price")[order],
                            _np(trades, "fee")[order], last_mid)
    else:
        paper = paper_stats(np.zeros(0, str), np.zeros(0), np.zeros(0), np.zeros(0), {})
    metrics = dict(report.as_metrics())
    if np.isfinite(persistence):
        metrics["live_persistence_macro_f1"] = persistence
    metrics.update({"paper_gross_pnl": paper["gross"], "paper_net_pnl": paper["net"], "paper_fees": paper["fees"],
                    "paper_turnover": paper["turnover"], "paper_fills": paper["fills"],
                    "paper_round_trips": paper["round_trips"], "paper_max_drawdown_gross": paper["max_drawdown_gross"],
                    "paper_max_drawdown_net": paper["max_drawdown_net"]})
    if paper["hit_rate"] is not None:
        metrics["paper_hit_rate"] = paper["hit_rate"]
    return {"report": report, "persistence": persistence, "paper": paper, "metrics": metrics}


def threshold_notes(store, files, horizon: int, model_threshold_pct: float) -> list[str]:
    """Warnings when the predictions' labels at ``horizon`` were made with another threshold than the model's.

    ``files``: the prediction files read. Labels without provenance are not judged. Returns
    the lines to print (empty when every labelled file agrees).
    """
    seen: set[float] = set()
    for path in files:
        try:
            record = store.label_provenance(path)
        except (OSError, ValueError):
            continue  # the reader names unreadable files; a provenance it cannot parse is simply not judged
        seen.update(s.threshold_pct for s in record.get(horizon, ()) if s is not None)
    other = sorted(t for t in seen if not np.isclose(t, model_threshold_pct, rtol=1e-9, atol=1e-12))
    if not other:
        return []
    return [f"  WARNING: the predictions' {horizon} s labels were made with threshold "
            f"{', '.join(f'{t:g}' for t in other)} %, the model was trained on {model_threshold_pct:g} % labels: live "
            f"accuracy would compare different classes; label them again with "
            f"preprocessing_add_future_labels_parquet.py --feature-group predictions --threshold {model_threshold_pct:g}"]


def _fmt(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    """Print (and log) every model's live report; returns the exit status."""
    import mlflow

    parser = build_parser()
    args = parser.parse_args(argv)
    start, end = _date(parser, args.start_date), _date(parser, args.end_date)
    settings = configure_or_exit(parser, data_dir=args.data_dir)
    target = resolve_tracking(args.tracking_uri, settings.mlflow_tracking_uri, settings.data_dir)
    try:  # one quick connect: MLflow retries a dead store ~100 s, logging a raw-'@' password's tail as the host
        probe_database(target)
    except TrackingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    store = get_feature_store()
    bad: list = []  # FileCheck of every store file that could not be used
    try:
        pred_files = store.list_files(PREDICTIONS, start, end)
        preds = store.read_offline_table(PREDICTIONS, start, end, on_bad_file=bad.append)
        trades = store.read_offline_table(PAPER_TRADES, start, end, on_bad_file=bad.append)
    except FeatureStoreError as exc:
        parser.error(str(exc))
    for check in bad:  # named once each; the report goes on without them
        print(f"skipped {check.path}: {check.reason}; the file is left untouched", file=sys.stderr)
    if preds.num_rows == 0:
        if any(check.path.is_relative_to(store.root / PREDICTIONS) for check in bad):
            print(f"No readable predictions in {store.root / PREDICTIONS}: the files named above cannot be used; "
                  "restore them or move them out.", file=sys.stderr)
        else:
            print(f"No predictions in {store.root / PREDICTIONS}: run the bot with --model URI first.", file=sys.stderr)
        return 1
    pred_uri = _np(preds, "model_uri")
    trade_uri = _np(trades, "model_uri") if trades.num_rows else np.zeros(0, dtype=object)
    models = args.model or sorted(set(pred_uri.tolist()))
    client = mlflow.MlflowClient(tracking_uri=target.uri, registry_uri=target.uri)
    code = 0
    for uri in models:
        rows = preds.filter(pa.array(pred_uri == uri))
        if rows.num_rows == 0:
            where = "in this date range" if (start or end) else "in the predictions group"
            present = ", ".join(sorted(set(pred_uri.tolist())))
            print(f"{uri}: no predictions {where}; the models with predictions there: {present}", file=sys.stderr)
            code = 1
            continue
        try:
            run_id = resolve_run_id(client, uri)
            run = client.get_run(run_id)
        except ModelLoadError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = 1
            continue
        except Exception as exc:  # MLflow's own errors carry a readable first line
            print(f"error: {uri}: run not found: {scrub(str(exc), target.uri).splitlines()[0]}", file=sys.stderr)
            code = 1
            continue
        threshold, _known = label_threshold(run.data.params)
        out = model_report(store, uri, rows, trades.filter(pa.array(trade_uri == uri)) if trades.num_rows else trades,
                           dict(run.data.metrics), threshold)
        r, paper = out["report"], out["paper"]
        print(f"Model {uri} (run {run_id}), horizon {int(_np(rows, 'horizon_s')[0])} s")
        print(f"  predictions {r.predictions}, labelled {r.labelled}")
        live_acc = r.live.accuracy if r.live else None
        live_f1 = r.live.macro_f1 if r.live else None
        print(f"  accuracy  live {_fmt(live_acc)}   test {_fmt(r.test_accuracy)}")
        print(f"  macro-F1  live {_fmt(live_f1)}   test {_fmt(r.test_macro_f1)}")
        print(f"  persistence baseline macro-F1  live {_fmt(out['persistence'])}   test {_fmt(r.baselines.get('persistence'))}")
        print(f"  paper trading: gross PnL {paper['gross']:+.2f}, net PnL {paper['net']:+.2f} (fees {paper['fees']:.2f}), "
              f"{int(paper['fills'])} fills, turnover {paper['turnover']:.0f} (quote units)")
        hit = "n/a" if paper["hit_rate"] is None else f"{paper['hit_rate']:.1%}"
        print(f"  paper round trips {paper['round_trips']}, hit rate {hit}, max drawdown gross "
              f"{paper['max_drawdown_gross']:.2f}, net {paper['max_drawdown_net']:.2f}, "
              f"open positions {paper['open_positions']}")
        for line in threshold_notes(store, pred_files, int(_np(rows, "horizon_s")[0]), threshold):
            print(line)
        if not args.no_log:
            for k, v in out["metrics"].items():
                client.log_metric(run_id, k, float(v))
            print(f"  logged {', '.join(sorted(out['metrics']))} to run {run_id}")
    return code


if __name__ == "__main__":
    sys.exit(main())
