// Small helpers shared by the views.

/** Create an element: el("td", {class: "x", dataset: {a: "b"}}, "text", child...). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

const pad = (n) => String(n).padStart(2, "0");

/** HH:MM:SS of a millisecond timestamp, local time. */
export function clock(ms) {
  if (!ms) return "–";
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A compact number for axes and rates: 1234 -> "1.23k" (`digits` significant digits). */
export function compact(v, digits = 3) {
  if (v == null || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e9) return +(v / 1e9).toPrecision(digits) + "G";
  if (a >= 1e6) return +(v / 1e6).toPrecision(digits) + "M";
  if (a >= 1e4) return +(v / 1e3).toPrecision(digits) + "k";
  if (Number.isInteger(v)) return String(v);
  return String(+v.toPrecision(Math.max(digits, 4)));
}

/** Axis tick labels: as compact as possible while still all different. */
export function tickLabels(vals) {
  for (let digits = 3; digits < 12; digits++) {
    const labels = vals.map((v) => compact(v, digits));
    if (new Set(labels).size === labels.length) return labels;
  }
  return vals.map(String);
}

/** Run `fn` at most once per `ms`, on an animation frame (batched DOM updates). */
export function batcher(fn, ms = 300) {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    setTimeout(() => requestAnimationFrame(() => { pending = false; fn(); }), ms);
  };
}

/** Compare topic levels: "$" topics after the others, then plain string order (natural for numbers). */
const collator = new Intl.Collator("en", { numeric: true });
export function compareNames(a, b) {
  const da = a.startsWith("$"), db = b.startsWith("$");
  if (da !== db) return da ? 1 : -1;
  return collator.compare(a, b);
}

/**
 * Track which elements are on screen inside the scrolling `root` (plus a margin): views
 * update off-screen rows only when they scroll into view. `onShow(el)` is called when an
 * element comes into view.
 */
export class Visibility {
  constructor(root, onShow) {
    this.visible = new WeakSet();
    this.io = new IntersectionObserver((entries) => {
      for (const e of entries) {
        if (e.isIntersecting) {
          this.visible.add(e.target);
          onShow(e.target);
        } else this.visible.delete(e.target);
      }
    }, { root, rootMargin: "300px 0px" });
  }

  observe(el) { this.io.observe(el); }
  unobserve(el) { this.io.unobserve(el); this.visible.delete(el); }
  has(el) { return this.visible.has(el); }
}
