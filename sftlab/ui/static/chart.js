// A small SVG line chart (no library, nothing loaded from elsewhere): lineChart(element, series, options).
// series: [{name, color, points: [[x, y], ...], dashed?}]; options: {xLabel, format}.
"use strict";
const SVGNS = "http://www.w3.org/2000/svg";

function niceTicks(lo, hi, n) {
  if (!isFinite(lo) || !isFinite(hi)) return [];
  if (lo === hi) { const d = Math.abs(lo) || 1; lo -= d * 0.5; hi += d * 0.5; }
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

function fmtNum(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(1);
  return +v.toPrecision(3) + "";
}

function lineChart(el, series, opts) {
  opts = opts || {};
  el.textContent = "";
  const pts = series.flatMap(s => s.points.filter(p => p[1] !== null && p[1] !== undefined && isFinite(p[1])));
  if (!pts.length) {
    const empty = document.createElement("div");
    empty.className = "empty";
    empty.textContent = opts.empty || "—";
    el.appendChild(empty);
    return;
  }
  const W = Math.max(320, el.clientWidth || 520), H = 220, L = 58, R = 12, T = 10, B = 34;
  let x0 = Math.min(...pts.map(p => p[0])), x1 = Math.max(...pts.map(p => p[0]));
  let y0 = Math.min(...pts.map(p => p[1])), y1 = Math.max(...pts.map(p => p[1]));
  if (x0 === x1) { x1 = x0 + 1; }
  const yt = niceTicks(y0, y1, 4);
  if (yt.length) { y0 = Math.min(y0, yt[0]); y1 = Math.max(y1, yt[yt.length - 1]); }
  if (y0 === y1) { y1 = y0 + 1; }
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R), sy = y => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const svg = document.createElementNS(SVGNS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  };
  const ystep = yt.length > 1 ? yt[1] - yt[0] : 1;
  const ylabel = v => v === 0 ? "0" : (Math.abs(v) >= 1e5 || ystep < 1e-3) ? v.toExponential(1)
    : v.toFixed(Math.max(0, Math.ceil(-Math.log10(ystep))));
  for (const v of yt) {
    add("line", {x1: L, x2: W - R, y1: sy(v), y2: sy(v), stroke: "#eef0f3"});
    add("text", {x: L - 6, y: sy(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#667085"}, ylabel(v));
  }
  for (const v of niceTicks(x0, x1, 6)) {
    add("line", {x1: sx(v), x2: sx(v), y1: H - B, y2: H - B + 4, stroke: "#98a2b3"});
    add("text", {x: sx(v), y: H - B + 16, "text-anchor": "middle", "font-size": 11, fill: "#667085"}, fmtNum(v));
  }
  add("line", {x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#98a2b3"});
  add("text", {x: (L + W - R) / 2, y: H - 3, "text-anchor": "middle", "font-size": 11, fill: "#667085"}, opts.xLabel || "step");
  let lx = L + 8;
  for (const s of series) {
    const p = s.points.filter(q => q[1] !== null && q[1] !== undefined && isFinite(q[1]));
    if (!p.length) continue;
    const d = p.map((q, i) => (i ? "L" : "M") + sx(q[0]).toFixed(1) + "," + sy(q[1]).toFixed(1)).join("");
    add("path", {d, fill: "none", stroke: s.color, "stroke-width": 2, "stroke-dasharray": s.dashed ? "5,4" : "none"});
    if (p.length < 40) for (const q of p) add("circle", {cx: sx(q[0]), cy: sy(q[1]), r: 2.5, fill: s.color});
    if (series.length > 1) {
      add("rect", {x: lx, y: T + 2, width: 10, height: 10, fill: s.color});
      const label = add("text", {x: lx + 14, y: T + 11, "font-size": 11, fill: "#344054"}, s.name);
      lx += 24 + 6.5 * s.name.length;
    }
  }
  el.appendChild(svg);
}
window.lineChart = lineChart;
