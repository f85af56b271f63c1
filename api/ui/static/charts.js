// Small interactive SVG line charts: linear or log axes, a legend that hides and shows series,
// and a crosshair that reads out the nearest values. No dependencies.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2",
                   "#db2777", "#65a30d", "#475569", "#ea580c"];
  const W = 560, H = 300, M = { l: 58, r: 14, t: 30, b: 42 };

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function finite(v) { return typeof v === "number" && Number.isFinite(v); }

  function extent(series, key, log) {
    let lo = Infinity, hi = -Infinity;
    for (const s of series) {
      if (s.hidden) continue;
      for (const v of s[key]) {
        if (!finite(v) || (log && v <= 0)) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    if (lo === Infinity) return null;
    if (lo === hi) { const d = log ? lo * 0.5 : Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
    return [lo, hi];
  }

  function niceTicks(lo, hi, n) {
    const step0 = (hi - lo) / n;
    const mag = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= step0) || step0;
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(v);
    return ticks;
  }

  function logTicks(lo, hi) {
    const ticks = [];
    for (let p = Math.floor(Math.log10(lo)); p <= Math.ceil(Math.log10(hi)); p++) {
      const v = Math.pow(10, p);
      if (v >= lo * 0.999 && v <= hi * 1.001) ticks.push(v);
    }
    return ticks.length >= 2 ? ticks : [lo, hi];
  }

  function fmt(v) {
    if (!finite(v)) return "—";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e4 || a < 1e-3)) return v.toExponential(1);
    return String(Number(v.toPrecision(3)));
  }

  function scale(domain, range, log) {
    const f = log ? Math.log10 : (x) => x;
    const d0 = f(domain[0]), d1 = f(domain[1]);
    return (v) => range[0] + ((f(v) - d0) / (d1 - d0)) * (range[1] - range[0]);
  }

  // Draw into `figure` (replacing what was there). options: title, xLabel, yLabel, xLog, yLog,
  // series: [{name, x: [], y: []}], points: true for markers, empty: text when nothing to show.
  function lineChart(figure, options) {
    const state = figure._chart || { hidden: new Set() };
    figure._chart = state;
    figure.textContent = "";
    const series = options.series.map((s, i) => ({
      ...s, color: s.color || PALETTE[i % PALETTE.length], hidden: state.hidden.has(s.name),
    }));
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart-svg" }, figure);
    el("title", {}, svg).textContent = options.title;
    const head = el("text", { x: M.l, y: 18, class: "chart-title" }, svg);
    head.textContent = options.title;
    const xd = extent(series, "x", options.xLog), yd = extent(series, "y", options.yLog);
    if (!xd || !yd) {
      const t = el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-empty" }, svg);
      t.textContent = options.empty || "no data yet";
      legend(figure, series, options, state);
      return;
    }
    const sx = scale(xd, [M.l, W - M.r], options.xLog);
    const sy = scale(yd, [H - M.b, M.t], options.yLog);
    const axes = el("g", { class: "axes" }, svg);
    const xt = options.xLog ? logTicks(...xd) : niceTicks(xd[0], xd[1], 6);
    const yt = options.yLog ? logTicks(...yd) : niceTicks(yd[0], yd[1], 5);
    for (const v of xt) {
      const x = sx(v);
      el("line", { x1: x, x2: x, y1: M.t, y2: H - M.b, class: "grid" }, axes);
      const t = el("text", { x, y: H - M.b + 16, "text-anchor": "middle" }, axes);
      t.textContent = fmt(v);
    }
    for (const v of yt) {
      const y = sy(v);
      el("line", { x1: M.l, x2: W - M.r, y1: y, y2: y, class: "grid" }, axes);
      const t = el("text", { x: M.l - 6, y: y + 4, "text-anchor": "end" }, axes);
      t.textContent = fmt(v);
    }
    el("rect", { x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b, class: "frame" }, axes);
    const xl = el("text", { x: (M.l + W - M.r) / 2, y: H - 6, "text-anchor": "middle", class: "label" }, axes);
    xl.textContent = options.xLabel || "";
    const yl = el("text", { x: 14, y: (M.t + H - M.b) / 2, "text-anchor": "middle", class: "label",
                            transform: `rotate(-90 14 ${(M.t + H - M.b) / 2})` }, axes);
    yl.textContent = options.yLabel || "";

    const plot = el("g", { class: "plot" }, svg);
    for (const s of series) {
      if (s.hidden) continue;
      let d = "", pen = false;
      for (let i = 0; i < s.x.length; i++) {
        const x = s.x[i], y = s.y[i];
        const ok = finite(x) && finite(y) && !(options.xLog && x <= 0) && !(options.yLog && y <= 0);
        if (!ok) { pen = false; continue; }
        d += (pen ? "L" : "M") + sx(x).toFixed(1) + " " + sy(y).toFixed(1);
        pen = true;
      }
      if (d) el("path", { d, stroke: s.color, fill: "none", "stroke-width": 1.8, class: "line" }, plot);
      if (options.points) {
        for (let i = 0; i < s.x.length; i++) {
          if (finite(s.x[i]) && finite(s.y[i])) {
            el("circle", { cx: sx(s.x[i]), cy: sy(s.y[i]), r: 3.2, fill: s.color }, plot);
          }
        }
      }
    }
    crosshair(svg, series, sx, sy, xd, options);
    legend(figure, series, options, state);
  }

  function crosshair(svg, series, sx, sy, xd, options) {
    const layer = el("g", { class: "cross", visibility: "hidden" }, svg);
    const vline = el("line", { y1: M.t, y2: H - M.b, class: "cross-line" }, layer);
    const box = el("rect", { class: "cross-box", rx: 4 }, layer);
    const text = el("text", { class: "cross-text" }, layer);
    const hit = el("rect", { x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b,
                             fill: "transparent" }, svg);
    const f = options.xLog ? Math.log10 : (v) => v;
    function move(event) {
      const r = svg.getBoundingClientRect();
      const px = ((event.clientX - r.left) / r.width) * W;
      const t = (px - M.l) / (W - M.l - M.r);
      const target = options.xLog
        ? Math.pow(10, f(xd[0]) + t * (f(xd[1]) - f(xd[0]))) : xd[0] + t * (xd[1] - xd[0]);
      const lines = [];
      let at = null;
      for (const s of series) {
        if (s.hidden || !s.x.length) continue;
        let best = -1, dist = Infinity;
        for (let i = 0; i < s.x.length; i++) {
          const dd = Math.abs(f(s.x[i]) - f(target));
          if (finite(s.y[i]) && dd < dist) { dist = dd; best = i; }
        }
        if (best < 0) continue;
        at = at === null ? s.x[best] : at;
        lines.push([s.color, `${s.name}: ${fmt(s.y[best])}`]);
      }
      if (at === null) return;
      const x = sx(at);
      vline.setAttribute("x1", x); vline.setAttribute("x2", x);
      text.textContent = "";
      const tx = x > W / 2 ? x - 150 : x + 8;
      const head = el("tspan", { x: tx + 6, y: M.t + 14, "font-weight": "600" }, text);
      head.textContent = `${options.xLabel || "x"} = ${fmt(at)}`;
      lines.slice(0, 10).forEach(([color, line], i) => {
        const span = el("tspan", { x: tx + 6, y: M.t + 28 + i * 13, fill: color }, text);
        span.textContent = line;
      });
      box.setAttribute("x", tx); box.setAttribute("y", M.t + 2);
      box.setAttribute("width", 142); box.setAttribute("height", 18 + Math.min(10, lines.length) * 13);
      layer.setAttribute("visibility", "visible");
    }
    hit.addEventListener("mousemove", move);
    hit.addEventListener("mouseleave", () => layer.setAttribute("visibility", "hidden"));
  }

  function legend(figure, series, options, state) {
    if (series.length < 2 && !options.legend) return;
    const list = document.createElement("figcaption");
    list.className = "legend";
    for (const s of series) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "legend-item";
      b.setAttribute("aria-pressed", s.hidden ? "false" : "true");
      const swatch = document.createElementNS(NS, "svg");
      swatch.setAttribute("width", "14"); swatch.setAttribute("height", "10");
      el("rect", { width: 14, height: 10, rx: 2, fill: s.hidden ? "#cbd5e1" : s.color }, swatch);
      b.appendChild(swatch);
      b.appendChild(document.createTextNode(" " + s.name));
      b.title = s.hidden ? "show" : "hide";
      b.addEventListener("click", () => {
        if (state.hidden.has(s.name)) state.hidden.delete(s.name); else state.hidden.add(s.name);
        lineChart(figure, options);
      });
      list.appendChild(b);
    }
    figure.appendChild(list);
  }

  window.dfpCharts = { lineChart, fmt };
})();
