// herdguard's live charts: a scrolling time-series line chart on a canvas.
// No dependencies; the pages load this from their own server.
"use strict";
const HG = {};

// The series colours, in order (colour-blind friendly, Okabe–Ito).
HG.colours = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#999999"];

// A number for people: 1234 → "1,234", 0.123 → "0.12", null → "—".
HG.fmt = function (v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  if (digits === undefined) digits = Math.abs(v) >= 100 || Number.isInteger(v) ? 0 : Math.abs(v) >= 10 ? 1 : 2;
  return v.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
};

// document.createElement with attributes and children.
HG.el = function (tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
};

// A chart of `names` (one line each) over the last `keep` points.
// chart.push(t_seconds, [v0, v1, ...]) adds a point and redraws.
HG.chart = function (canvas, names, opts) {
  opts = opts || {};
  const keep = opts.keep || 120;
  const unit = opts.unit || "";
  const points = []; // [t, values]
  const ctx = canvas.getContext("2d");
  function draw() {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== w * dpr || canvas.height !== h * dpr) {
      canvas.width = w * dpr; canvas.height = h * dpr;
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const left = 48, right = 8, top = 22, bottom = 18;
    let max = 0;
    for (const [, vs] of points) for (const v of vs) if (v !== null && v > max) max = v;
    max = niceMax(max);
    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = "#ddd"; ctx.fillStyle = "#666"; ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + (h - top - bottom) * (1 - i / 4);
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(w - right, y); ctx.stroke();
      ctx.fillText(HG.fmt(max * i / 4) + unit, 2, y + 4);
    }
    if (points.length > 0) {
      // From the first point kept to now, at least 10 s wide.
      const t1 = points[points.length - 1][0];
      const t0 = Math.min(points[0][0], t1 - 10);
      const x = t => left + (w - left - right) * (t - t0) / (t1 - t0);
      const y = v => top + (h - top - bottom) * (1 - v / max);
      ctx.fillText("−" + Math.round(t1 - t0) + " s", left, h - 4);
      ctx.fillText("now", w - right - 22, h - 4);
      names.forEach((name, s) => {
        ctx.strokeStyle = HG.colours[s % HG.colours.length]; ctx.lineWidth = 2;
        ctx.beginPath();
        let started = false;
        for (const [t, vs] of points) {
          const v = vs[s];
          if (v === null || v === undefined) { started = false; continue; }
          if (started) ctx.lineTo(x(t), y(v)); else { ctx.moveTo(x(t), y(v)); started = true; }
        }
        ctx.stroke();
      });
    }
    // Legend, with each line's latest value.
    let lx = left;
    const last = points.length ? points[points.length - 1][1] : [];
    names.forEach((name, s) => {
      const label = name + " " + HG.fmt(last[s]) + unit;
      ctx.fillStyle = HG.colours[s % HG.colours.length];
      ctx.fillRect(lx, 6, 10, 10);
      ctx.fillStyle = "#222";
      ctx.fillText(label, lx + 14, 15);
      lx += ctx.measureText(label).width + 28;
    });
  }
  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }
  draw();
  window.addEventListener("resize", draw);
  return {
    push(t, values) {
      points.push([t, values]);
      while (points.length > 0 && points[0][0] < t - keep) points.shift();
      draw();
    },
    clear() { points.length = 0; draw(); },
  };
};
