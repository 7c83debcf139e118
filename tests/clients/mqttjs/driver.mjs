// MQTT.js run by tests/integration/test_clients_mqttjs.py: one JSON command a line on stdin,
// one JSON line a reply or event on stdout (the protocol of tests/integration/clientprocs.py,
// which the Paho C driver, tests/integration/pahoc.py, speaks too).
//
//   {"cmd": "connect", "url": "mqtt://..." | "ws://...", "clientId": "...", "version": 4 | 5,
//    "clean": true, "sessionExpiry": 300, "will": {"topic", "payload", "qos", "retain"}}
//     -> {"reply": "connect", "ok": true, "sessionPresent": false}
//   {"cmd": "subscribe", "topic": "...", "qos": 0 | 1 | 2} -> {"reply": ..., "granted": qos}
//   {"cmd": "publish", "topic", "payload", "qos", "retain"} -> {"reply": ...} once the QoS
//     flow is complete (PUBACK / PUBCOMP received)
//   {"cmd": "disconnect"} -> {"reply": ...} after DISCONNECT is sent and the socket closed
//   {"cmd": "exit"}
//   events: {"event": "ready"}, {"event": "message", "topic", "payload", "qos", "retain"},
//           {"event": "close"}
// A failed command answers {"reply": cmd, "ok": false, "error": "..."}. Commands run one
// after the other, in order. Reconnecting is off: a dropped connection stays down.
import readline from 'node:readline';
import mqtt from 'mqtt';

const TIMEOUT_MS = 5000;
let client = null;

function say(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function connect({ url, clientId, version, clean = true, sessionExpiry, will, keepalive = 60 }) {
  const options = {
    clientId,
    protocolVersion: version,
    clean,
    keepalive,
    reconnectPeriod: 0,
    connectTimeout: TIMEOUT_MS,
  };
  if (sessionExpiry !== undefined) options.properties = { sessionExpiryInterval: sessionExpiry };
  if (will) options.will = { ...will, payload: Buffer.from(will.payload) };
  const c = mqtt.connect(url, options);
  client = c;
  c.on('message', (topic, payload, packet) => {
    say({ event: 'message', topic, payload: payload.toString(), qos: packet.qos,
          retain: packet.retain });
  });
  c.on('close', () => say({ event: 'close' }));
  return new Promise((resolve, reject) => {
    c.once('connect', (connack) => resolve({ sessionPresent: connack.sessionPresent }));
    c.once('error', reject);
  });
}

async function subscribe({ topic, qos }) {
  const granted = await client.subscribeAsync(topic, { qos });
  return { granted: granted[0].qos };
}

async function publish({ topic, payload, qos = 0, retain = false }) {
  await client.publishAsync(topic, payload, { qos, retain });
  return {};
}

async function disconnect() {
  await client.endAsync();
  return {};
}

const commands = { connect, subscribe, publish, disconnect };
let queue = Promise.resolve();
const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const { cmd, ...args } = JSON.parse(line);
  queue = queue.then(async () => {
    if (cmd === 'exit') process.exit(0);
    try {
      say({ reply: cmd, ok: true, ...(await commands[cmd](args)) });
    } catch (err) {
      say({ reply: cmd, ok: false, error: String(err) });
    }
  });
});
lines.on('close', () => queue.then(() => process.exit(0)));
say({ event: 'ready' });
