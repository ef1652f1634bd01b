/* BenchKit dashboard: one uPlot chart per metric, fed by server-side buckets.
 *
 * The server answers /ui/data/chart with at most `n` buckets per run (last, min and max of each
 * bucket), so a chart costs the same for a hundred points as for a million. Zooming (drag over
 * the chart) asks the server again for the zoomed step range, which it re-buckets: the detail
 * comes from the server, never from thinning what the browser holds. Double-click zooms out.
 * Smoothing (EMA with TensorBoard's debiasing), log scale and step/time on the x axis only
 * change how the fetched buckets are drawn. Text goes into the page with textContent only.
 *
 * window.__charts lists the live charts ({key, runs, uplot, drawnPoints()}) for tests.
 */
(function () {
  "use strict";

  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];
  const charts = [];
  window.__charts = charts;

  function color(i) { return PALETTE[i % PALETTE.length]; }

  function withAlpha(hex, alpha) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
  }

  /* Exponential moving average, debiased as TensorBoard does, skipping gaps (null). */
  function ema(values, weight) {
    if (!weight) return values;
    const out = new Array(values.length);
    let last = 0, n = 0;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v === null || !Number.isFinite(v)) { out[i] = null; continue; }
      last = last * weight + (1 - weight) * v;
      n++;
      out[i] = last / (1 - Math.pow(weight, n));
    }
    return out;
  }

  function positiveOnly(values) {
    return values.map((v) => (v !== null && v > 0 ? v : null));
  }

  function fmtNumber(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "string") return v;  // NaN / Infinity as the server tags them
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(3);
    return Number(v.toPrecision(5)).toString();
  }

  /* One chart: a metric of one or several runs. */
  class MetricChart {
    constructor(root, opts) {
      this.root = root;
      this.key = opts.key;
      this.runs = opts.runs;            // [{id, name}]
      this.settings = opts.settings;    // {xMode, smoothing, log}
      this.dataUrl = opts.dataUrl;      // base URL of the chart data
      this.range = null;                // null: the whole run; else [step0, step1]
      this.series = [];                 // the server's answer, one entry per run
      this.uplot = null;
      this.loads = 0;                   // answers drawn so far (tests wait on it)
      this.build();
      charts.push(this);
    }

    build() {
      const box = document.createElement("section");
      box.className = "chart";
      const head = document.createElement("header");
      const title = document.createElement("h3");
      title.textContent = this.key;
      this.info = document.createElement("span");
      this.info.className = "chart-info";
      const reset = document.createElement("button");
      reset.type = "button";
      reset.className = "link";
      reset.textContent = "zoom out";
      reset.addEventListener("click", () => this.zoom(null));
      this.resetButton = reset;
      reset.hidden = true;
      head.append(title, this.info, reset);
      this.plotBox = document.createElement("div");
      this.plotBox.className = "plot";
      box.append(head, this.plotBox);
      this.root.append(box);
      this.box = box;
    }

    width() {
      return Math.max(320, Math.floor(this.box.clientWidth || 600) - 8);
    }

    url() {
      const q = new URLSearchParams();
      q.set("key", this.key);
      for (const r of this.runs) q.append("run", r.id);
      q.set("n", String(Math.min(2000, this.width())));
      if (this.range) { q.set("x0", String(this.range[0])); q.set("x1", String(this.range[1])); }
      return `${this.dataUrl}?${q.toString()}`;
    }

    async load() {
      const resp = await fetch(this.url(), { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!resp.ok) {
        this.info.textContent = `could not load (${resp.status})`;
        return;
      }
      const body = await resp.json();
      this.series = body.series;
      this.render();
      this.loads++;
    }

    zoom(range) {
      this.range = range;
      this.resetButton.hidden = range === null;
      return this.load();
    }

    /* uPlot's aligned data from the fetched buckets and the display settings. */
    data() {
      const { xMode, smoothing, log } = this.settings;
      const single = this.series.length === 1;
      const tables = this.series.map((s) => {
        const xs = xMode === "time" ? s.time : s.x;
        let last = s.last;
        if (log) last = positiveOnly(last);
        const cols = [xs];
        if (smoothing > 0) cols.push(ema(last, smoothing));
        cols.push(last);
        if (single) {
          cols.push(log ? positiveOnly(s.min) : s.min, log ? positiveOnly(s.max) : s.max);
        }
        return cols;
      });
      if (tables.length === 0) return [[]];
      return tables.length === 1 ? tables[0] : uPlot.join(tables);
    }

    options() {
      const { xMode, smoothing, log } = this.settings;
      const single = this.series.length === 1;
      const series = [{ label: xMode === "time" ? "time" : "step", value: (u, v) => (v === null ? "–" : xMode === "time" ? new Date(v * 1000).toLocaleString() : String(v)) }];
      const bands = [];
      this.series.forEach((s, i) => {
        const c = color(i);
        const name = single ? this.key : (s.name || s.run);
        if (smoothing > 0) {
          series.push({ label: name, stroke: c, width: 2, spanGaps: !single, value: (u, v) => fmtNumber(v) });
          series.push({ label: `${name} (raw)`, stroke: withAlpha(c, 0.3), width: 1, spanGaps: !single, value: (u, v) => fmtNumber(v) });
        } else {
          series.push({ label: name, stroke: c, width: 1.5, spanGaps: !single, value: (u, v) => fmtNumber(v) });
        }
        if (single) {
          const base = series.length;
          series.push({ label: "min", stroke: withAlpha(c, 0.15), width: 1, value: (u, v) => fmtNumber(v) });
          series.push({ label: "max", stroke: withAlpha(c, 0.15), width: 1, value: (u, v) => fmtNumber(v) });
          bands.push({ series: [base + 1, base], fill: withAlpha(c, 0.12) });
        }
      });
      return {
        width: this.width(),
        height: 260,
        series,
        bands,
        scales: { x: { time: xMode === "time" }, y: log ? { distr: 3 } : {} },
        cursor: { drag: { x: true, y: false, setScale: false } },
        legend: { live: true },
        hooks: {
          setSelect: [(u) => this.onSelect(u)],
          ready: [(u) => u.over.addEventListener("dblclick", () => this.zoom(null))],
        },
      };
    }

    onSelect(u) {
      const sel = u.select;
      if (sel.width < 4) return;
      let a = u.posToVal(sel.left, "x");
      let b = u.posToVal(sel.left + sel.width, "x");
      u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
      const range = this.toSteps(a, b);
      if (range) this.zoom(range);
    }

    /* A step range from an x range (steps, or times mapped through the buckets' times). */
    toSteps(a, b) {
      if (this.settings.xMode !== "time") {
        const lo = Math.floor(a), hi = Math.ceil(b);
        return hi > lo ? [Math.max(0, lo), hi] : null;
      }
      let lo = Infinity, hi = -Infinity;
      for (const s of this.series) {
        s.time.forEach((t, i) => {
          if (t >= a && t <= b) { lo = Math.min(lo, s.x[i]); hi = Math.max(hi, s.x[i]); }
        });
      }
      return hi > lo ? [lo, hi] : null;
    }

    render() {
      const data = this.data();
      const points = this.series.reduce((n, s) => n + (s.points || 0), 0);
      const tier = this.series.length ? Math.max(...this.series.map((s) => s.tier || 1)) : 1;
      this.info.textContent = `${points.toLocaleString()} points` +
        (tier > 1 ? `, ${data[0].length} buckets` : "") +
        (this.series.some((s) => s.nonfinite && s.nonfinite.length) ? ", has NaN/Inf" : "");
      if (this.uplot) this.uplot.destroy();
      this.plotBox.replaceChildren();
      this.uplot = new uPlot(this.options(), data, this.plotBox);
    }

    /* How many non-null values the chart draws (tests read it). */
    drawnPoints() {
      if (!this.uplot) return 0;
      let n = 0;
      for (let i = 1; i < this.uplot.data.length; i++) {
        for (const v of this.uplot.data[i]) if (v !== null && v !== undefined) n++;
      }
      return n;
    }

    destroy() {
      if (this.uplot) this.uplot.destroy();
      this.box.remove();
      const i = charts.indexOf(this);
      if (i >= 0) charts.splice(i, 1);
    }
  }

  window.BenchCharts = { MetricChart, ema, fmtNumber, charts };
})();
