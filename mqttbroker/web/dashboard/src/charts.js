// Live charts of the topics chosen in the tree: one card per topic ([data-chart=TOPIC]),
// one small uPlot per numeric field (each with its own y scale), the last 300 points.
import { numericFields } from "./decode.js";
import { COLORS, dispose, makePlot } from "./plots.js";
import { el } from "./util.js";

const MAX_POINTS = 300;

/** Readings first (r.*), then the other fields, each group in name order. */
function fieldOrder(a, b) {
  const ra = a.startsWith("r.") ? 0 : 1, rb = b.startsWith("r.") ? 0 : 1;
  return ra - rb || a.localeCompare(b);
}

class TopicChart {
  constructor(topic, onRemove) {
    this.topic = topic;
    this.xs = [];
    this.fields = new Map(); // name -> {ys, panel, box, valueEl, plot}
    this.dirty = false;
    this.grid = el("div", { class: "fields" });
    this.note = el("p", { class: "empty", text: "Waiting for a message with numbers…" });
    this.el = el("div", { class: "chart-card", dataset: { chart: topic } },
      el("div", { class: "chart-head" },
        el("span", { class: "mono topic", text: topic, title: topic }),
        el("button", { type: "button", class: "btn small remove", title: "Remove this chart",
          "aria-label": "Remove chart", onclick: () => onRemove(topic), text: "×" })),
      this.note, this.grid);
  }

  push(values, t) {
    const names = Object.keys(values);
    if (!names.length) return;
    const n = this.xs.length;
    this.xs.push(t);
    for (const name of names) {
      if (!this.fields.has(name)) {
        this.fields.set(name, { ys: new Array(n).fill(null), plot: null });
      }
    }
    for (const [name, f] of this.fields) f.ys.push(name in values ? values[name] : null);
    if (this.xs.length > MAX_POINTS) {
      this.xs.shift();
      for (const f of this.fields.values()) f.ys.shift();
    }
    this.dirty = true;
  }

  flush() {
    if (!this.dirty) return;
    this.dirty = false;
    this.note.hidden = this.fields.size > 0;
    const names = [...this.fields.keys()].sort(fieldOrder);
    names.forEach((name, i) => {
      const f = this.fields.get(name);
      if (!f.panel) {
        f.valueEl = el("span", { class: "mono fval" });
        f.box = el("div", { class: "fbox" });
        f.panel = el("div", { class: "field", dataset: { field: name } },
          el("div", { class: "fhead" }, el("span", { class: "fname", text: name }), f.valueEl), f.box);
        // keep the panels in field order
        const next = names.slice(i + 1).map((x) => this.fields.get(x).panel).find(Boolean);
        this.grid.insertBefore(f.panel, next ?? null);
        f.color = COLORS[i % COLORS.length];
      }
      const last = f.ys.length ? f.ys[f.ys.length - 1] : null;
      f.valueEl.textContent = last == null ? "–" : String(+last.toPrecision(8));
      const data = [this.xs, f.ys];
      if (!f.plot) {
        f.plot = makePlot(f.box, { series: [{ label: name, stroke: f.color }], data,
          height: 72, legend: false, xAxis: false, ySize: 52, tight: true });
      } else f.plot.setData(data);
    });
  }

  destroy() {
    for (const f of this.fields.values()) if (f.plot) dispose(f.plot);
    this.el.remove();
  }
}

export class Charts {
  /** `decoded(topic)` gives a topic's last payload, {decoded, time}, to start a chart with. */
  constructor(container, schedule, decoded) {
    this.container = container;
    this.schedule = schedule;
    this.decoded = decoded;
    this.charts = new Map();
    this.empty = document.getElementById("charts-empty");
  }

  has(topic) {
    return this.charts.has(topic);
  }

  add(topic) {
    let c = this.charts.get(topic);
    if (c) {
      c.el.scrollIntoView({ block: "nearest", behavior: "smooth" });
      c.el.classList.remove("flash");
      void c.el.offsetWidth;
      c.el.classList.add("flash");
      return;
    }
    c = new TopicChart(topic, (t) => this.remove(t));
    this.charts.set(topic, c);
    this.container.prepend(c.el);
    this.empty.hidden = true;
    const last = this.decoded(topic); // {decoded, time} of its last message, or null
    if (last) c.push(numericFields(last.decoded), last.time / 1000);
    c.dirty = true;
    this.schedule();
  }

  remove(topic) {
    const c = this.charts.get(topic);
    if (!c) return;
    c.destroy();
    this.charts.delete(topic);
    this.empty.hidden = this.charts.size > 0;
  }

  onMessage(topic, decoded) {
    const c = this.charts.get(topic);
    if (!c) return;
    c.push(numericFields(decoded), Date.now() / 1000);
    this.schedule();
  }

  flush() {
    for (const c of this.charts.values()) c.flush();
  }
}
