// The bridges card (docs/web.md, "The dashboard"): one row per bridge of /dashboard.json,
// its state from $SYS/broker/connection/<name>/state (published by the bridge at each change)
// and $SYS/broker/bridges/<name>/connected (every sys_interval), whichever came last, and its
// remote and counters from $SYS/broker/bridges/<name>/... The card stays hidden when the
// broker has no bridge.
import { el } from "./util.js";

const STATE = /^\$SYS\/broker\/connection\/([^/]+)\/state$/;
const FIELD = /^\$SYS\/broker\/bridges\/([^/]+)\/([^/]+)$/;
const NUMBERS = ["queued", "inflight", "sent", "received", "dropped"];
const collator = new Intl.Collator("en", { numeric: true });

export class BridgeView {
  /** `configured`: /dashboard.json's `bridges` ([{name, addresses}]). */
  constructor(schedule, configured = []) {
    this.schedule = schedule;
    this.bridges = new Map(); // name -> {name, addresses, connected, remote, numbers, row, cells}
    this.dirty = new Set();
    this.added = false;
    this.card = document.getElementById("bridges");
    this.tbody = document.getElementById("bridge-rows");
    this.summary = document.getElementById("bridges-summary");
    for (const b of configured) this.bridge(b.name).addresses = b.addresses || [];
    if (this.bridges.size) this.schedule();
  }

  bridge(name) {
    let b = this.bridges.get(name);
    if (!b) {
      b = { name, addresses: [], connected: null, remote: "", numbers: {}, row: null, cells: null };
      this.bridges.set(name, b);
      this.added = true;
      this.dirty.add(b);
    }
    return b;
  }

  /** A $SYS message; true when it was a bridge's. */
  onMessage(topic, text) {
    let m = STATE.exec(topic);
    if (m) {
      this.set(m[1], "connected", text);
      return true;
    }
    m = FIELD.exec(topic);
    if (!m) return false;
    this.set(m[1], m[2], text);
    return true;
  }

  set(name, field, text) {
    const b = this.bridge(name);
    const v = text.trim();
    if (field === "connected") b.connected = v === "1";
    else if (field === "remote") b.remote = v;
    else if (NUMBERS.includes(field)) b.numbers[field] = v;
    else return;
    this.dirty.add(b);
    this.schedule();
  }

  render(b) {
    if (!b.row) {
      const c = {
        name: el("td", { class: "name mono", text: b.name }),
        state: el("td", { class: "state" }),
        remote: el("td", { class: "remote mono" }),
      };
      for (const k of NUMBERS) c[k] = el("td", { class: `${k} num` });
      b.cells = c;
      b.row = el("tr", { dataset: { bridge: b.name } }, c.name, c.state, c.remote,
        ...NUMBERS.map((k) => c[k]));
    }
    const c = b.cells;
    const state = b.connected == null ? "unknown" : b.connected ? "connected" : "disconnected";
    c.state.textContent = state;
    c.state.className = "state " + state;
    // the address it is connected to; else the ones it tries, in order (muted)
    const live = b.connected && b.remote;
    c.remote.textContent = live ? b.remote : b.addresses.join(", ");
    c.remote.classList.toggle("configured", !live);
    c.remote.title = b.addresses.length ? "configured: " + b.addresses.join(", ") : "";
    for (const k of NUMBERS) c[k].textContent = b.numbers[k] ?? "–";
  }

  flush() {
    if (!this.dirty.size && !this.added) return;
    for (const b of this.dirty) this.render(b);
    this.dirty.clear();
    if (this.added) {
      this.added = false;
      const all = [...this.bridges.values()].sort((a, b) => collator.compare(a.name, b.name));
      this.tbody.replaceChildren(...all.map((b) => b.row));
      this.card.hidden = false;
    }
    const up = [...this.bridges.values()].filter((b) => b.connected).length;
    this.summary.textContent = `${up} of ${this.bridges.size} connected`;
  }
}
