/* BenchKit dashboard pages: the run page and the comparison page draw their charts here; the
 * runs table, sorting, filtering and the comparison form work without JavaScript.
 *
 * What a page needs comes in <script type="application/json" id="page-data"> (JSON, never
 * run); everything user-supplied goes into the page with textContent.
 */
(function () {
  "use strict";

  const POLL_MS = 5000;

  function pageData() {
    const el = document.getElementById("page-data");
    return el ? JSON.parse(el.textContent) : {};
  }

  function settingsFromControls() {
    const x = document.getElementById("x-mode");
    const sm = document.getElementById("smoothing");
    const lg = document.getElementById("log-scale");
    return {
      xMode: x ? x.value : "step",
      smoothing: sm ? Number(sm.value) : 0,
      log: lg ? lg.checked : false,
    };
  }

  function wireControls(charts, settings) {
    const update = () => {
      Object.assign(settings, settingsFromControls());
      const label = document.getElementById("smoothing-value");
      if (label) label.textContent = settings.smoothing.toFixed(2);
      for (const c of charts) c.render();
    };
    for (const id of ["x-mode", "smoothing", "log-scale"]) {
      const el = document.getElementById(id);
      if (el) el.addEventListener("input", update);
    }
    update();
  }

  function setText(id, text) {
    const el = document.getElementById(id);
    if (el) el.textContent = text;
  }

  function appendLog(lines) {
    const log = document.getElementById("run-log");
    if (!log || !lines.length) return;
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    for (const line of lines) {
      const row = document.createElement("div");
      const t = document.createElement("time");
      t.textContent = new Date(line.t * 1000).toLocaleTimeString();
      const text = document.createElement("span");
      text.textContent = line.text;
      row.append(t, " ", text);
      log.append(row);
    }
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function updateSummaries(summaries) {
    for (const [key, s] of Object.entries(summaries)) {
      const row = document.querySelector(`tr[data-metric="${CSS.escape(key)}"]`);
      if (!row) continue;
      for (const f of ["last", "min", "max", "count"]) {
        const cell = row.querySelector(`[data-field="${f}"]`);
        if (cell) cell.textContent = BenchCharts.fmtNumber(s[f]);
      }
    }
  }

  function makeCharts(root, keys, runs, settings, dataUrl) {
    return keys.map((key) => new BenchCharts.MetricChart(root, { key, runs, settings, dataUrl }));
  }

  async function loadAll(charts) {
    await Promise.all(charts.map((c) => c.load()));
    document.body.dataset.chartsReady = "1";
  }

  function runPage(data) {
    const settings = settingsFromControls();
    const root = document.getElementById("charts");
    const runs = [{ id: data.run.id, name: data.run.name }];
    let charts = makeCharts(root, data.keys, runs, settings, data.chartUrl);
    wireControls(charts, settings);
    loadAll(charts);
    let lastLog = data.lastLogTime;
    let status = data.run.status;
    const poll = async () => {
      if (status !== "running") return;
      const resp = await fetch(data.runUrl + (lastLog ? `?log_after=${lastLog}` : ""), { credentials: "same-origin" });
      if (resp.ok) {
        const run = await resp.json();
        status = run.status;
        setText("run-status", run.status);
        document.getElementById("run-status")?.setAttribute("data-status", run.status);
        updateSummaries(run.summaries);
        appendLog(run.log);
        if (run.log.length) lastLog = run.log[run.log.length - 1].t;
        const known = new Set(charts.map((c) => c.key));
        const fresh = Object.keys(run.summaries).filter((k) => !known.has(k));
        charts = charts.concat(makeCharts(root, fresh, runs, settings, data.chartUrl));
        await Promise.all(charts.filter((c) => c.range === null).map((c) => c.load()));
      }
      if (status === "running") setTimeout(poll, POLL_MS);
    };
    setTimeout(poll, POLL_MS);
  }

  function comparePage(data) {
    const settings = settingsFromControls();
    const root = document.getElementById("charts");
    const charts = makeCharts(root, data.keys, data.runs, settings, data.chartUrl);
    wireControls(charts, settings);
    loadAll(charts);
    const poll = async () => {
      await Promise.all(charts.filter((c) => c.range === null).map((c) => c.load()));
      setTimeout(poll, POLL_MS);
    };
    if (data.runs.some((r) => r.status === "running")) setTimeout(poll, POLL_MS);
  }

  const LIVE_COLUMNS = /^(status|duration|best|metric\..*)$/;

  function updateRow(row, cells) {
    for (const [col, v] of Object.entries(cells)) {
      if (!LIVE_COLUMNS.test(col)) continue;
      const cell = row.querySelector(`td[data-col="${CSS.escape(col)}"]`);
      if (!cell) continue;
      if (col === "status") {
        const badge = cell.querySelector(".status");
        badge.textContent = v;
        badge.dataset.status = v;
      } else {
        cell.textContent = BenchCharts.fmtNumber(v);
      }
    }
  }

  function runsPage(data) {
    // "compare" needs two runs or more; the rest of the table is plain HTML
    const form = document.getElementById("compare-form");
    if (!form) return;
    const button = form.querySelector("button[type=submit]");
    const update = () => {
      const n = form.querySelectorAll("input[name=run]:checked").length;
      button.disabled = n < 2;
      button.textContent = n < 2 ? "select two runs or more to compare" : `compare ${n} runs`;
    };
    form.addEventListener("change", update);
    update();
    // while a run is running, its status and metrics are kept up to date
    const running = () => document.querySelector("#runs-table .status[data-status=running]");
    const poll = async () => {
      if (!running()) return;
      const resp = await fetch(`${data.tableUrl}?${new URLSearchParams(data.query)}`, { credentials: "same-origin" });
      if (resp.ok) {
        const table = await resp.json();
        let fresh = 0;
        for (const run of table.runs) {
          const row = document.querySelector(`#runs-table tr[data-run="${CSS.escape(run.id)}"]`);
          if (row) updateRow(row, run.cells);
          else fresh++;
        }
        const news = document.getElementById("runs-news");
        news.hidden = fresh === 0;
        news.textContent = `${fresh} new run(s) since this page was loaded: reload to see them`;
        document.body.dataset.tableUpdates = String(Number(document.body.dataset.tableUpdates || 0) + 1);
      }
      setTimeout(poll, POLL_MS);
    };
    setTimeout(poll, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    const data = pageData();
    if (page === "run") runPage(data);
    else if (page === "compare") comparePage(data);
    else if (page === "runs") runsPage(data);
  });
})();
