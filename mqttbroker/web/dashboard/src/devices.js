// The device table: <fleet_root>/<id>/status (retained online/offline/asleep) and
// <fleet_root>/<id>/telemetry (docs/payload.md), one row per device sorted by id.
import { decodePayload, formatReading } from "./decode.js";
import { clock, el, Visibility } from "./util.js";

const collator = new Intl.Collator("en", { numeric: true });
const KNOWN = new Set(["online", "offline", "asleep"]);

export class DeviceView {
  constructor(schedule) {
    this.schedule = schedule;
    this.devices = new Map(); // id -> {status, telemetry (bytes), kind, seen, row, cells}
    this.dirty = new Set();
    this.added = false;
    this.filter = "";
    this.tbody = document.getElementById("device-rows");
    this.empty = document.getElementById("devices-empty");
    // rows off screen are brought up to date when they scroll into view
    this.seen = new Visibility(this.tbody.closest(".table-wrap"), (row) => {
      const d = this.devices.get(row.dataset.device);
      if (d && d.stale) { this.dirty.add(d); this.schedule(); }
    });
    this.counts = {};
    for (const k of ["devices", "devices-online", "devices-offline", "devices-asleep"]) {
      this.counts[k] = document.querySelector(`[data-count="${k}"]`);
    }
    const f = document.getElementById("device-filter");
    f.addEventListener("input", () => {
      this.filter = f.value.trim().toLowerCase();
      for (const [id, d] of this.devices) if (d.row) d.row.hidden = !this.matches(id);
    });
  }

  matches(id) {
    return !this.filter || id.toLowerCase().includes(this.filter);
  }

  device(id) {
    let d = this.devices.get(id);
    if (!d) {
      d = { id, status: null, telemetry: null, kind: "", seen: 0, row: null, stale: false };
      this.devices.set(id, d);
      this.added = true;
    }
    return d;
  }

  /** A message on <root>/<id>/<leaf>; returns nothing, only records (rendering is batched). */
  onMessage(id, leaf, payload) {
    if (leaf === "status") {
      const d = this.device(id);
      d.status = new TextDecoder().decode(payload).trim();
      d.seen = Date.now();
      this.dirty.add(d);
    } else if (leaf === "telemetry") {
      const d = this.device(id);
      d.telemetry = payload;
      d.seen = Date.now();
      this.dirty.add(d);
    } else return;
    this.schedule();
  }

  render(d) {
    if (!d.row) {
      d.cells = {
        id: el("td", { class: "id mono", text: d.id }),
        kind: el("td", { class: "kind" }),
        status: el("td", { class: "status" }),
        reading: el("td", { class: "reading mono" }),
        seen: el("td", { class: "seen mono" }),
      };
      const c = d.cells;
      d.row = el("tr", { dataset: { device: d.id } }, c.id, c.kind, c.status, c.reading, c.seen);
      d.row.hidden = !this.matches(d.id);
      this.seen.observe(d.row);
    }
    d.stale = false;
    const c = d.cells;
    const status = d.status || "unknown";
    if (c.status.textContent !== status) {
      c.status.textContent = status;
      c.status.className = "status " + (KNOWN.has(status) ? status : "unknown");
    }
    if (d.telemetry) {
      const doc = decodePayload(d.telemetry);
      const r = formatReading(doc);
      c.reading.textContent = r ?? "";
      c.reading.title = r ?? "";
      const kind = doc.value && typeof doc.value === "object" ? doc.value.k : null;
      if (typeof kind === "string" && c.kind.textContent !== kind) c.kind.textContent = kind;
      d.telemetry = null; // decoded once; kept in the cell
    }
    c.seen.textContent = clock(d.seen);
  }

  flush() {
    if (!this.dirty.size && !this.added) return;
    for (const d of this.dirty) {
      if (!d.row || this.seen.has(d.row)) this.render(d);
      else d.stale = true;
    }
    this.dirty.clear();
    if (this.added) {
      // new devices: put every row in id order (rare after start-up)
      this.added = false;
      const all = [...this.devices.values()].sort((a, b) => collator.compare(a.id, b.id));
      const frag = document.createDocumentFragment();
      for (const d of all) {
        if (!d.row) this.render(d);
        frag.append(d.row);
      }
      this.tbody.append(frag);
      this.empty.hidden = true;
    }
    const n = { online: 0, offline: 0, asleep: 0 };
    for (const d of this.devices.values()) if (d.status in n) n[d.status]++;
    this.counts.devices.textContent = String(this.devices.size);
    this.counts["devices-online"].textContent = String(n.online);
    this.counts["devices-offline"].textContent = String(n.offline);
    this.counts["devices-asleep"].textContent = String(n.asleep);
  }
}
