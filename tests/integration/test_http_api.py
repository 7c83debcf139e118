"""The HTTP listener (docs/web.md, "The HTTP listener", "/metrics", "The admin API"): a threaded
broker with ``http: {enabled: true, bind: 127.0.0.1:0, token: ...}``, real MQTT clients
(paho-mqtt 3.1, 3.1.1 and 5.0) on its TCP listener, and a plain HTTP client (urllib, no proxy)
on ``broker.http_port``.

What is checked:

* ``/healthz`` answers ``ok``; ``/metrics`` is Prometheus text 0.0.4 that prometheus_client
  parses, with every documented metric, per-QoS PUBLISH counters that rise by exactly a known
  workload, gauges that agree with the ``$SYS`` topics, and the SQLite commit histogram only
  with SQLite persistence;
* the admin API's bearer token (401 without or with a wrong one, 403 when none is configured);
* ``/api/v1/clients`` (fields, filters, pagination, one client, URL-quoted ids), disconnecting
  a client (MQTT 5 DISCONNECT 0x98, will published, ``discard_session``), discarding a session,
  ``/api/v1/subscriptions`` with MQTT 5 options and shared subscriptions, ``/api/v1/retained``
  with text, base64 and truncated payloads.

Every wait is bounded; every socket is on 127.0.0.1, every port is chosen by the system.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message as HeaderMessage
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BrokerThread, base_config

from .helpers import HOST, TIMEOUT, V31, V311, Clients, Paho, wait_until
from .v5helpers import Paho5, SubscribeOptions

pytestmark = pytest.mark.timeout(30)

TOKEN = "s3cret-token"  # the config wants at least 8 characters
MakeBroker = Callable[[dict[str, Any]], BrokerThread]

#: the fields of a CLIENT (docs/web.md, "The admin API")
CLIENT_FIELDS = {"client_id", "connected", "listener", "peer", "username", "protocol",
                 "keep_alive", "session_expiry_interval", "subscriptions", "queued",
                 "inflight", "connected_since"}
SUBSCRIPTION_FIELDS = {"client_id", "filter", "qos", "no_local", "retain_as_published",
                       "retain_handling", "share", "identifier"}
RETAINED_FIELDS = {"topic", "qos", "size", "payload", "encoding", "truncated"}


def http_config(token: str | None = TOKEN, sys_interval: float = 0,
                **extra: Any) -> dict[str, Any]:
    """A broker config with one TCP listener and the HTTP listener, both on a free port."""
    cfg = base_config()
    cfg["sys_interval"] = sys_interval
    cfg["http"] = {"enabled": True, "bind": f"{HOST}:0"}
    if token is not None:
        cfg["http"]["token"] = token
    cfg.update(extra)
    return cfg


# -- HTTP ------------------------------------------------------------------------------------------

# no proxy: the environment's http_proxy must not see loopback requests
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Response:
    status: int
    headers: HeaderMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        ctype = self.headers.get("Content-Type", "")
        assert ctype.startswith("application/json"), (
            f"HTTP {self.status}: Content-Type {ctype!r}, not JSON: {self.body[:200]!r}")
        return json.loads(self.body)


class Http:
    """Blocking requests to one broker's HTTP listener."""

    def __init__(self, bt: BrokerThread, token: str | None = TOKEN) -> None:
        assert bt.broker is not None
        self.port: int = bt.broker.http_port
        assert isinstance(self.port, int) and self.port > 0, self.port
        self.token = token

    def request(self, method: str, path: str, body: Any = None, *,
                auth: str | None | bool = True, timeout: float = TIMEOUT) -> Response:
        """``auth``: True = ``Bearer <token>``, False/None = no Authorization header, a string
        = that header's value."""
        headers: dict[str, str] = {}
        if auth is True:
            if self.token is not None:
                headers["Authorization"] = f"Bearer {self.token}"
        elif isinstance(auth, str):
            headers["Authorization"] = auth
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(f"http://{HOST}:{self.port}{path}", data=data,
                                     method=method, headers=headers)
        try:
            with _opener.open(req, timeout=timeout) as r:
                return Response(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            with e:
                return Response(e.code, e.headers, e.read())

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """An authorized request that must succeed (2xx); its JSON body, if any."""
        r = self.request(method, path, body)
        assert 200 <= r.status < 300, f"{method} {path}: HTTP {r.status} {r.body[:300]!r}"
        return r.json() if r.body else None

    def api(self, path: str) -> Any:
        """GET an admin API path; must answer 200 with JSON."""
        r = self.get(path)
        assert r.status == 200, f"GET {path}: HTTP {r.status} {r.body[:300]!r}"
        return r.json()

    def error(self, method: str, path: str, status: int, body: Any = None,
              auth: str | None | bool = True) -> str:
        """A request that must fail with ``status`` and a JSON ``{"error": "..."}``."""
        r = self.request(method, path, body, auth=auth)
        assert r.status == status, f"{method} {path}: HTTP {r.status}, expected {status}: " \
                                   f"{r.body[:300]!r}"
        err = r.json()
        assert isinstance(err, dict) and isinstance(err.get("error"), str) and err["error"], err
        return str(err["error"])

    def metrics(self) -> Scrape:
        r = self.get("/metrics", auth=False)
        assert r.status == 200, f"/metrics: HTTP {r.status} {r.body[:300]!r}"
        return Scrape(r.text)

    def wait_metrics(self, predicate: Callable[[Scrape], bool], what: str,
                     timeout: float = TIMEOUT) -> Scrape:
        """Scrape until ``predicate`` holds (at most ``timeout`` s); that scrape."""
        found: list[Scrape] = []

        def check() -> bool:
            s = self.metrics()
            if predicate(s):
                found.append(s)
                return True
            return False
        wait_until(check, timeout, interval=0.02, what=what)
        return found[0]


def client_path(cid: str, tail: str = "") -> str:
    return f"/api/v1/clients/{urllib.parse.quote(cid, safe='')}{tail}"


# -- /metrics ----------------------------------------------------------------------------------------

class Scrape:
    """One /metrics answer, parsed by prometheus_client."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for fam in self.families.values():
            for s in fam.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def family(self, name: str) -> Any:
        """The family ``name`` (counters: with or without ``_total``), or None."""
        return self.families.get(name) or self.families.get(name.removesuffix("_total"))

    def get(self, name: str, default: float | None = None, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        if key not in self.samples:
            assert default is not None, (
                f"no sample {name}{labels or ''} in /metrics; have "
                f"{sorted({n for n, _ in self.samples})}")
            return default
        return self.samples[key]

    def names(self) -> set[str]:
        return {n for n, _ in self.samples}


def publish_size(topic: str, payload: bytes, qos: int) -> int:
    """The bytes of an MQTT 3.1.1 PUBLISH on the wire."""
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + len(payload)
    varint = 1 if remaining < 128 else 2 if remaining < 16384 else 3
    return 1 + varint + remaining


# -- fixtures ----------------------------------------------------------------------------------------

@pytest.fixture
def paho5s() -> Iterator[Callable[..., Paho5]]:
    """Make MQTT 5 paho clients, closed at the end of the test."""
    made: list[Paho5] = []

    def make(cid: str, **kw: Any) -> Paho5:
        c = Paho5(cid, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def api(make_broker_thread: MakeBroker) -> BrokerThread:
    """A broker with the HTTP listener and the admin API token, no $SYS."""
    return make_broker_thread(http_config())


def connect5(c: Paho5, bt: BrokerThread, clean_start: bool = True, sei: int | None = None,
             keepalive: int = 60) -> Paho5:
    c.connect(bt.port, keepalive, clean_start,
              {"SessionExpiryInterval": sei} if sei is not None else None)
    return c


def gone(bt: BrokerThread, cid: str) -> None:
    """Wait until the broker has released ``cid``'s connection."""
    broker = bt.broker
    assert broker is not None
    wait_until(lambda: cid not in bt.call(lambda: list(broker.connections)),
               what=f"the broker to release {cid!r}")


def latest_after(c: Paho, topic: str, start: int, timeout: float = TIMEOUT) -> int:
    """The value of the first message on ``topic`` received after the first ``start``
    messages (a `$SYS` round that began after the state under test was reached)."""
    msgs = c.messages.wait_until(lambda ms: any(m.topic == topic for m in ms[start:]), timeout,
                                 f"a new {topic!r}")
    return int(next(m for m in msgs[start:] if m.topic == topic).payload.decode().split()[0])


# -- the listener ------------------------------------------------------------------------------------

def test_healthz_needs_no_token(api: BrokerThread) -> None:
    http = Http(api)
    r = http.get("/healthz", auth=False)
    assert r.status == 200, r
    assert r.text.strip() == "ok"


def test_metrics_format_and_documented_names(api: BrokerThread) -> None:
    """Text format 0.0.4, no token needed, every documented metric with its type, names
    prefixed ``mqttbroker_``, counters ending in ``_total``."""
    http = Http(api)
    r = http.get("/metrics", auth=False)
    assert r.status == 200, r
    ctype = r.headers.get("Content-Type", "")
    assert ctype.startswith("text/plain"), ctype
    assert "version=0.0.4" in ctype.replace(" ", ""), ctype
    s = Scrape(r.text)
    assert s.families, r.text[:500]
    documented = {
        "mqttbroker_info": "gauge",
        "mqttbroker_uptime_seconds": "gauge",
        "mqttbroker_clients_connected": "gauge",
        "mqttbroker_clients_maximum": "gauge",
        "mqttbroker_listener_connections": "gauge",
        "mqttbroker_connections_total": "counter",
        "mqttbroker_connections_refused_total": "counter",
        "mqttbroker_connections_rate_limited_total": "counter",
        "mqttbroker_sessions": "gauge",
        "mqttbroker_sessions_evicted_total": "counter",
        "mqttbroker_subscriptions": "gauge",
        "mqttbroker_packets_received_total": "counter",
        "mqttbroker_packets_sent_total": "counter",
        "mqttbroker_bytes_received_total": "counter",
        "mqttbroker_bytes_sent_total": "counter",
        "mqttbroker_publish_received_total": "counter",
        "mqttbroker_publish_received_bytes_total": "counter",
        "mqttbroker_publish_sent_total": "counter",
        "mqttbroker_publish_sent_bytes_total": "counter",
        "mqttbroker_publish_dropped_total": "counter",
        "mqttbroker_retained_messages": "gauge",
        "mqttbroker_retained_bytes": "gauge",
        "mqttbroker_retained_dropped_total": "counter",
        "mqttbroker_queued_messages": "gauge",
        "mqttbroker_queued_bytes": "gauge",
        "mqttbroker_inflight_messages": "gauge",
        "mqttbroker_protocol_errors_total": "counter",
        "mqttbroker_auth_failures_total": "counter",
    }
    missing = [n for n in documented if s.family(n) is None]
    assert not missing, f"missing from /metrics: {missing}"
    wrong = {n: s.family(n).type for n, t in documented.items() if s.family(n).type != t}
    assert not wrong, f"wrong types: {wrong}"
    # ours are mqttbroker_*; beside them only the process_* families every Prometheus
    # exporter has (Linux /proc), with the broker process's own figures
    for fam in s.families.values():
        assert fam.name.startswith(("mqttbroker_", "process_")), fam.name
        if fam.type == "counter":
            assert all(x.name.endswith("_total") for x in fam.samples
                       if not x.name.endswith("_created")), fam.samples
    assert s.get("process_resident_memory_bytes") > 1_000_000
    assert s.get("process_open_fds") >= 3  # at least the listener and the HTTP connection
    assert s.family("process_cpu_seconds").type == "counter"
    # unlabelled metrics have their one sample now
    for name in ("mqttbroker_uptime_seconds", "mqttbroker_clients_connected",
                 "mqttbroker_connections_total", "mqttbroker_bytes_received_total",
                 "mqttbroker_retained_messages", "mqttbroker_queued_messages"):
        assert s.get(name) >= 0
    info = [x for x in s.family("mqttbroker_info").samples if x.name == "mqttbroker_info"]
    assert len(info) == 1 and info[0].value == 1 and info[0].labels.get("version"), info
    assert s.get("mqttbroker_clients_connected") == 0


def test_metrics_publish_counters_follow_a_workload(api: BrokerThread,
                                                    paho_for: Callable[..., Clients]) -> None:
    """5 QoS 0, 4 QoS 1 and 3 QoS 2 PUBLISH of known sizes to one QoS 2 subscriber: the
    per-QoS counters in and out rise by exactly those numbers, byte counters by at least the
    packets' sizes (no $SYS here: sys_interval 0)."""
    http = Http(api)
    clients = paho_for(api)
    sub = clients.paho("load-sub", V311)
    assert sub.subscribe(("load/t", 2)) == [2]
    pub = clients.paho("load-pub", V311)
    before = http.metrics()

    topic = "load/t"
    work = [(0, b"a" * 10)] * 5 + [(1, b"b" * 200)] * 4 + [(2, b"c" * 3000)] * 3
    for qos, payload in work:
        pub.publish(topic, payload, qos)
    sub.messages.wait_for(len(work))
    sizes = {q: sum(publish_size(topic, p, qos) for qos, p in work if qos == q) for q in (0, 1, 2)}
    counts = {q: sum(1 for qos, _ in work if qos == q) for q in (0, 1, 2)}

    def delta(s: Scrape, name: str, **labels: str) -> float:
        return s.get(name, 0, **labels) - before.get(name, 0, **labels)

    # the subscriber's PUBCOMPs may still be on their way: wait for the last counter to settle
    after = http.wait_metrics(lambda s: delta(s, "mqttbroker_packets_received_total") >= 25,
                              "the workload's acknowledgements to be counted")

    for q in (0, 1, 2):
        lab = {"qos": str(q)}
        assert delta(after, "mqttbroker_publish_received_total", **lab) == counts[q], q
        assert delta(after, "mqttbroker_publish_sent_total", **lab) == counts[q], q
        assert delta(after, "mqttbroker_publish_received_bytes_total", **lab) >= sizes[q], q
        assert delta(after, "mqttbroker_publish_sent_bytes_total", **lab) >= sizes[q], q
    total = sum(sizes.values())
    assert delta(after, "mqttbroker_bytes_received_total") >= total
    assert delta(after, "mqttbroker_bytes_sent_total") >= total
    # publisher: 12 PUBLISH + 3 PUBREL; subscriber: 4 PUBACK + 3 PUBREC + 3 PUBCOMP
    assert delta(after, "mqttbroker_packets_received_total") >= 25
    # to the subscriber: 12 PUBLISH + 3 PUBREL; to the publisher: 4 PUBACK, 3 PUBREC, 3 PUBCOMP
    assert delta(after, "mqttbroker_packets_sent_total") >= 25
    assert after.get("mqttbroker_publish_dropped_total") == before.get(
        "mqttbroker_publish_dropped_total")


def test_metrics_clients_and_sessions_agree_with_sys(make_broker_thread: MakeBroker,
                                                     paho_for: Callable[..., Clients],
                                                     paho5s: Callable[..., Paho5]) -> None:
    """clients_connected = $SYS clients/connected, sessions{online,offline} summed =
    $SYS clients/total, subscriptions = $SYS subscriptions/count; a persistent session whose
    client left is offline."""
    bt = make_broker_thread(http_config(sys_interval=1))
    http = Http(bt)
    clients = paho_for(bt)
    watcher = clients.paho("watcher", V311)
    sys = "$SYS/broker/"
    watcher.subscribe((sys + "clients/connected", 0), (sys + "clients/total", 0),
                      (sys + "subscriptions/count", 0))
    clients.paho("m-311", V311).subscribe(("x/1", 0), ("x/2", 1))
    connect5(paho5s("m-5"), bt)
    leaver = clients.paho("m-leaver", V311, clean_session=False)
    leaver.subscribe(("x/3", 1))
    leaver.disconnect()
    gone(bt, "m-leaver")

    # 3 connected (watcher, m-311, m-5), 1 offline persistent session; 3 + 3 subscriptions
    s = http.wait_metrics(lambda s: s.get("mqttbroker_clients_connected") == 3,
                          "mqttbroker_clients_connected == 3")
    assert s.get("mqttbroker_listener_connections", listener="default") == 3
    assert s.get("mqttbroker_sessions", state="online") == 3
    assert s.get("mqttbroker_sessions", state="offline") == 1
    assert s.get("mqttbroker_subscriptions") == 6
    assert s.get("mqttbroker_clients_maximum") >= 4

    start = len(watcher.messages)  # $SYS rounds from now on see this state
    assert latest_after(watcher, sys + "clients/connected", start, 3) == 3
    assert latest_after(watcher, sys + "clients/total", start, 3) == 4
    assert latest_after(watcher, sys + "subscriptions/count", start, 3) == 6
    s = http.metrics()
    assert s.get("mqttbroker_clients_connected") == 3
    assert (s.get("mqttbroker_sessions", state="online")
            + s.get("mqttbroker_sessions", state="offline")) == 4


def test_metrics_retained_agrees_with_sys(make_broker_thread: MakeBroker,
                                          paho_for: Callable[..., Clients]) -> None:
    """retained_messages counts retained topics (a replacement is not a new one, an empty
    payload deletes) and equals $SYS retained messages/count."""
    bt = make_broker_thread(http_config(sys_interval=1))
    http = Http(bt)
    clients = paho_for(bt)
    watcher = clients.paho("watcher", V311)
    topic = "$SYS/broker/retained messages/count"
    watcher.subscribe((topic, 0))
    watcher.messages.wait_for(1)  # a $SYS round is done: its retained topics are stored
    base = http.metrics()
    n0 = base.get("mqttbroker_retained_messages")
    b0 = base.get("mqttbroker_retained_bytes")

    pub = clients.paho("ret-pub", V311)
    pub.publish("ret/a", b"1" * 100, 1, retain=True)
    pub.publish("ret/b", b"2" * 50, 1, retain=True)
    pub.publish("ret/b", b"3" * 60, 1, retain=True)  # replaces
    pub.publish("ret/c", b"4", 0, retain=True)
    pub.publish("ret/c", b"", 1, retain=True)  # deletes
    s = http.wait_metrics(lambda s: s.get("mqttbroker_retained_messages") == n0 + 2,
                          f"mqttbroker_retained_messages == {n0 + 2}")
    assert s.get("mqttbroker_retained_bytes") >= b0 + 150  # 100 + 60 (the $SYS values vary)
    start = len(watcher.messages)
    assert latest_after(watcher, topic, start, 3) == n0 + 2
    assert http.metrics().get("mqttbroker_retained_messages") == n0 + 2


def test_metrics_queued_messages_of_an_offline_session(api: BrokerThread,
                                                       paho_for: Callable[..., Clients]
                                                       ) -> None:
    """Messages for an offline persistent session are queued_messages (and queued_bytes), and
    the session's ``queued`` in the admin API; delivering them empties the queue."""
    http = Http(api)
    clients = paho_for(api)
    away = clients.paho("q-away", V311, clean_session=False)
    away.subscribe(("q/t", 1))
    away.disconnect()
    gone(api, "q-away")
    assert http.metrics().get("mqttbroker_queued_messages") == 0
    pub = clients.paho("q-pub", V311)
    for i in range(3):
        pub.publish("q/t", b"%d" % i * 100, 1)
    s = http.wait_metrics(lambda s: s.get("mqttbroker_queued_messages") == 3,
                          "mqttbroker_queued_messages == 3")
    assert s.get("mqttbroker_queued_bytes") >= 300
    me = http.api(client_path("q-away"))
    assert me["connected"] is False and me["queued"] == 3, me

    back = clients.paho("q-away", V311, clean_session=False)
    back.messages.wait_for(3)
    http.wait_metrics(lambda s: s.get("mqttbroker_queued_messages") == 0,
                      "the queue to be delivered")


def test_metrics_storage_commit_histogram_with_sqlite(make_broker_thread: MakeBroker,
                                                      paho_for: Callable[..., Clients],
                                                      tmp_path: Path) -> None:
    bt = make_broker_thread(http_config(
        persistence={"backend": "sqlite", "path": str(tmp_path / "db.sqlite")}))
    http = Http(bt)
    clients = paho_for(bt)
    c = clients.paho("st-1", V311, clean_session=False)
    c.subscribe(("st/t", 1))
    c.publish("st/r", b"kept", 1, retain=True)

    s = http.wait_metrics(lambda s: s.get("mqttbroker_storage_commit_seconds_count", 0) > 0,
                          "a commit in mqttbroker_storage_commit_seconds")
    fam = s.family("mqttbroker_storage_commit_seconds")
    assert fam is not None and fam.type == "histogram"
    count = s.get("mqttbroker_storage_commit_seconds_count")
    assert s.get("mqttbroker_storage_commit_seconds_bucket", le="+Inf") == count
    assert s.get("mqttbroker_storage_commit_seconds_sum") >= 0
    assert s.get("mqttbroker_storage_pending_changes") >= 0


def test_metrics_no_storage_histogram_in_memory(api: BrokerThread,
                                                paho_for: Callable[..., Clients]) -> None:
    http = Http(api)
    c = paho_for(api).paho("mem-1", V311, clean_session=False)
    c.subscribe(("m/t", 1))
    c.publish("m/r", b"kept", 1, retain=True)
    s = http.metrics()
    assert s.family("mqttbroker_storage_commit_seconds") is None
    assert not [n for n in s.names() if n.startswith("mqttbroker_storage_commit_seconds")]


# -- the admin API: auth -----------------------------------------------------------------------------

def test_api_token(api: BrokerThread) -> None:
    http = Http(api)
    http.error("GET", "/api/v1/clients", 401, auth=None)
    http.error("GET", "/api/v1/clients", 401, auth="Bearer wrong")
    http.error("GET", "/api/v1/clients", 401, auth=f"Bearer {TOKEN}x")
    http.error("GET", "/api/v1/clients", 401, auth=TOKEN)  # no scheme
    http.error("GET", "/api/v1/retained", 401, auth=None)
    http.error("POST", client_path("nobody", "/disconnect"), 401, auth="Bearer wrong")
    http.error("DELETE", client_path("nobody"), 401, auth=None)
    assert http.api("/api/v1/clients") == {"total": 0, "clients": []}
    # the unauthenticated paths stay open
    assert http.get("/healthz", auth=None).status == 200
    assert http.get("/metrics", auth=None).status == 200


def test_api_off_without_a_token(make_broker_thread: MakeBroker) -> None:
    bt = make_broker_thread(http_config(token=None))
    http = Http(bt, token=None)
    http.error("GET", "/api/v1/clients", 403, auth=None)
    http.error("GET", "/api/v1/clients", 403, auth="Bearer anything")
    http.error("GET", "/api/v1/clients", 403, auth="Bearer ")
    assert http.get("/healthz", auth=None).status == 200
    assert http.get("/metrics", auth=None).status == 200


# -- the admin API: clients ----------------------------------------------------------------------

def test_api_clients_list(api: BrokerThread, paho_for: Callable[..., Clients],
                          paho5s: Callable[..., Paho5]) -> None:
    """Connected clients (3.1, 3.1.1, 5.0) and an offline persistent session, with the
    documented fields, sorted by client id; ``connected=`` filters."""
    http = Http(api)
    clients = paho_for(api)
    a = clients.paho("cl-a", V311, keepalive=30)
    b = connect5(paho5s("cl-b"), api, sei=300, keepalive=45)
    assert b.subscribe(("b/1", 1), ("b/2", 2)) == [1, 2]
    c = clients.paho("cl-c", V311, clean_session=False)
    c.subscribe(("c/1", 1))
    c.disconnect()
    gone(api, "cl-c")
    d = clients.paho("cl-d", V31)
    ports = {cid: cl.client.socket().getsockname()[1]  # type: ignore[union-attr]
             for cid, cl in (("cl-a", a), ("cl-b", b), ("cl-d", d))}
    now = datetime.now(UTC)

    got = http.api("/api/v1/clients")
    assert got["total"] == 4
    rows = got["clients"]
    assert [r["client_id"] for r in rows] == ["cl-a", "cl-b", "cl-c", "cl-d"]
    for r in rows:
        assert CLIENT_FIELDS <= set(r), f"missing {CLIENT_FIELDS - set(r)} in {r}"
    by = {r["client_id"]: r for r in rows}
    for cid, protocol in (("cl-a", "3.1.1"), ("cl-b", "5.0"), ("cl-d", "3.1")):
        r = by[cid]
        assert r["connected"] is True, r
        assert r["protocol"] == protocol, r
        assert r["listener"] == "default", r
        assert HOST in r["peer"] and str(ports[cid]) in r["peer"], (r, ports[cid])
        assert r["username"] is None, r
        since = datetime.fromisoformat(r["connected_since"])
        offset = since.utcoffset()
        assert offset is not None and offset.total_seconds() == 0, r
        assert abs((since - now).total_seconds()) < 60, (since, now)
    assert by["cl-a"]["keep_alive"] == 30 and by["cl-b"]["keep_alive"] == 45
    assert by["cl-b"]["session_expiry_interval"] == 300
    assert by["cl-b"]["subscriptions"] == 2 and by["cl-a"]["subscriptions"] == 0
    assert by["cl-a"]["queued"] == 0 and by["cl-a"]["inflight"] == 0
    off = by["cl-c"]
    assert off["connected"] is False, off
    assert off["listener"] is None and off["peer"] is None and off["protocol"] is None, off
    assert off["subscriptions"] == 1, off

    offline = http.api("/api/v1/clients?connected=false")
    assert offline["total"] == 1 and [r["client_id"] for r in offline["clients"]] == ["cl-c"]
    online = http.api("/api/v1/clients?connected=true")
    assert online["total"] == 3
    assert [r["client_id"] for r in online["clients"]] == ["cl-a", "cl-b", "cl-d"]


def test_api_clients_pagination(api: BrokerThread, paho_for: Callable[..., Clients]) -> None:
    http = Http(api)
    clients = paho_for(api)
    ids = [f"pg-{i}" for i in range(5)]
    for cid in reversed(ids):
        clients.paho(cid, V311)
    page = http.api("/api/v1/clients?limit=2")
    assert page["total"] == 5 and [r["client_id"] for r in page["clients"]] == ids[:2]
    page = http.api("/api/v1/clients?limit=2&offset=2")
    assert page["total"] == 5 and [r["client_id"] for r in page["clients"]] == ids[2:4]
    page = http.api("/api/v1/clients?limit=2&offset=4")
    assert page["total"] == 5 and [r["client_id"] for r in page["clients"]] == ids[4:]
    page = http.api("/api/v1/clients?offset=5")
    assert page == {"total": 5, "clients": []}
    page = http.api("/api/v1/clients?offset=3&connected=true")
    assert page["total"] == 5 and [r["client_id"] for r in page["clients"]] == ids[3:]


def test_api_one_client(api: BrokerThread, paho_for: Callable[..., Clients]) -> None:
    """One client with its ``subscription_list``; 404 for an unknown id; an id with a slash
    and a space, URL-quoted, works."""
    http = Http(api)
    clients = paho_for(api)
    odd = "dev/1 x"
    c = clients.paho(odd, V311)
    assert c.subscribe(("dev/1/cmd", 1), ("dev/+/all", 0)) == [1, 0]
    me = http.api(client_path(odd))
    assert CLIENT_FIELDS <= set(me) and me["client_id"] == odd and me["connected"] is True, me
    assert me["subscriptions"] == 2
    subs = sorted(me["subscription_list"], key=lambda s: s["filter"])
    assert [(s["filter"], s["qos"]) for s in subs] == [("dev/+/all", 0), ("dev/1/cmd", 1)]
    for s in subs:
        assert SUBSCRIPTION_FIELDS <= set(s) and s["client_id"] == odd, s
        assert s["share"] is None and s["identifier"] is None, s
    assert [r["client_id"] for r in http.api("/api/v1/clients")["clients"]] == [odd]
    http.error("GET", client_path("nobody"), 404)
    http.error("GET", client_path("dev/1"), 404)


# -- the admin API: disconnect and discard -------------------------------------------------------

def test_api_disconnect_mqtt5_client(api: BrokerThread, paho_for: Callable[..., Clients],
                                     paho5s: Callable[..., Paho5]) -> None:
    """An MQTT 5 client gets DISCONNECT 0x98 Administrative action, its will is published,
    it is gone from the list (clean start, no session expiry: its session ends too)."""
    http = Http(api)
    watcher = paho_for(api).paho("dc-watcher", V311)
    watcher.subscribe(("will/#", 1))
    victim = connect5(paho5s("dc-victim", will=("will/dc-victim", b"gone", 1, False)), api)
    http.ok("POST", client_path("dc-victim", "/disconnect"))
    assert victim.wait_disconnected() == 0x98
    assert victim.disconnect_from_server
    will = watcher.messages.wait_topic("will/dc-victim")
    assert will.payload == b"gone"
    gone(api, "dc-victim")
    assert [r["client_id"] for r in http.api("/api/v1/clients")["clients"]] == ["dc-watcher"]
    http.error("GET", client_path("dc-victim"), 404)
    http.error("POST", client_path("dc-victim", "/disconnect"), 404)
    http.error("POST", client_path("nobody", "/disconnect"), 404)


def test_api_disconnect_mqtt311_client_publishes_will(api: BrokerThread,
                                                      paho_for: Callable[..., Clients]
                                                      ) -> None:
    """A 3.1.1 client (no DISCONNECT to send it) is closed; its will is published; a quoted
    id works."""
    http = Http(api)
    clients = paho_for(api)
    watcher = clients.paho("dc-watcher", V311)
    watcher.subscribe(("will/#", 1))
    cid = "dev/2 y"
    victim = clients.paho(cid, V311, will=("will/dev2", b"bye", 1, False))
    http.ok("POST", client_path(cid, "/disconnect"))
    assert victim.disconnected.wait(TIMEOUT), "the broker kept the 3.1.1 client connected"
    assert watcher.messages.wait_topic("will/dev2").payload == b"bye"
    gone(api, cid)
    http.error("GET", client_path(cid), 404)


def test_api_disconnect_keeps_or_discards_a_persistent_session(
        api: BrokerThread, paho_for: Callable[..., Clients],
        paho5s: Callable[..., Paho5]) -> None:
    http = Http(api)
    keeper = connect5(paho5s("ps-keep"), api, sei=300)
    keeper.subscribe(("k/t", 1))
    dropper = connect5(paho5s("ps-drop"), api, sei=300)
    dropper.subscribe(("d/t", 1))

    http.ok("POST", client_path("ps-keep", "/disconnect"))
    assert keeper.wait_disconnected() == 0x98
    http.ok("POST", client_path("ps-drop", "/disconnect"), {"discard_session": True})
    assert dropper.wait_disconnected() == 0x98
    gone(api, "ps-keep")
    gone(api, "ps-drop")

    kept = http.api(client_path("ps-keep"))
    assert kept["connected"] is False and kept["subscriptions"] == 1, kept
    http.error("GET", client_path("ps-drop"), 404)
    listed = http.api("/api/v1/clients")
    assert [r["client_id"] for r in listed["clients"]] == ["ps-keep"]

    again = connect5(paho5s("ps-drop"), api, clean_start=False, sei=300)
    assert again.session_present is False
    back = connect5(paho5s("ps-keep"), api, clean_start=False, sei=300)
    assert back.session_present is True


def test_api_delete_offline_session(api: BrokerThread,
                                    paho_for: Callable[..., Clients]) -> None:
    """DELETE discards an offline persistent session (queued messages too): a reconnect finds
    no session; 404 when there is none."""
    http = Http(api)
    clients = paho_for(api)
    away = clients.paho("del-away", V311, clean_session=False)
    away.subscribe(("del/t", 1))
    away.disconnect()
    gone(api, "del-away")
    clients.paho("del-pub", V311).publish("del/t", b"queued", 1)
    wait_until(lambda: http.api(client_path("del-away"))["queued"] == 1, what="a queued message")

    http.ok("DELETE", client_path("del-away"))
    http.error("GET", client_path("del-away"), 404)
    assert "del-away" not in [r["client_id"] for r in http.api("/api/v1/clients")["clients"]]
    assert http.metrics().get("mqttbroker_queued_messages") == 0
    http.error("DELETE", client_path("del-away"), 404)
    http.error("DELETE", client_path("nobody"), 404)

    back = clients.paho("del-away", V311, clean_session=False)
    assert back.session_present is False
    time.sleep(0.2)
    assert back.messages.messages == []


def test_api_delete_connected_client(api: BrokerThread, paho_for: Callable[..., Clients],
                                     paho5s: Callable[..., Paho5]) -> None:
    """DELETE of a connected client disconnects it first (0x98, will published), then
    discards its session."""
    http = Http(api)
    watcher = paho_for(api).paho("dl-watcher", V311)
    watcher.subscribe(("will/#", 1))
    victim = connect5(paho5s("dl-victim", will=("will/dl", b"deleted", 1, False)), api,
                      sei=300)
    http.ok("DELETE", client_path("dl-victim"))
    assert victim.wait_disconnected() == 0x98
    assert watcher.messages.wait_topic("will/dl").payload == b"deleted"
    gone(api, "dl-victim")
    http.error("GET", client_path("dl-victim"), 404)
    again = connect5(paho5s("dl-victim"), api, clean_start=False, sei=300)
    assert again.session_present is False


# -- the admin API: subscriptions and retained ---------------------------------------------------

def test_api_subscriptions(api: BrokerThread, paho_for: Callable[..., Clients],
                           paho5s: Callable[..., Paho5]) -> None:
    """Every subscription with its MQTT 5 options, shared ones split into share and filter;
    ``client_id=`` selects one client's."""
    http = Http(api)
    s5 = connect5(paho5s("sub-5"), api)
    opts = SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True, retainHandling=2)
    assert s5.subscribe(("opt/t", opts), properties={"SubscriptionIdentifier": 7}) == [1]
    assert s5.subscribe(("$share/g/t", 2)) == [2]
    s3 = paho_for(api).paho("sub-3", V311)
    assert s3.subscribe(("plain/#", 0)) == [0]

    got = http.api("/api/v1/subscriptions")
    assert got["total"] == 3
    rows = got["subscriptions"]
    for r in rows:
        assert SUBSCRIPTION_FIELDS <= set(r), f"missing {SUBSCRIPTION_FIELDS - set(r)} in {r}"
    assert [r["client_id"] for r in rows] == sorted(r["client_id"] for r in rows)
    by = {(r["client_id"], r["filter"]): r for r in rows}
    assert set(by) == {("sub-3", "plain/#"), ("sub-5", "opt/t"), ("sub-5", "t")}, rows
    assert by[("sub-5", "opt/t")] == {
        **by[("sub-5", "opt/t")], "qos": 1, "no_local": True, "retain_as_published": True,
        "retain_handling": 2, "share": None, "identifier": 7}
    assert by[("sub-5", "t")] == {
        **by[("sub-5", "t")], "qos": 2, "no_local": False, "retain_as_published": False,
        "retain_handling": 0, "share": "g", "identifier": None}
    assert by[("sub-3", "plain/#")] == {
        **by[("sub-3", "plain/#")], "qos": 0, "no_local": False, "retain_as_published": False,
        "retain_handling": 0, "share": None, "identifier": None}

    mine = http.api("/api/v1/subscriptions?client_id=sub-5")
    assert mine["total"] == 2 and {r["client_id"] for r in mine["subscriptions"]} == {"sub-5"}
    assert http.api("/api/v1/subscriptions?client_id=nobody") == {"total": 0,
                                                                  "subscriptions": []}
    page = http.api("/api/v1/subscriptions?limit=1&offset=1")
    assert page["total"] == 3 and len(page["subscriptions"]) == 1
    assert page["subscriptions"][0] == rows[1]


def test_api_retained(api: BrokerThread, paho_for: Callable[..., Clients]) -> None:
    """Retained topics sorted by topic, text as UTF-8, binary as base64, ``filter`` with
    wildcards, ``max_payload`` truncation (default 1024 bytes)."""
    http = Http(api)
    pub = paho_for(api).paho("ret-pub", V311)
    text = "héllo wörld"
    binary = bytes([0xFF, 0x00, 0x80, 0xFE, 0x01, 0x02])
    big = b"x" * 2000
    pub.publish("a/1", text.encode(), 1, retain=True)
    pub.publish("a/2", binary, 0, retain=True)
    pub.publish("a/b/c", b"deep", 2, retain=True)
    pub.publish("b/big", big, 1, retain=True)
    pub.publish("a/gone", b"x", 1, retain=True)
    pub.publish("a/gone", b"", 1, retain=True)  # deleted
    wait_until(lambda: http.api("/api/v1/retained")["total"] == 4, what="4 retained topics")

    got = http.api("/api/v1/retained")
    rows = got["retained"]
    assert [r["topic"] for r in rows] == ["a/1", "a/2", "a/b/c", "b/big"]
    for r in rows:
        assert RETAINED_FIELDS <= set(r), f"missing {RETAINED_FIELDS - set(r)} in {r}"
    by = {r["topic"]: r for r in rows}
    assert by["a/1"] == {**by["a/1"], "qos": 1, "size": len(text.encode()), "payload": text,
                         "encoding": "utf-8", "truncated": False}
    assert by["a/2"] == {**by["a/2"], "qos": 0, "size": len(binary), "encoding": "base64",
                         "truncated": False}
    assert base64.b64decode(by["a/2"]["payload"]) == binary
    assert by["a/b/c"] == {**by["a/b/c"], "qos": 2, "payload": "deep", "truncated": False}
    assert by["b/big"] == {**by["b/big"], "size": 2000, "payload": "x" * 1024,
                           "encoding": "utf-8", "truncated": True}

    plus = http.api("/api/v1/retained?filter=" + urllib.parse.quote("a/+", safe=""))
    assert plus["total"] == 2 and [r["topic"] for r in plus["retained"]] == ["a/1", "a/2"]
    hash_ = http.api("/api/v1/retained?filter=" + urllib.parse.quote("a/#", safe=""))
    assert [r["topic"] for r in hash_["retained"]] == ["a/1", "a/2", "a/b/c"]
    exact = http.api("/api/v1/retained?filter=b/big&max_payload=10")
    assert exact["total"] == 1
    assert exact["retained"][0] == {**exact["retained"][0], "payload": "x" * 10, "size": 2000,
                                    "truncated": True}
    assert http.api("/api/v1/retained?filter=none/%23") == {"total": 0, "retained": []}
    page = http.api("/api/v1/retained?limit=2&offset=1")
    assert page["total"] == 4 and [r["topic"] for r in page["retained"]] == ["a/2", "a/b/c"]



def test_api_retained_binary_payload_cut_stays_base64(api: BrokerThread,
                                                      paho_for: Callable[..., Clients]
                                                      ) -> None:
    """A binary (not UTF-8) payload cut at ``max_payload`` bytes is still those bytes, in
    base64: neither an empty string nor a shorter prefix that happens to decode as UTF-8."""
    http = Http(api)
    pub = paho_for(api).paho("bin-pub", V311)
    cases = {"bin/ff": bytes([0xFF, 0x00, 0x80, 0xFE, 0x01, 0x02]),
             "bin/01": bytes([0x01, 0x02, 0xFF, 0xFE])}
    for topic, payload in cases.items():
        pub.publish(topic, payload, 1, retain=True)
    wait_until(lambda: http.api("/api/v1/retained")["total"] == 2, what="2 retained topics")
    for topic, payload in cases.items():
        whole = http.api(f"/api/v1/retained?filter={topic}")["retained"][0]
        assert whole["encoding"] == "base64" and whole["truncated"] is False, whole
        assert base64.b64decode(whole["payload"]) == payload
        for n in (1, 3):
            got = http.api(f"/api/v1/retained?filter={topic}&max_payload={n}")["retained"][0]
            assert got["size"] == len(payload) and got["truncated"] is True, got
            assert got["encoding"] == "base64", (n, got)
            assert base64.b64decode(got["payload"]) == payload[:n], (n, got)


def test_api_bad_requests_get_400_with_a_reason(api: BrokerThread,
                                                paho_for: Callable[..., Clients]) -> None:
    """Bad query parameters and bodies are refused with 400 and a JSON error naming the
    problem; the broker goes on serving (a following request succeeds)."""
    http = Http(api)
    assert "integers" in http.error("GET", "/api/v1/clients?limit=abc", 400)
    assert "limit must be" in http.error("GET", "/api/v1/clients?limit=0", 400)
    assert "limit must be" in http.error("GET", "/api/v1/subscriptions?limit=10001", 400)
    assert "offset" in http.error("GET", "/api/v1/clients?offset=-1", 400)
    assert "connected" in http.error("GET", "/api/v1/clients?connected=maybe", 400)
    assert "filter" in http.error("GET", "/api/v1/retained?filter=a/%23/b", 400)
    assert "max_payload" in http.error("GET", "/api/v1/retained?max_payload=-1", 400)
    c = paho_for(api)
    c.paho("bad-body", V311)
    assert "discard_session" in http.error("POST", client_path("bad-body", "/disconnect"), 400,
                                           body={"discard_session": "yes"})
    # a body that is not JSON at all, over a raw request
    req = urllib.request.Request(
        f"http://{HOST}:{http.port}{client_path('bad-body', '/disconnect')}", data=b"{not json",
        method="POST", headers={"Authorization": f"Bearer {TOKEN}",
                                "Content-Type": "application/json"})
    try:
        _opener.open(req, timeout=TIMEOUT)
        raise AssertionError("a body that is not JSON was accepted")
    except urllib.error.HTTPError as e:
        with e:
            assert e.code == 400 and "JSON" in json.loads(e.read())["error"]
    # nothing of this disconnected the client or stopped the API
    assert http.api(client_path("bad-body"))["connected"] is True
