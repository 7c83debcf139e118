// Payload decoding: MessagePack maps, JSON, UTF-8 text, else hex (docs/payload.md).
import { decode as msgpackDecode } from "@msgpack/msgpack";

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** True when the first byte opens a MessagePack map: fixmap 0x80-0x8f, map16 0xde, map32 0xdf. */
function looksMsgpack(b0) {
  return (b0 >= 0x80 && b0 <= 0x8f) || b0 === 0xde || b0 === 0xdf;
}

/** The first byte that is not JSON whitespace, or -1. */
function firstNonSpace(bytes) {
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i];
    if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) return c;
  }
  return -1;
}

export function hex(bytes, max = 64) {
  let s = "";
  const n = Math.min(bytes.length, max);
  for (let i = 0; i < n; i++) s += (i ? " " : "") + bytes[i].toString(16).padStart(2, "0");
  return bytes.length > max ? s + " …" : s;
}

/**
 * Decode a payload. Returns {kind, value}: kind is "msgpack" or "json" (value: the parsed
 * document), "text" (value: the string), "hex" (value: the bytes) or "empty".
 */
export function decodePayload(bytes) {
  if (!bytes || bytes.length === 0) return { kind: "empty", value: "" };
  if (looksMsgpack(bytes[0])) {
    try {
      return { kind: "msgpack", value: msgpackDecode(bytes) };
    } catch {
      /* not MessagePack after all */
    }
  }
  const c = firstNonSpace(bytes);
  let text = null;
  try {
    text = utf8.decode(bytes);
  } catch {
    return { kind: "hex", value: bytes };
  }
  if (c === 0x7b || c === 0x5b) {
    try {
      return { kind: "json", value: JSON.parse(text) };
    } catch {
      /* plain text that starts with a brace */
    }
  }
  return { kind: "text", value: text };
}

function replacer(_key, v) {
  if (v instanceof Uint8Array) return "0x" + hex(v, 32).replaceAll(" ", "");
  if (typeof v === "bigint") return v.toString();
  if (v instanceof Map) return Object.fromEntries(v);
  return v;
}

/** A one-line rendering of a decoded payload, cut at `max` characters. */
export function formatDecoded(d, max = 240) {
  let s;
  switch (d.kind) {
    case "empty": s = "(empty)"; break;
    case "hex": s = hex(d.value, Math.ceil(max / 3)); break;
    case "text": s = d.value; break;
    default:
      try { s = JSON.stringify(d.value, replacer); } catch { s = String(d.value); }
  }
  return s.length > max ? s.slice(0, max - 1) + "…" : s;
}

function isMap(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array);
}

/**
 * Every numeric field of a decoded payload, flattened: {"r.temp_c": 21.5, "seq": 3, ...}.
 * Booleans count as 0/1, arrays of numbers as name[0], name[1], ...; a text payload that is a
 * plain number (the $SYS counters) is the field "value".
 */
export function numericFields(d) {
  const out = {};
  if (d.kind === "text") {
    const t = d.value.trim();
    if (t !== "" && Number.isFinite(Number(t))) out.value = Number(t);
    else {
      const m = /^(-?\d+(?:\.\d+)?)\s+\w+$/.exec(t); // "123 seconds"
      if (m) out.value = Number(m[1]);
    }
    return out;
  }
  if (d.kind !== "msgpack" && d.kind !== "json") return out;
  const walk = (v, name, depth) => {
    if (typeof v === "number") { if (Number.isFinite(v)) out[name || "value"] = v; }
    else if (typeof v === "boolean") out[name || "value"] = v ? 1 : 0;
    else if (typeof v === "bigint") out[name || "value"] = Number(v);
    else if (depth > 6) return;
    else if (Array.isArray(v)) {
      v.slice(0, 16).forEach((x, i) => walk(x, `${name}[${i}]`, depth + 1));
    } else if (isMap(v)) {
      for (const [k, x] of Object.entries(v)) walk(x, name ? `${name}.${k}` : k, depth + 1);
    }
  };
  walk(d.value, "", 0);
  return out;
}

/** A telemetry document's readings as "name=value" pairs, or null when it is not one. */
export function formatReading(d) {
  if ((d.kind !== "msgpack" && d.kind !== "json") || !isMap(d.value)) return null;
  const r = isMap(d.value.r) ? d.value.r : null;
  if (!r) return null;
  return Object.entries(r)
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v, replacer) : String(v)}`)
    .join(" ");
}
