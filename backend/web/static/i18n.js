// Every text of the page that is not data, by language. English is complete; another
// language lists only what it translates (the rest falls back to English).
"use strict";
window.I18N = {
  en: {
    title: "LOB bot: ML Management", nav_collector: "Collector", nav_data: "Data", nav_ml: "ML Management",
    token_label: "API token", token_save: "Use token", token_needed: "Starting or cancelling a job needs the API token (in <data-dir>/api_token).",
    col_symbol: "Symbol", col_book_age: "Book age, s", col_samples: "Samples", col_last_sample: "Last sample (UTC)",
    col_skipped: "Skipped", col_rejected: "Rejected",
    no_bot: "No bot in this process: start the bot with --api-port to see the collector live.",
    bot_state: "Source {source}: {state}, health {health}", warmup: "warming up: {done}/{need} ticks",
    loop_lag: "Loop lag p99 (bucket bound)", spool: "Spool", buffers: "Buffer memory", clock: "Exchange clock offset",
    reconnects: "Reconnects", ticks: "Ticks", overruns: "Overruns",
    data_group: "Feature group", refresh: "Refresh", data_heatmap: "Rows per symbol per day",
    data_coverage: "Label coverage", data_balance: "Class balance over time", data_gaps: "Gaps",
    horizon: "Horizon", gap_from: "From", gap_to: "To", gap_seconds: "Seconds", gap_missing: "Missing samples",
    rows: "Rows", files: "Files", size: "Size on disk", versions: "Feature versions", first: "First", last: "Last",
    audit_time: "Audit time", gaps_none: "No gaps longer than {f} sampling intervals.",
    gaps_some: "{n} gaps longer than {f} sampling intervals (largest first).",
    coverage_h: "Horizon", coverage_share: "Labelled", empty_store: "No data in this group yet.",
    train_title: "Start Training", train_start: "Start Training", label_title: "Labelling", label_start: "Start Labelling",
    job_title: "Job", job_state: "State", job_epoch: "Epoch", job_cancel: "Cancel",
    runs_title: "Runs (test macro-F1 beside baselines)", run_id: "Run", run_start: "Started (UTC)", run_status: "Status",
    run_model: "Model macro-F1", run_detail: "Run", run_open_mlflow: "open in MLflow UI",
    run_confusion: "Confusion matrix (test split, rows = true class)", details: "details", no_runs: "No runs yet.",
    started: "Started job {id}", invalid: "Invalid options:", busy: "Another job is running: {msg}",
    unauthorized: "The token was refused: enter it again.", mlflow_run: "MLflow run"
  },
  ru: {}
};
window.t = function (key, vars) {
  const lang = document.documentElement.lang || "en";
  let s = (window.I18N[lang] && window.I18N[lang][key]) || window.I18N.en[key] || key;
  for (const [k, v] of Object.entries(vars || {})) s = s.split("{" + k + "}").join(String(v));
  return s;
};
