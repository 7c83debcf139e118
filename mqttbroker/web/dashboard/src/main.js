// The mqttbroker dashboard: fetch /dashboard.json, connect with MQTT.js over WebSockets
// (MQTT 5, clean start), subscribe to $SYS/# and #, and render the views in batches.
import mqtt from "mqtt";
import { BridgeView } from "./bridges.js";
import { Charts } from "./charts.js";
import { decodePayload } from "./decode.js";
import { DeviceView } from "./devices.js";
import { SysView } from "./sys.js";
import { TopicTree } from "./tree.js";
import { batcher } from "./util.js";

const SETTINGS_KEY = "mqttbroker.dashboard.settings";
const WILDCARDS = new Set(["", "0.0.0.0", "::", "*", "[::]"]);
const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]"]);
const text = new TextDecoder();

function loadSettings() {
  try {
    return JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}") || {};
  } catch {
    return {};
  }
}

/** The WebSocket URL of the first `ws` listener of /dashboard.json. */
export function brokerUrl(cfg, loc = window.location) {
  const l = (cfg.mqtt || [])[0];
  if (!l) return null;
  let host = loc.hostname;
  const h = String(l.host ?? "");
  if (!WILDCARDS.has(h) && !LOOPBACK.has(h)) host = h; // bound to one specific address
  if (host.includes(":") && !host.startsWith("[")) host = `[${host}]`;
  const path = l.path ? (l.path.startsWith("/") ? l.path : "/" + l.path) : "/mqtt";
  return `${l.tls ? "wss" : "ws"}://${host}:${l.port}${path}`;
}

function setState(state, detail = "") {
  document.getElementById("mqtt-state").textContent = state;
  document.getElementById("mqtt-pill").dataset.state = state;
  const b = document.getElementById("mqtt-detail");
  b.textContent = detail;
  b.hidden = !detail;
}

async function fetchConfig() {
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await fetch("/dashboard.json", { cache: "no-store" });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      return await r.json();
    } catch (e) {
      setState("offline", `Cannot load /dashboard.json (${e.message}); retrying…`);
      await new Promise((res) => setTimeout(res, Math.min(1000 * 2 ** attempt, 10000)));
    }
  }
}

async function start() {
  const cfg = await fetchConfig();
  const fleetRoot = cfg.fleet_root || "fleet";
  const settings = loadSettings();

  let views = [];
  const schedule = batcher(() => { for (const v of views) v.flush(); }, 250);
  const sys = new SysView(schedule);
  const devices = new DeviceView(schedule);
  const bridges = new BridgeView(schedule, cfg.bridges || []);
  let charts = null;
  const tree = new TopicTree(document.getElementById("tree"), schedule, (t) => charts.add(t));
  charts = new Charts(document.getElementById("charts"), schedule, (t) => tree.decoded(t));
  views = [sys, devices, bridges, tree, charts];
  if (cfg.sys_interval) {
    document.getElementById("rate-note").textContent =
      `PUBLISH packets per second, from $SYS every ${cfg.sys_interval} s`;
  }

  setupSettings(settings);

  const url = settings.url || brokerUrl(cfg);
  if (!url) {
    setState("offline", "This broker has no WebSocket listener (add a `type: ws` listener).");
    return;
  }
  document.getElementById("mqtt-url").textContent = url;
  const clientId = "dashboard-" + Math.random().toString(16).slice(2, 10);
  setState("connecting");
  const client = mqtt.connect(url, {
    protocolVersion: 5,
    clean: true,
    clientId,
    username: settings.username || undefined,
    password: settings.password || undefined,
    keepalive: 30,
    reconnectPeriod: 2000,
    connectTimeout: 10000,
    resubscribe: false,
    properties: { sessionExpiryInterval: 0 },
  });

  client.on("connect", () => {
    setState("connected");
    client.subscribe({ "$SYS/#": { qos: 0 }, "#": { qos: 0 } }, (err) => {
      if (err) setState("connected", `Subscribe failed: ${err.message}`);
    });
  });
  client.on("reconnect", () => setState("reconnecting"));
  client.on("offline", () => setState("offline"));
  client.on("close", () => {
    if (document.getElementById("mqtt-state").textContent === "connected") setState("reconnecting");
  });
  client.on("error", (err) => setState("error", err.message));
  client.on("disconnect", (packet) => setState("disconnected", `The broker closed the session (reason ${packet.reasonCode}).`));

  client.on("message", (topic, payload, packet) => {
    const bytes = payload instanceof Uint8Array ? payload : new Uint8Array(payload);
    const retain = !!packet.retain;
    tree.onMessage(topic, bytes, retain);
    if (topic.startsWith("$SYS/")) {
      const value = text.decode(bytes);
      if (!bridges.onMessage(topic, value)) sys.onMessage(topic, value, retain);
    } else if (topic.startsWith(fleetRoot + "/")) {
      const parts = topic.slice(fleetRoot.length + 1).split("/");
      if (parts.length === 2) devices.onMessage(parts[0], parts[1], bytes);
    }
    if (charts.has(topic)) charts.onMessage(topic, decodePayload(bytes));
  });

  window.dashboard = { client, cfg, tree, devices, bridges, charts, sys }; // for the console
}

function setupSettings(settings) {
  const form = document.getElementById("settings");
  const toggle = document.getElementById("settings-toggle");
  toggle.addEventListener("click", () => { form.hidden = !form.hidden; });
  for (const k of ["username", "password", "url"]) form.elements[k].value = settings[k] || "";
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const s = {};
    for (const k of ["username", "password", "url"]) {
      const v = form.elements[k].value.trim();
      if (v) s[k] = v;
    }
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(s));
    window.location.reload();
  });
}

start();
