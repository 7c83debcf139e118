// uPlot helpers: a chart that follows its container's width.
import uPlot from "uplot";
import { compact, tickLabels } from "./util.js";

export const COLORS = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2",
  "#dc2626", "#65a30d", "#9333ea", "#475569"];

const axisStyle = { stroke: "#64748b", grid: { stroke: "#e2e8f0", width: 1 },
  ticks: { stroke: "#cbd5e1", width: 1, size: 4 }, font: "11px system-ui, sans-serif" };

/**
 * A uPlot in `box`, sized to the box's width; `series` = [{label, stroke}], data = [xs, ...ys].
 * Returns the uPlot; it is resized with its box and destroyed by `dispose(u)`.
 */
export function makePlot(box, { series, data, height = 160, legend = true, xAxis = true,
  ySize = 48, tight = false, zero = false }) {
  const width = Math.max(box.clientWidth || 300, 120);
  const opts = {
    width,
    height,
    legend: { show: legend },
    cursor: { drag: { x: false, y: false }, points: { size: 5 } },
    scales: { x: { time: true }, ...(tight ? { y: { range: tightRange } } : {}),
      ...(zero ? { y: { range: (_u, _min, max) => [0, Math.max(1, (max ?? 0) * 1.15)] } } : {}) },
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label,
        stroke: s.stroke || COLORS[i % COLORS.length],
        width: 1.5,
        fill: s.fill,
        points: { show: false },
        spanGaps: true,
        value: (_u, v) => (v == null ? "–" : compact(v)),
      })),
    ],
    axes: [
      { ...axisStyle, show: xAxis, space: 70 },
      { ...axisStyle, values: (_u, vals) => tickLabels(vals),
        // wide enough for the longest label (11px font: ~6.5px a character)
        size: (_u, values) => Math.min(100, Math.max(ySize,
          14 + 6.5 * Math.max(0, ...(values || []).map((v) => String(v).length)))) },
    ],
  };
  const u = new uPlot(opts, data, box);
  const ro = new ResizeObserver(() => {
    const w = box.clientWidth;
    if (w > 0 && Math.abs(w - u.width) > 1) u.setSize({ width: w, height });
  });
  ro.observe(box);
  u._ro = ro;
  return u;
}

/** A y range around the data only (not stretched to 0), a little padded. */
function tightRange(_u, min, max) {
  if (min == null || max == null) return [0, 1];
  if (min === max) {
    const d = Math.abs(min) * 0.01 || 1;
    return [min - d, max + d];
  }
  const pad = (max - min) * 0.1;
  return [min - pad, max + pad];
}

export function dispose(u) {
  u._ro?.disconnect();
  u.destroy();
}
