// Every text of the page that is not data, by language. English is complete; another
// language lists only what it translates (the rest falls back to English).
"use strict";
window.I18N = {
  en: {
    title: "LOB bot: ML Management", nav_collector: "Collector", nav_data: "Data", nav_ml: "ML Management",
    token_label: "API token", token_save: "Use token", token_needed: "Starting or cancelling a job needs the API token (in <data-dir>/api_token).",
    token_needed_reads: "This server is reachable from the network, so showing anything needs the API token (in <data-dir>/api_token or $LOBBOT_API_TOKEN).",
    col_symbol: "Symbol", col_book_age: "Book age, s", col_samples: "Samples", col_last_sample: "Last sample (UTC)",
    col_skipped: "Skipped", col_rejected: "Rejected", col_venue: "Venue",
    venue_line: "{venue}: {n} symbols; reconnects {r}, resyncs {s}, retries {t}, clock offset {o}, faults {f}",
    no_bot: "No bot in this process: start the bot with --api-port to see the collector live.",
    bot_state: "Source {source}: {state}, health {health}", warmup: "warming up: {done}/{need} ticks",
    loop_lag: "Loop lag p99 (bucket bound)", spool: "Spool", buffers: "Buffer memory", clock: "Exchange clock offset",
    reconnects: "Reconnects", ticks: "Ticks", overruns: "Overruns",
    data_group: "Feature group", refresh: "Refresh", data_heatmap: "Rows per symbol per day",
    data_coverage: "Label coverage", data_balance: "Class balance over time", data_gaps: "Gaps",
    horizon: "Horizon", gap_from: "From", gap_to: "To", gap_seconds: "Seconds", gap_missing: "Missing samples",
    rows: "Rows", files: "Files", size: "Size on disk", versions: "Feature versions", first: "First", last: "Last",
    audit_time: "Audit time", skipped_files: "Files skipped (not counted)", gaps_none: "No gaps longer than {f} sampling intervals.",
    gaps_some: "{n} gaps longer than {f} sampling intervals (largest first).",
    coverage_h: "Horizon", coverage_share: "Labelled", empty_store: "No data in this group yet.",
    train_title: "Start Training", train_start: "Start Training", label_title: "Labelling", label_start: "Start Labelling",
    job_title: "Job", job_state: "State", job_epoch: "Epoch", job_cancel: "Cancel",
    runs_title: "Runs (test macro-F1 beside baselines)", run_id: "Run", run_start: "Started (UTC)", run_status: "Status",
    run_model: "Model macro-F1", run_detail: "Run", run_open_mlflow: "open in MLflow UI",
    run_verdict: "Verdict (paired interval, docs/evaluation.md)", verdict_beats: "beats", verdict_nd: "not distinguishable from",
    verdict_worse: "worse than", verdict_none: "no verdict (run before the evaluation)", no_skill: "does not beat persistence: do not trade on it",
    run_confusion: "Confusion matrix (test split, rows = true class)", details: "details", no_runs: "No runs yet.",
    started: "Started job {id}", invalid: "Invalid options:", busy: "Another job is running: {msg}",
    unauthorized: "The token was refused: enter it again.", mlflow_run: "MLflow run", lang_label: "Language",
    nav_live: "Live Model", live_none: "No model loaded and no stored predictions: start the bot with --model URI (and --api-port) to see it live.",
    live_loaded: "Model {uri} (horizon {h} s, windows of {L} samples): paper trading only, no order is sent.",
    live_stored: "Read from the store (no model runs in this process): predictions since {since}, realised classes where the labeller has labelled them; the equity curve marks positions at their last fill price.",
    live_f1_title: "Rolling live macro-F1 (test macro-F1 dashed)", live_equity_title: "Paper equity, quote (gross and net of fees)",
    live_preds_title: "Predictions vs realised labels (newest first)", live_time: "Time (UTC)", live_predicted: "Predicted",
    live_realised: "Realised", live_predictions: "Predictions", live_labelled: "Labelled", live_accuracy: "Live accuracy",
    live_macro_f1: "Live macro-F1 (rolling)", test_macro_f1: "Test macro-F1", test_persistence: "Test persistence macro-F1",
    paper_gross: "Gross PnL", paper_net: "Net PnL", paper_fees: "Fees", paper_fills: "Fills", paper_hit: "Hit rate",
    paper_dd: "Max drawdown (net)", pending: "pending"
  },
  ru: {
    title: "LOB bot: управление ML", nav_collector: "Сборщик", nav_data: "Данные", nav_ml: "Управление ML",
    nav_live: "Модель в работе", live_none: "Модель не загружена, сохранённых прогнозов нет: запустите бота с --model URI (и --api-port).",
    live_loaded: "Модель {uri} (горизонт {h} с, окна по {L} сэмплов): только бумажная торговля, ордера не отправляются.",
    live_stored: "Прочитано из хранилища (модель в этом процессе не работает): прогнозы с {since}, фактические классы там, где разметчик их проставил; кривая капитала оценивает позиции по цене последней сделки.",
    live_realised: "Фактически", live_predicted: "Прогноз", paper_gross: "PnL брутто", paper_net: "PnL нетто",
    token_label: "API-токен", token_save: "Применить токен",
    token_needed: "Для запуска или отмены задачи нужен API-токен (в <data-dir>/api_token).",
    token_needed_reads: "Сервер доступен из сети, поэтому для показа любых данных нужен API-токен (в <data-dir>/api_token или $LOBBOT_API_TOKEN).",
    col_symbol: "Символ", col_book_age: "Возраст стакана, с", col_samples: "Семплы", col_last_sample: "Последний семпл (UTC)",
    col_skipped: "Пропущено", col_rejected: "Отклонено", col_venue: "Биржа",
    venue_line: "{venue}: символов {n}; переподключений {r}, пересинхронизаций {s}, повторов {t}, сдвиг часов {o}, сбои {f}",
    no_bot: "В этом процессе бот не работает: запустите бота с --api-port, чтобы видеть сбор в реальном времени.",
    bot_state: "Источник {source}: {state}, состояние {health}", warmup: "прогрев: {done}/{need} тиков",
    loop_lag: "Задержка цикла p99 (граница корзины)", spool: "Спул", buffers: "Память буферов", clock: "Сдвиг часов биржи",
    reconnects: "Переподключения", ticks: "Тики", overruns: "Перегрузки",
    data_group: "Группа признаков", refresh: "Обновить", data_heatmap: "Строк по символу за день",
    data_coverage: "Покрытие метками", data_balance: "Баланс классов во времени", data_gaps: "Пропуски",
    horizon: "Горизонт", gap_from: "С", gap_to: "По", gap_seconds: "Секунд", gap_missing: "Недостающих семплов",
    rows: "Строк", files: "Файлов", size: "Размер на диске", versions: "Версии признаков", first: "Первая", last: "Последняя",
    audit_time: "Время проверки", skipped_files: "Пропущено файлов (не учтены)", gaps_none: "Нет пропусков длиннее {f} интервалов сбора.",
    gaps_some: "Пропусков длиннее {f} интервалов сбора: {n} (сначала самые длинные).",
    coverage_h: "Горизонт", coverage_share: "С метками", empty_store: "В этой группе пока нет данных.",
    train_title: "Запуск обучения", train_start: "Начать обучение", label_title: "Разметка", label_start: "Начать разметку",
    job_title: "Задача", job_state: "Состояние", job_epoch: "Эпоха", job_cancel: "Отменить",
    runs_title: "Запуски (тестовый macro-F1 рядом с базовыми моделями)", run_id: "Запуск", run_start: "Начат (UTC)",
    run_status: "Статус", run_model: "Macro-F1 модели", run_detail: "Запуск", run_open_mlflow: "открыть в MLflow UI",
    run_verdict: "Вердикт (парный интервал, docs/evaluation.md)", verdict_beats: "лучше, чем", verdict_nd: "неотличима от",
    verdict_worse: "хуже, чем", verdict_none: "нет вердикта (запуск до оценки)", no_skill: "не лучше persistence: не торгуйте на ней",
    run_confusion: "Матрица ошибок (тестовая выборка, строки = истинный класс)", details: "подробнее", no_runs: "Запусков пока нет.",
    started: "Задача {id} запущена", invalid: "Неверные параметры:", busy: "Уже выполняется другая задача: {msg}",
    unauthorized: "Токен отклонён: введите его ещё раз.", mlflow_run: "Запуск MLflow", lang_label: "Язык"
  }
};
// The page's language: the user's choice in this browser, else the server's --lang ru,
// else the browser's own language (Russian when it starts with "ru"), else English.
window.pageLang = function (serverLang) {
  const chosen = localStorage.getItem("lobbot_lang");
  if (chosen && window.I18N[chosen]) return chosen;
  if (serverLang === "ru") return "ru";
  return (navigator.language || "").toLowerCase().startsWith("ru") ? "ru" : "en";
};
window.t = function (key, vars) {
  const lang = document.documentElement.lang || "en";
  let s = (window.I18N[lang] && window.I18N[lang][key]) || window.I18N.en[key] || key;
  for (const [k, v] of Object.entries(vars || {})) s = s.split("{" + k + "}").join(String(v));
  return s;
};
