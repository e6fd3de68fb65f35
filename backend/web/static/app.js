// The page: reads only the JSON API of the server it came from (no data path of its own).
"use strict";
(function () {
  const $ = (sel) => document.querySelector(sel);
  const TOKEN_KEY = "lobbot_api_token";
  const state = { config: null, data: null, job: null, epochPlot: null, runPlot: null, balancePlot: null };

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "style") e.style.cssText = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
    return e;
  }
  function say(text) { $("#message").textContent = text || ""; }
  function fmt(x, d) { return x == null || Number.isNaN(x) ? "–" : Number(x).toFixed(d == null ? 3 : d); }
  function bytes(n) {
    if (n == null) return "–";
    const u = ["B", "KB", "MB", "GB", "TB"]; let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + " " + u[i];
  }
  function token() { return sessionStorage.getItem(TOKEN_KEY); }
  function askToken() { $("#token-box").hidden = false; say(t("token_needed")); $("#token-input").focus(); }

  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (token()) headers["Authorization"] = "Bearer " + token();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (resp.status === 401) { sessionStorage.removeItem(TOKEN_KEY); askToken(); say(t("unauthorized")); }
    return { status: resp.status, data };
  }

  function translate() {
    document.documentElement.lang = window.pageLang(state.config && state.config.lang);
    $("#lang-switch").value = document.documentElement.lang;
    document.querySelectorAll("[data-i18n]").forEach((e) => { e.textContent = t(e.getAttribute("data-i18n")); });
    document.title = t("title");
  }

  // --- collector ------------------------------------------------------------------------
  function reasons(obj) {
    const keys = Object.keys(obj || {}).sort();
    return keys.length ? keys.map((k) => k + "=" + obj[k]).join(", ") : "0";
  }
  function renderCollector(c) {
    state.collector = c;
    const st = $("#collector-state");
    if (!c.bot) { st.textContent = t("no_bot"); st.className = "state"; }
    else {
      let s = t("bot_state", { source: c.source, state: c.source_state, health: c.health });
      if (c.warmup) s += " (" + t("warmup", { done: c.warmup[0], need: c.warmup[1] }) + ")";
      st.textContent = s; st.className = "state " + c.health;
    }
    const dl = $("#collector-summary"); dl.replaceChildren();
    const offs = Object.entries(c.clock_offset_s || {}).map(([k, v]) => k + " " + fmt(v, 3) + " s").join(", ") || "–";
    const items = [[t("ticks"), c.ticks], [t("overruns"), c.tick_overruns],
      [t("loop_lag"), c.loop_lag.p99_le_s == null ? "–" : fmt(c.loop_lag.p99_le_s * 1000, 1) + " ms"],
      [t("spool"), bytes(c.spool_bytes)], [t("buffers"), bytes(c.buffer_bytes)], [t("clock"), offs],
      [t("reconnects"), reasons(c.reconnects)]];
    for (const [k, v] of items) dl.append(el("dt", {}, k), el("dd", {}, v));
    // one group of rows per venue, headed by that venue's own counters
    const tb = $("#collector-table tbody"); tb.replaceChildren();
    const venues = c.venues || {};
    const order = Object.keys(venues);
    for (const s of c.symbols) if (!order.includes(s.venue || "")) order.push(s.venue || "");
    for (const v of order) {
      const rows = c.symbols.filter((s) => (s.venue || "") === v);
      const info = venues[v];
      if (info) {
        const off = info.clock_offset_s == null ? "–" : fmt(info.clock_offset_s, 3) + " s";
        tb.append(el("tr", { class: "venue", "data-venue": v }, el("th", { colspan: "7" }, t("venue_line", {
          venue: v, n: rows.length, r: info.reconnects, s: info.resyncs, t: info.retries, o: off, f: reasons(info.faults) }))));
      }
      for (const s of rows) {
        tb.append(el("tr", { "data-symbol": s.symbol, "data-venue": v }, el("td", {}, s.symbol), el("td", { class: "venue" }, v || "–"),
          el("td", {}, fmt(s.book_age_s, 1)), el("td", { class: "samples" }, s.samples), el("td", {}, s.last_sample || "–"),
          el("td", {}, reasons(s.skipped)), el("td", {}, reasons(s.rejected))));
      }
    }
  }

  // --- live events (SSE read through fetch so the token can travel in a header) ------------
  async function events() {
    for (;;) {
      try {
        const headers = token() ? { "Authorization": "Bearer " + token() } : {};
        const resp = await fetch("/api/events", { headers });
        if (!resp.ok || !resp.body) throw new Error("events " + resp.status);
        const reader = resp.body.getReader(); const dec = new TextDecoder(); let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const chunk = buf.slice(0, i); buf = buf.slice(i + 2);
            let ev = "message", data = "";
            for (const line of chunk.split("\n")) {
              if (line.startsWith("event: ")) ev = line.slice(7); else if (line.startsWith("data: ")) data += line.slice(6);
            }
            const obj = JSON.parse(data);
            if (ev === "collector") renderCollector(obj);
            else if (ev === "job" && obj) renderJob(obj);
          }
        }
      } catch (e) { /* server restarting: retry below */ }
      await new Promise((r) => setTimeout(r, 2000));
    }
  }

  // --- data -------------------------------------------------------------------------------
  async function loadData() {
    const group = $("#data-group").value || (state.config && state.config.feature_group) || "training_features";
    const { status, data } = await api("GET", "/api/data?group=" + encodeURIComponent(group));
    if (status !== 200) { say(data && data.error); return; }
    state.data = data; renderData(data);
  }
  function heatColor(v, max) {
    if (!v) return "#eef1f4";
    const x = Math.max(0.15, v / max);
    return "rgba(19, 121, 91, " + x.toFixed(2) + ")";
  }
  function renderData(d) {
    const sel = $("#data-group");
    if (!sel.options.length || sel.options.length !== (d.groups || []).length) {
      sel.replaceChildren(...(d.groups || [d.group]).map((g) => el("option", g === d.group ? { selected: "" } : {}, g)));
    }
    const dl = $("#data-summary"); dl.replaceChildren();
    const items = [[t("rows"), d.total_rows.toLocaleString("en")], [t("files"), d.files], [t("size"), bytes(d.bytes)],
      [t("versions"), d.feature_versions.join(", ") || "–"], [t("first"), d.first || "–"], [t("last"), d.last || "–"],
      [t("audit_time"), fmt(d.seconds * 1000, 0) + " ms"]];
    const skipped = d.skipped_files || [];
    if (skipped.length) items.push([t("skipped_files"), skipped.length]);
    for (const [k, v] of items) dl.append(el("dt", {}, k), el("dd", {}, v));
    // files not counted (unreadable, another schema): each named with the reason
    const sk = $("#data-skipped"); sk.hidden = !skipped.length;
    sk.replaceChildren(...skipped.map((f) => el("li", { "data-path": f.path }, f.path + ": " + f.reason)));
    // heat map: one row per symbol, one cell per day
    const hm = $("#heatmap"); hm.replaceChildren();
    if (!d.total_rows) { hm.append(el("tr", {}, el("td", {}, t("empty_store")))); }
    else {
      let max = 1;
      for (const s of d.symbols) for (const day of d.days) max = Math.max(max, d.rows[s][day] || 0);
      const head = el("tr", {}, el("th", {}, ""));
      d.days.forEach((day, i) => head.append(el("th", { title: day }, i % 7 === 0 ? day.slice(5) : "")));
      hm.append(head);
      for (const s of d.symbols) {
        const tr = el("tr", { "data-symbol": s }, el("th", {}, s));
        for (const day of d.days) {
          const n = d.rows[s][day] || 0;
          tr.append(el("td", { "data-day": day, "data-rows": n, title: s + " " + day + ": " + n, style: "background:" + heatColor(n, max) }));
        }
        hm.append(tr);
      }
    }
    const cov = $("#coverage"); cov.replaceChildren(el("tr", {}, el("th", {}, t("coverage_h")), el("th", {}, t("coverage_share"))));
    for (const [h, v] of Object.entries(d.label_coverage)) cov.append(el("tr", { "data-horizon": h }, el("td", {}, h + " s"), el("td", {}, v == null ? "–" : (v * 100).toFixed(1) + " %")));
    const hs = $("#balance-horizon");
    const keys = Object.keys(d.class_balance);
    if (hs.options.length !== keys.length) hs.replaceChildren(...keys.map((h) => el("option", {}, h)));
    renderBalance();
    $("#gaps-note").textContent = d.gap_count ? t("gaps_some", { n: d.gap_count, f: d.gap_factor }) : t("gaps_none", { f: d.gap_factor });
    const gb = $("#gaps tbody"); gb.replaceChildren();
    for (const g of d.gaps) gb.append(el("tr", { "data-symbol": g.symbol }, el("td", {}, g.symbol), el("td", {}, g.start), el("td", {}, g.end), el("td", {}, fmt(g.seconds, 0)), el("td", {}, g.missing_samples)));
  }
  function renderBalance() {
    const d = state.data; const box = $("#balance-chart");
    if (state.balancePlot) { state.balancePlot.destroy(); state.balancePlot = null; }
    box.replaceChildren();
    const h = $("#balance-horizon").value; if (!d || !h || !d.class_balance[h]) return;
    const days = Object.keys(d.class_balance[h]).sort(); if (!days.length) return;
    const xs = days.map((day) => Date.parse(day + "T00:00:00Z") / 1000);
    const share = (i) => days.map((day) => { const c = d.class_balance[h][day]; const n = c[0] + c[1] + c[2] + c[3]; return n ? c[i] / n : null; });
    const names = d.class_names;
    state.balancePlot = new uPlot({ width: Math.min(900, box.clientWidth || 900), height: 220, scales: { y: { range: [0, 1] } },
      series: [{}, { label: names[0], stroke: "#b3261e" }, { label: names[1], stroke: "#6b7785" }, { label: names[2], stroke: "#13795b" }, { label: names[3], stroke: "#c9a227", dash: [4, 4] }] },
      [xs, share(0), share(1), share(2), share(3)], box);
  }

  // --- jobs ---------------------------------------------------------------------------------
  function formBody(form) {
    const body = {};
    for (const inp of form.querySelectorAll("input, select")) {
      if (inp.type === "checkbox") { if (inp.checked) body[inp.name] = true; continue; }
      const v = inp.value.trim(); if (v === "") continue;
      body[inp.name] = (inp.type === "number" || inp.tagName === "SELECT") && /^-?\d+$/.test(v) ? Number(v) : v;
    }
    return body;
  }
  async function startJob(kind, form) {
    if (!token()) { askToken(); return; }
    const { status, data } = await api("POST", "/api/" + kind, formBody(form));
    if (status === 202) { say(t("started", { id: data.job_id })); pollJob(kind, data.job_id); }
    else if (status === 400) say(t("invalid") + " " + Object.entries(data.fields || {}).map(([k, v]) => k + ": " + v).join("; "));
    else if (status === 409) say(t("busy", { msg: data.error }));
    else if (data && data.error) say(data.error);
  }
  async function pollJob(kind, id) {
    for (;;) {
      const { status, data } = await api("GET", "/api/" + kind + "/" + id);
      if (status !== 200) return;
      renderJob(data);
      if (!["queued", "running"].includes(data.state)) { loadRuns(); if (kind === "labelling") loadData(); return; }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  function renderJob(j) {
    state.job = j; $("#job").hidden = false;
    $("#job-kind").textContent = j.kind; $("#job-id").textContent = j.job_id; $("#job-state").textContent = j.state;
    $("#job-epoch").textContent = j.epochs ? j.epoch + " / " + j.epochs : (j.epoch || "–");
    const pr = $("#job-progress"); pr.max = j.epochs || 1; pr.value = j.epochs ? j.epoch : (j.state === "succeeded" ? 1 : 0);
    $("#job-run").textContent = j.mlflow_run_id ? t("mlflow_run") + ": " + j.mlflow_run_id : "";
    $("#job-cancel").hidden = !["queued", "running"].includes(j.state);
    $("#job-error").textContent = j.state === "failed" ? (j.error || "") : "";
    const log = $("#job-log"); log.textContent = j.log_tail || ""; log.scrollTop = log.scrollHeight;
    const box = $("#epoch-chart");
    if (j.kind !== "training" || !j.metrics.length) { if (state.epochPlot) { state.epochPlot.destroy(); state.epochPlot = null; } box.replaceChildren(); return; }
    const m = j.metrics;
    const data = [m.map((r) => r.epoch), m.map((r) => r.train_loss), m.map((r) => r.val_loss), m.map((r) => r.val_macro_f1)];
    box.setAttribute("data-epochs", String(m.length));
    if (state.epochPlot && state.epochPlot._job === j.job_id) { state.epochPlot.setData(data); return; }
    if (state.epochPlot) state.epochPlot.destroy();
    box.replaceChildren();
    state.epochPlot = curvePlot(box, data, ["train_loss", "val_loss", "val_macro_f1"]);
    state.epochPlot._job = j.job_id;
  }
  function curvePlot(box, data, names) {
    const colors = ["#1f6feb", "#d2691e", "#13795b", "#8250df"];
    return new uPlot({ width: Math.min(900, box.clientWidth || 900), height: 240, scales: { x: { time: false }, f1: { range: [0, 1] } },
      axes: [{ label: "epoch" }, {}, { scale: "f1", side: 1, grid: { show: false } }],
      series: [{ label: "epoch" }].concat(names.map((n, i) => ({ label: n, stroke: colors[i], scale: n.includes("f1") || n.includes("acc") ? "f1" : "y" }))) },
      data, box);
  }

  // --- runs -----------------------------------------------------------------------------------
  // The run's verdicts grouped as the console prints them: "beats majority; not distinguishable from
  // persistence, logreg", and the persistence warning (full text on hover) when the run has one.
  const VERDICT_KEYS = [["beats", "verdict_beats"], ["not distinguishable from", "verdict_nd"], ["worse than", "verdict_worse"]];
  const BASELINE_ORDER = ["majority", "persistence", "logreg"];
  function verdictCell(r) {
    const v = r.verdicts || {};
    const names = Object.keys(v).sort((a, b) => (BASELINE_ORDER.indexOf(a) + 1 || 99) - (BASELINE_ORDER.indexOf(b) + 1 || 99) || a.localeCompare(b));
    const groups = VERDICT_KEYS.map(([phrase, key]) => [key, names.filter((n) => v[n] === phrase)])
      .filter(([, ns]) => ns.length).map(([key, ns]) => t(key) + " " + ns.join(", "));
    const td = el("td", { class: "verdict" + (r.warning ? " warn" : "") }, groups.join("; ") || (names.length ? "" : t("verdict_none")));
    if (r.warning) { td.title = r.warning; td.append(el("div", { class: "warning" }, "⚠ " + t("no_skill"))); }
    return td;
  }
  async function loadRuns() {
    const { status, data } = await api("GET", "/api/runs");
    const tb = $("#runs tbody"); tb.replaceChildren();
    if (status !== 200) { tb.append(el("tr", {}, el("td", { colspan: 10 }, data && data.error))); return; }
    if (!data.length) { tb.append(el("tr", {}, el("td", { colspan: 10 }, t("no_runs")))); return; }
    for (const r of data) {
      const m = r.metrics; const f1 = m.test_macro_f1;
      const base = (n) => {
        const td = el("td", { class: "baseline-" + n }, fmt(m["baseline_" + n + "_macro_f1"]));
        if (r.verdicts && r.verdicts[n]) td.setAttribute("data-verdict", r.verdicts[n]);
        return td;
      };
      // green only when the evaluation says "beats" against every baseline (a paired interval
      // above zero), never from the bare point estimates (docs/evaluation.md)
      const v = r.verdicts || {}; const names = Object.keys(v);
      const best = f1 != null && names.length > 0 && names.every((n) => v[n] === "beats");
      const btn = el("button", { type: "button" }, t("details"));
      btn.addEventListener("click", () => loadRun(r.run_id));
      tb.append(el("tr", { "data-run": r.run_id }, el("td", {}, el("code", {}, r.run_id.slice(0, 8))), el("td", {}, r.start_time || ""),
        el("td", {}, r.status), el("td", {}, r.params.horizon_s || ""), el("td", { class: "model" + (best ? " best" : "") }, fmt(f1)),
        base("majority"), base("persistence"), base("logreg"), verdictCell(r), el("td", {}, btn)));
    }
  }
  async function loadRun(id) {
    const { status, data } = await api("GET", "/api/runs/" + id);
    if (status !== 200) { say(data && data.error); return; }
    $("#run-detail").hidden = false; $("#run-detail-id").textContent = id;
    const link = $("#run-link");
    if (state.config && state.config.mlflow_ui_url) { link.href = state.config.mlflow_ui_url + "/#/experiments/-/runs/" + id; link.hidden = false; }
    const c = data.curves; const steps = (c.val_macro_f1 || []).map((p) => p[0]);
    const col = (n) => { const mp = new Map((c[n] || []).map((p) => [p[0], p[1]])); return steps.map((s) => mp.has(s) ? mp.get(s) : null); };
    const box = $("#run-chart"); if (state.runPlot) state.runPlot.destroy(); box.replaceChildren();
    if (steps.length) state.runPlot = curvePlot(box, [steps, col("train_loss"), col("val_loss"), col("val_macro_f1"), col("val_accuracy")], ["train_loss", "val_loss", "val_macro_f1", "val_accuracy"]);
    const tbl = $("#confusion"); tbl.replaceChildren();
    if (data.confusion) {
      const L = data.confusion.labels;
      tbl.append(el("tr", {}, el("th", {}, ""), ...L.map((l) => el("th", {}, l))));
      data.confusion.matrix.forEach((row, i) => tbl.append(el("tr", {}, el("th", {}, L[i]), ...row.map((v) => el("td", {}, v)))));
    }
  }

  // --- live model (GET /api/live) ------------------------------------------------------------------
  const CLASS = ["DOWN", "NEUTRAL", "UP"];
  function utc(ms) { return new Date(ms).toISOString().replace("T", " ").slice(0, 19); }
  function linePlot(box, key, series, data, range) {
    if (state[key]) { state[key].destroy(); state[key] = null; }
    box.replaceChildren();
    if (!data[0].length) return;
    const opts = { width: Math.min(900, box.clientWidth || 900), height: 200, scales: { x: { time: true } },
      series: [{}].concat(series), axes: [{}, {}] };
    if (range) opts.scales.y = { range: range };
    state[key] = new uPlot(opts, data, box);
  }
  function renderLive(v) {
    const st = $("#live-state");
    if (!v || !v.loaded) { st.textContent = t("live_none"); $("#live-body").hidden = true; return; }
    st.textContent = t("live_loaded", { uri: v.model_uri, h: v.horizon_s, L: v.sequence_length == null ? "?" : v.sequence_length });
    if (v.source === "store") st.append(el("br", {}), el("span", { id: "live-source", "data-source": "store" }, t("live_stored", { since: v.since })));
    $("#live-body").hidden = false;
    const roll = v.rolling_macro_f1 || [];
    const last = roll.length ? roll[roll.length - 1].macro_f1 : null;
    const p = v.paper || {};
    const items = [
      ["live_predictions", v.predictions], ["live_labelled", v.labelled], ["live_accuracy", fmt(v.live_accuracy)],
      ["live_macro_f1", fmt(last)], ["test_macro_f1", fmt(v.test_macro_f1)],
      ["test_persistence", fmt((v.baselines || {}).persistence)],
      ["paper_gross", fmt(p.gross_pnl, 2)], ["paper_net", fmt(p.net_pnl, 2)], ["paper_fees", fmt(p.fees, 2)],
      ["paper_fills", p.fills], ["paper_hit", p.hit_rate == null ? "–" : fmt(100 * p.hit_rate, 1) + " %"],
      ["paper_dd", fmt(p.max_drawdown_net, 2)],
    ];
    const dl = $("#live-summary"); dl.replaceChildren();
    for (const [k, val] of items) dl.append(el("dt", { "data-key": k }, t(k)), el("dd", { "data-key": k }, val));
    const testF1 = v.test_macro_f1 == null ? null : v.test_macro_f1;
    linePlot($("#live-f1-chart"), "liveF1Plot",
      [{ label: t("live_macro_f1"), stroke: "#1f6feb" }, { label: t("test_macro_f1"), stroke: "#999", dash: [6, 4] }],
      [roll.map((r) => r.ts / 1000), roll.map((r) => r.macro_f1), roll.map(() => testF1)], [0, 1]);
    const eq = v.equity || [];
    linePlot($("#live-equity-chart"), "liveEquityPlot",
      [{ label: t("paper_gross"), stroke: "#2da44e" }, { label: t("paper_net"), stroke: "#cf222e" }],
      [eq.map((e) => e.ts / 1000), eq.map((e) => e.gross), eq.map((e) => e.net)]);
    const tb = $("#live-preds tbody"); tb.replaceChildren();
    for (const r of (v.recent || []).slice().reverse().slice(0, 20)) {
      const ok = r.realised == null ? "" : (r.realised === r.direction ? "ok" : "miss");
      tb.append(el("tr", { class: ok }, el("td", {}, utc(r.ts)), el("td", {}, r.symbol), el("td", {}, fmt(r.prob[0])),
        el("td", {}, fmt(r.prob[1])), el("td", {}, fmt(r.prob[2])), el("td", {}, CLASS[r.direction]),
        el("td", {}, r.realised == null ? t("pending") : CLASS[r.realised])));
    }
  }
  async function loadLive() {
    const r = await api("GET", "/api/live");
    if (r.status === 200) renderLive(r.data);
  }

  // --- wiring -----------------------------------------------------------------------------------
  async function init() {
    const { status, data } = await api("GET", "/api/config");
    state.config = status === 200 ? data : { lang: "en", feature_group: "training_features" };
    // bound beyond loopback every read needs the token: the page loads its data once it has one
    const locked = status === 401;
    translate();
    if (!token()) $("#token-box").hidden = false;
    $("#token-save").addEventListener("click", () => {
      const v = $("#token-input").value.trim();
      if (v) { sessionStorage.setItem(TOKEN_KEY, v); $("#token-input").value = ""; $("#token-box").hidden = true; say(""); }
      if (v && locked) location.reload();
    });
    $("#train-form").addEventListener("submit", (e) => { e.preventDefault(); startJob("training", e.target); });
    $("#label-form").addEventListener("submit", (e) => { e.preventDefault(); startJob("labelling", e.target); });
    $("#job-cancel").addEventListener("click", async () => {
      if (!state.job) return;
      if (!token()) { askToken(); return; }
      const r = await api("DELETE", "/api/" + state.job.kind + "/" + state.job.job_id);
      if (r.status === 200) renderJob(r.data);
    });
    $("#lang-switch").addEventListener("change", (e) => {
      localStorage.setItem("lobbot_lang", e.target.value);
      translate();
      if (state.collector) renderCollector(state.collector);
      if (state.data) renderData(state.data);
      loadRuns();
      loadLive();
    });
    $("#data-refresh").addEventListener("click", loadData);
    $("#data-group").addEventListener("change", loadData);
    $("#balance-horizon").addEventListener("change", renderBalance);
    $("#runs-refresh").addEventListener("click", loadRuns);
    if (locked) { askToken(); say(t("token_needed_reads")); document.body.setAttribute("data-ready", "1"); return; }  // nothing to read yet
    const c = await api("GET", "/api/collector"); if (c.status === 200) renderCollector(c.data);
    events();
    await loadData();
    await loadRuns();
    await loadLive();
    setInterval(loadLive, 5000);
    const jobs = await api("GET", "/api/training");
    if (jobs.status === 200 && jobs.data.length && ["queued", "running"].includes(jobs.data[0].state)) pollJob("training", jobs.data[0].job_id);
    document.body.setAttribute("data-ready", "1");
  }
  init();
})();
