// The topic tree: one node per topic level, collapsible, each topic's last value decoded.
// Messages only update the model; the DOM of the visible (expanded) nodes is patched in
// batches, and collapsed subtrees have no DOM at all.
import { decodePayload, formatDecoded } from "./decode.js";
import { clock, compareNames, el, Visibility } from "./util.js";

const SMALL = 24; // a node with at most this many children opens by default (if its parent is small too)
const MAX_MATCHES = 500;

class Node {
  constructor(name, topic, parent) {
    this.name = name;
    this.topic = topic;
    this.parent = parent;
    this.depth = parent ? parent.depth + 1 : -1;
    this.children = null; // Map name -> Node
    this.payload = null; // last payload (null: never published)
    this.retain = false;
    this.count = 0;
    this.time = 0;
    this.expanded = null; // null: the default; true/false: the user's choice
    this.li = null; // DOM while visible
  }

  isOpen() {
    if (this.expanded !== null) return this.expanded;
    if (!this.children) return false;
    const p = this.parent;
    return this.children.size <= SMALL && (p.depth < 0 || p.children.size <= SMALL);
  }
}

export class TopicTree {
  /** onPick(topic) is called when a topic with a value is clicked. */
  constructor(container, schedule, onPick) {
    this.container = container;
    this.schedule = schedule;
    this.onPick = onPick;
    this.root = new Node("", "", null);
    this.root.children = new Map();
    this.nodes = new Map(); // topic -> Node (published topics and their parents)
    this.topicCount = 0;
    this.dirty = new Set(); // nodes whose value changed
    this.grown = new Set(); // nodes that got new children
    this.filter = "";
    this.filterChanged = false;
    this.ul = el("ul", { class: "tree" });
    this.flat = el("ul", { class: "tree flat", hidden: true });
    this.note = el("p", { class: "empty", text: "Waiting for messages…" });
    container.append(this.note, this.ul, this.flat);
    // rows off screen get their value when they scroll into view
    this.seen = new Visibility(container, (row) => {
      const n = row._node;
      if (n && n.stale && n.li) { this.dirty.add(n); this.schedule(); }
    });
    this.countEl = document.querySelector('[data-count="topics"]');
    container.addEventListener("click", (ev) => this.click(ev));
    const f = document.getElementById("topic-filter");
    let t = null;
    f.addEventListener("input", () => {
      clearTimeout(t);
      t = setTimeout(() => {
        this.filter = f.value.trim();
        this.filterChanged = true;
        this.schedule();
      }, 200);
    });
  }

  node(topic) {
    let n = this.nodes.get(topic);
    if (n) return n;
    let parent = this.root;
    let path = "";
    for (const name of topic.split("/")) {
      path = parent === this.root ? name : path + "/" + name;
      if (!parent.children) parent.children = new Map();
      let child = parent.children.get(name);
      if (!child) {
        child = new Node(name, path, parent);
        parent.children.set(name, child);
        this.nodes.set(path, child);
        this.grown.add(parent);
      }
      parent = child;
    }
    return parent;
  }

  onMessage(topic, payload, retain) {
    const n = this.node(topic);
    if (n.payload === null) {
      this.topicCount++;
      if (this.filter) this.filterChanged = true;
    }
    n.payload = payload;
    n.retain = retain;
    n.count++;
    n.time = Date.now();
    this.dirty.add(n);
    this.schedule();
  }

  decoded(topic) {
    const n = this.nodes.get(topic);
    return n && n.payload ? { decoded: decodePayload(n.payload), time: n.time } : null;
  }

  // -- DOM --------------------------------------------------------------------------------

  row(n, label) {
    const caret = el("span", { class: "caret" });
    const value = el("span", { class: "value mono" });
    const meta = el("span", { class: "meta" });
    const r = el("div", { class: "row", dataset: { topic: n.topic }, title: n.topic },
      caret, el("span", { class: "name", text: label ?? (n.name === "" ? "∅" : n.name) }), value, meta);
    r._node = n;
    if (n.rowEl) this.seen.unobserve(n.rowEl);
    this.seen.observe(r);
    n.li = el("li", {}, r);
    n.rowEl = r;
    n.valueEl = value;
    n.metaEl = meta;
    n.caretEl = caret;
    n.ulEl = null;
    this.paint(n, true);
    return n.li;
  }

  paint(n, force = false) {
    const open = n.isOpen();
    n.caretEl.className = "caret" + (n.children ? (open ? " open" : " closed") : "");
    n.stale = false;
    if (n.payload !== null && !force && !this.seen.has(n.rowEl)) {
      n.stale = true; // off screen: painted when it scrolls into view
    } else if (n.payload !== null) {
      const d = decodePayload(n.payload);
      n.valueEl.textContent = formatDecoded(d, 200);
      n.valueEl.dataset.kind = d.kind;
      n.metaEl.textContent = `${n.retain ? "retained · " : ""}${n.count}× · ${clock(n.time)}`;
      n.rowEl.classList.add("has-value");
    }
    if (this.filter) return; // flat list: no children
    if (open && n.children && !n.ulEl) {
      n.ulEl = el("ul");
      this.fillChildren(n);
      n.li.append(n.ulEl);
    } else if (!open && n.ulEl) {
      this.drop(n);
    }
  }

  fillChildren(n) {
    const names = [...n.children.keys()].sort(compareNames);
    const frag = document.createDocumentFragment();
    for (const name of names) {
      const c = n.children.get(name);
      frag.append(c.li ?? this.row(c));
    }
    n.ulEl.append(frag);
  }

  /** Remove the DOM of n's subtree (collapse). */
  drop(n) {
    n.ulEl?.remove();
    n.ulEl = null;
    const forget = (x) => {
      if (!x.children) return;
      for (const c of x.children.values()) {
        if (c.li) {
          c.li = null;
          this.seen.unobserve(c.rowEl);
          forget(c);
        }
      }
    };
    forget(n);
  }

  click(ev) {
    const r = ev.target.closest(".row");
    if (!r || !r._node) return;
    const n = r._node;
    const onCaret = ev.target.classList.contains("caret");
    if (n.payload !== null && !onCaret) {
      this.onPick(n.topic);
      return;
    }
    if (n.children && !this.filter) {
      n.expanded = !n.isOpen();
      this.paint(n, true);
    }
  }

  flush() {
    if (this.filterChanged) {
      this.filterChanged = false;
      this.rebuild();
    }
    if (this.grown.size) {
      for (const p of this.grown) {
        if (p === this.root) {
          this.ul.replaceChildren();
          if (!this.filter) {
            for (const name of [...p.children.keys()].sort(compareNames)) {
              const c = p.children.get(name);
              this.ul.append(c.li ?? this.row(c));
            }
          }
        } else if (p.li && !this.filter) {
          const wasOpen = !!p.ulEl;
          if (wasOpen) { p.ulEl.replaceChildren(); }
          if (wasOpen && p.isOpen()) this.fillChildren(p);
          else this.paint(p);
        }
      }
      this.grown.clear();
      this.note.hidden = this.topicCount > 0;
    }
    for (const n of this.dirty) if (n.li) this.paint(n);
    this.dirty.clear();
    this.countEl.textContent = String(this.topicCount);
  }

  /** The filter changed: show the matching topics as a flat list, or the tree again. */
  rebuild() {
    const f = this.filter.toLowerCase();
    this.flat.replaceChildren();
    // every row is made again: forget the DOM of all nodes
    for (const n of this.nodes.values()) {
      if (n.li) this.seen.unobserve(n.rowEl);
      n.li = null;
      n.ulEl = null;
    }
    this.ul.replaceChildren();
    this.ul.hidden = !!f;
    this.flat.hidden = !f;
    if (f) {
      let k = 0;
      const topics = [...this.nodes.values()].filter((n) => n.payload !== null && n.topic.toLowerCase().includes(f))
        .sort((a, b) => compareNames(a.topic, b.topic));
      for (const n of topics) {
        if (k++ >= MAX_MATCHES) {
          this.flat.append(el("li", { class: "empty", text: `… ${topics.length - MAX_MATCHES} more` }));
          break;
        }
        this.flat.append(this.row(n, n.topic));
      }
      if (!topics.length) this.flat.append(el("li", { class: "empty", text: "No topic matches." }));
    } else {
      this.grown.add(this.root);
    }
  }
}
