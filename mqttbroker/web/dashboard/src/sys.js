// $SYS: the counters (data-count hooks of docs/web.md) and the message-rate chart.
import { makePlot } from "./plots.js";
import { compact } from "./util.js";

/** A rate for the counter card: one decimal below 100 per second. */
function rate(v) {
  if (v == null || !Number.isFinite(v)) return "–";
  return v < 100 ? v.toFixed(1) : compact(Math.round(v));
}

const COUNTS = {
  "$SYS/broker/clients/connected": "clients-connected",
  "$SYS/broker/clients/total": "clients-total",
  "$SYS/broker/subscriptions/count": "subscriptions",
  "$SYS/broker/retained messages/count": "retained",
  "$SYS/broker/publish/messages/received": "publish-received",
  "$SYS/broker/publish/messages/sent": "publish-sent",
  "$SYS/broker/publish/messages/dropped": "publish-dropped",
};
const RECEIVED = "$SYS/broker/publish/messages/received";
const SENT = "$SYS/broker/publish/messages/sent";
const MAX_POINTS = 300;

export class SysView {
  constructor(schedule) {
    this.schedule = schedule;
    this.values = new Map(); // data-count key -> text
    this.dirty = new Set();
    this.els = new Map();
    for (const e of document.querySelectorAll("[data-count]")) this.els.set(e.dataset.count, e);
    this.version = "";
    this.uptime = "";
    // per counter: the previous live sample {v, t} and the last rate
    this.prev = { [RECEIVED]: null, [SENT]: null };
    this.rate = { [RECEIVED]: null, [SENT]: null };
    this.data = [[], [], []];
    this.sampleTimer = null;
    this.chartDirty = false;
    this.plot = null;
  }

  /** A message on a $SYS topic (payload already decoded as text). */
  onMessage(topic, text, retained) {
    const key = COUNTS[topic];
    if (key) {
      this.values.set(key, text.trim());
      this.dirty.add(key);
    } else if (topic === "$SYS/broker/version") {
      this.version = text;
      this.dirty.add("@version");
    } else if (topic === "$SYS/broker/uptime") {
      this.uptime = text;
      this.dirty.add("@uptime");
    }
    if (topic === RECEIVED || topic === SENT) this.counter(topic, Number(text), retained);
    this.schedule();
  }

  counter(topic, v, retained) {
    const now = performance.now();
    if (!Number.isFinite(v)) return;
    const p = this.prev[topic];
    // a retained value is as old as the last $SYS interval: no rate from it
    if (p && !retained && now > p.t && v >= p.v) this.rate[topic] = ((v - p.v) * 1000) / (now - p.t);
    this.prev[topic] = retained ? null : { v, t: now };
    if (!retained && !this.sampleTimer) {
      // both counters of one $SYS round arrive together: one chart point for the pair
      this.sampleTimer = setTimeout(() => this.sample(), 200);
    }
  }

  sample() {
    this.sampleTimer = null;
    const rin = this.rate[RECEIVED], rout = this.rate[SENT];
    if (rin == null && rout == null) return;
    const [xs, a, b] = this.data;
    xs.push(Date.now() / 1000);
    a.push(rin);
    b.push(rout);
    if (xs.length > MAX_POINTS) { xs.shift(); a.shift(); b.shift(); }
    this.chartDirty = true;
    this.dirty.add("@rate");
    this.schedule();
  }

  /** Batched DOM update. */
  flush() {
    for (const key of this.dirty) {
      if (key === "@version") {
        document.getElementById("broker-version").textContent = this.version.replace(/^mqttbroker\s*/, "");
      } else if (key === "@uptime") {
        document.getElementById("broker-uptime").textContent = "up " + humanUptime(this.uptime);
      } else if (key === "@rate") {
        document.getElementById("rate-in").textContent = rate(this.rate[RECEIVED]);
        document.getElementById("rate-out").textContent = rate(this.rate[SENT]);
      } else {
        const e = this.els.get(key);
        if (e) e.textContent = this.values.get(key);
      }
    }
    this.dirty.clear();
    if (this.chartDirty && this.data[0].length >= 2) {
      this.chartDirty = false;
      const box = document.getElementById("rate-chart");
      if (!this.plot) {
        document.getElementById("rate-wait").remove();
        this.plot = makePlot(box, {
          height: 190,
          legend: false,
          zero: true,
          series: [
            { label: "in /s", stroke: "#2563eb", fill: "rgba(37,99,235,0.08)" },
            { label: "out /s", stroke: "#db2777" },
          ],
          data: this.data,
        });
      } else this.plot.setData(this.data);
    }
  }
}

function humanUptime(text) {
  const s = parseInt(text, 10);
  if (!Number.isFinite(s)) return text;
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}
