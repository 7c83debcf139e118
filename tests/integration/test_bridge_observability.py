"""What an operator sees of a bridge (issue 16 point 4; docs/web.md): ``/metrics``
(``mqttbroker_bridge_*{bridge="<name>"}``), the admin API (``/api/v1/bridges``), ``$SYS``
(``$SYS/broker/bridges/<name>/...``) and ``/dashboard.json``.

Two of our brokers over real sockets: a "cloud" and an "edge" with a bridge to it, its HTTP
listener on, paho clients publishing at the edge and subscribing at the cloud. Each test walks
the bridge through what operators need to see: connected, messages carried (``sent`` rises
by exactly what was published at QoS 1), the cloud gone (``connected`` 0, the backlog
growing, the error), the cloud back (the backlog drained, a second connect), and a full
backlog dropping messages. Every wait is a bounded poll; every port is chosen by the system.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from mqttbroker.core.hooks import BridgeStats
from tests.conftest import BrokerThread, base_config

from .brokerproc import free_port
from .helpers import HOST, TIMEOUT, V311, Clients, Paho, unique_id, wait_until
from .test_http_api import TOKEN, Http

pytestmark = pytest.mark.timeout(60)

MakeBroker = Callable[[dict[str, Any]], BrokerThread]
NAME = "cloud"  # the bridge's name
RULE = {"pattern": "data/#", "direction": "out", "qos": 1, "remote_prefix": "edge-1/"}

#: per bridge, labelled bridge="<name>": name -> Prometheus type
FAMILIES = {
    "mqttbroker_bridge_connected": "gauge",
    "mqttbroker_bridge_queued_messages": "gauge",
    "mqttbroker_bridge_queued_bytes": "gauge",
    "mqttbroker_bridge_inflight_messages": "gauge",
    "mqttbroker_bridge_sent_total": "counter",
    "mqttbroker_bridge_received_total": "counter",
    "mqttbroker_bridge_dropped_total": "counter",
    "mqttbroker_bridge_connects_total": "counter",
}
#: a BRIDGE of the admin API: every field of core.hooks.BridgeStats
BRIDGE_FIELDS = {f.name for f in dataclasses.fields(BridgeStats)}
SYS_FIELDS = {"connected", "remote", "queued", "inflight", "sent", "received", "dropped"}


def cloud_config(port: int, http: bool = False) -> dict[str, Any]:
    cfg = base_config()
    cfg["listeners"]["default"]["bind"] = f"{HOST}:{port}"
    if http:
        cfg["http"] = {"enabled": True, "bind": f"{HOST}:0", "token": TOKEN}
    return cfg


def edge_config(cloud_port: int, *, sys_interval: float = 0, rules: list[Any] | None = None,
                **options: Any) -> dict[str, Any]:
    """An edge broker with the HTTP listener (admin API token ``TOKEN``) and one bridge,
    ``NAME``, to ``127.0.0.1:cloud_port``, reconnecting every 0.2..0.5 s. ``notifications``
    is off unless asked for: the state message the bridge would send to the cloud is not one
    a test publishes, and would blur the exact counts."""
    cfg = base_config()
    cfg["sys_interval"] = sys_interval
    cfg["http"] = {"enabled": True, "bind": f"{HOST}:0", "token": TOKEN}
    cfg["bridges"] = {NAME: {"addresses": [f"{HOST}:{cloud_port}"], "protocol": "mqttv5",
                             "client_id": unique_id("edge-"), "topics": rules or [RULE],
                             "restart_timeout": [0.2, 0.5], "notifications": False,
                             **options}}
    return cfg


@dataclass
class Site:
    """A cloud on a fixed port (so that it can be stopped and started again) and an edge
    bridged to it."""

    make: MakeBroker
    cloud_port: int
    cloud: BrokerThread | None
    edge: BrokerThread
    http: Http
    clients: list[Paho] = field(default_factory=list)

    @property
    def remote(self) -> str:
        return f"{HOST}:{self.cloud_port}"

    def stop_cloud(self) -> None:
        assert self.cloud is not None
        self.cloud.stop()
        self.cloud = None

    def start_cloud(self) -> None:
        assert self.cloud is None
        self.cloud = self.make(cloud_config(self.cloud_port))

    def paho(self, port: int) -> Paho:
        c = Paho(unique_id("p-"), V311)
        self.clients.append(c)
        c.connect(port)
        return c

    def publish_at_edge(self, payloads: list[bytes], topic: str = "data/t") -> None:
        """QoS 1, each acknowledged by the edge (so in the bridge's hands) before returning."""
        c = self.paho(self.edge.port)
        for p in payloads:
            c.publish(topic, p, qos=1)
        c.disconnect()

    # what the operator sees, one way each
    def metrics(self) -> dict[str, float]:
        """The bridge's sample of each ``mqttbroker_bridge_*`` family (absent: missing)."""
        s = self.http.metrics()
        return {name: s.samples[(name, (("bridge", NAME),))] for name in FAMILIES
                if (name, (("bridge", NAME),)) in s.samples}

    def api(self) -> dict[str, Any]:
        got: dict[str, Any] = self.http.api(f"/api/v1/bridges/{NAME}")
        return got


def poll(what: str, read: Callable[[], Any], check: Callable[[Any], bool],
         timeout: float = TIMEOUT) -> Any:
    """Read until ``check(value)`` holds, at most ``timeout`` s; the failure names ``what``
    and the last value read."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if check(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value}")
        time.sleep(0.02)


def has(**want: Any) -> Callable[[dict[str, Any]], bool]:
    """A check that a dict has these items."""
    return lambda got: all(got.get(k) == v for k, v in want.items())


def metric_is(**want: float) -> Callable[[dict[str, float]], bool]:
    """A check on :meth:`Site.metrics`: ``sent_total=3`` means
    ``mqttbroker_bridge_sent_total == 3``."""
    return lambda got: all(got.get(f"mqttbroker_bridge_{k}") == v for k, v in want.items())


@pytest.fixture
def site(make_broker_thread: MakeBroker) -> Iterator[Callable[..., Site]]:
    """Start a cloud and an edge bridged to it (``edge_config`` options); clients closed at
    the end (the brokers by make_broker_thread)."""
    made: list[Site] = []

    def make(cloud: bool = True, **options: Any) -> Site:
        port = free_port()
        cloud_bt = make_broker_thread(cloud_config(port)) if cloud else None
        edge = make_broker_thread(edge_config(port, **options))
        s = Site(make_broker_thread, port, cloud_bt, edge, Http(edge))
        made.append(s)
        return s

    yield make
    for s in made:
        for c in s.clients:
            c.close()


def iso_age(text: str) -> float:
    """Seconds since an ISO 8601 UTC time of the API."""
    t = datetime.fromisoformat(text)
    assert t.tzinfo is not None and t.utcoffset() == UTC.utcoffset(None), text
    return (datetime.now(UTC) - t).total_seconds()


# -- /metrics ------------------------------------------------------------------------------------


def test_metrics_follow_the_bridge_through_an_outage(site: Callable[..., Site]) -> None:
    """connected 1, sent rising by the QoS 1 messages carried, connected 0 with the cloud
    gone while the backlog (messages and bytes) grows, then drained on a second connect."""
    s = site()
    poll("mqttbroker_bridge_connected 1", s.metrics, metric_is(connected=1))
    scrape = s.http.metrics()
    for name, kind in FAMILIES.items():
        fam = scrape.family(name)
        assert fam is not None, f"{name} missing from /metrics"
        assert fam.type == kind, (name, fam.type)
        labels = [x.labels for x in fam.samples if not x.name.endswith("_created")]
        assert labels == [{"bridge": NAME}], (name, labels)
    assert s.metrics() == {name: (1 if name.endswith(("connected", "connects_total")) else 0)
                           for name in FAMILIES}

    # carried: 10 QoS 1 messages reach the cloud; sent counts each PUBACK, nothing waits
    at_cloud = s.paho(s.cloud_port)
    at_cloud.subscribe(("edge-1/#", 1))
    s.publish_at_edge([f"m{i}".encode() for i in range(10)])
    at_cloud.messages.wait_for(10)
    poll("sent_total 10, nothing queued", s.metrics,
         metric_is(sent_total=10, queued_messages=0, queued_bytes=0, inflight_messages=0,
                   connected=1, dropped_total=0, received_total=0, connects_total=1))
    assert [m.payload for m in at_cloud.messages.messages] == [f"m{i}".encode()
                                                              for i in range(10)]

    # the cloud is gone: connected 0; what is published now waits in the backlog
    s.stop_cloud()
    poll("mqttbroker_bridge_connected 0", s.metrics, metric_is(connected=0))
    waiting = [b"down-%d" % i for i in range(5)]
    s.publish_at_edge(waiting)
    poll("queued_messages 5 while the cloud is down", s.metrics,
         metric_is(connected=0, queued_messages=5, queued_bytes=sum(map(len, waiting)),
                   inflight_messages=0, sent_total=10, dropped_total=0))

    # the cloud is back: a second connect, the backlog sent and acknowledged
    s.start_cloud()
    poll("a second connect and the backlog drained", s.metrics,
         metric_is(connected=1, connects_total=2, sent_total=15, queued_messages=0,
                   queued_bytes=0, inflight_messages=0), timeout=15)


def test_metrics_count_drops_of_a_full_backlog(site: Callable[..., Site]) -> None:
    """No cloud at all: the bridge never connects, its backlog holds ``max_messages`` and
    drops the rest (drop_oldest), in /metrics, the API and $SYS alike."""
    s = site(cloud=False, sys_interval=0.2,
             queue={"max_messages": 3, "full_policy": "drop_oldest"})
    sys_reader = s.paho(s.edge.port)
    sys_reader.subscribe((f"$SYS/broker/bridges/{NAME}/#", 0))
    payloads = [b"p%d" % i for i in range(5)]
    s.publish_at_edge(payloads)
    poll("dropped_total 2, queued 3", s.metrics,
         metric_is(connected=0, connects_total=0, dropped_total=2, queued_messages=3,
                   queued_bytes=sum(map(len, payloads[2:])), sent_total=0))
    info = s.api()
    assert has(connected=False, connects=0, dropped=2, queued=3, sent=0, remote=None,
               connected_since=None)(info), info
    assert isinstance(info["last_error"], str) and s.remote in info["last_error"], info
    sys = poll("$SYS dropped 2, queued 3", lambda: sys_latest(sys_reader),
               has(dropped="2", queued="3", connected="0"))
    assert sys["remote"] == "", sys


# -- the admin API --------------------------------------------------------------------------------


def test_api_bridges_list_and_one(site: Callable[..., Site]) -> None:
    """Every BridgeStats field, times in ISO 8601 UTC; the list and one bridge agree; an
    unknown name is a JSON 404; the token is needed as for the rest of the API."""
    s = site()
    info = poll("the bridge connected in /api/v1/bridges", s.api, has(connected=True))
    listed = s.http.api("/api/v1/bridges")
    assert listed["total"] == 1 and len(listed["bridges"]) == 1, listed
    assert listed["bridges"][0] == info
    assert set(info) == BRIDGE_FIELDS, set(info) ^ BRIDGE_FIELDS
    assert info["name"] == NAME
    assert info["addresses"] == [s.remote]
    assert info["remote"] == s.remote
    assert 0 <= iso_age(info["connected_since"]) < 30, info
    assert has(connects=1, sent=0, received=0, dropped=0, queued=0, queued_bytes=0,
               inflight=0, last_error=None)(info), info

    s.publish_at_edge([b"a", b"bb", b"ccc"])
    poll("sent 3 in the API", s.api, has(sent=3, queued=0, inflight=0))

    s.stop_cloud()
    info = poll("connected false in the API", s.api, has(connected=False))
    assert info["remote"] is None and info["connected_since"] is None, info
    s.publish_at_edge([b"x" * 10, b"y" * 20])
    info = poll("queued 2 (30 bytes) in the API while the cloud is down", s.api,
                has(connected=False, queued=2, queued_bytes=30, sent=3))
    # first the cloud's DISCONNECT (0x8B, shutting down), then the failed reconnects
    poll("last_error naming the address it cannot reach", s.api,
         lambda i: isinstance(i["last_error"], str) and s.remote in i["last_error"])

    # errors: the API's usual JSON shape and status
    assert "nope" in s.http.error("GET", "/api/v1/bridges/nope", 404)
    s.http.error("GET", "/api/v1/bridges", 401, auth=None)
    s.http.error("GET", f"/api/v1/bridges/{NAME}", 401, auth="Bearer wrong")
    s.http.error("GET", "/api/v1/bridges?limit=0", 400)
    assert s.http.api("/api/v1/bridges?offset=1") == {"total": 1, "bridges": []}


def test_api_bridges_sorted_by_name_with_paging(make_broker_thread: MakeBroker) -> None:
    """Three bridges (nothing to connect to) listed by name; ``limit``/``offset`` page them."""
    cfg = edge_config(free_port())
    rule = cfg["bridges"][NAME]
    cfg["bridges"] = {name: {**rule, "client_id": unique_id(name)} for name in
                      ("zeta", "alpha", "mid")}
    http = Http(make_broker_thread(cfg))
    got = http.api("/api/v1/bridges")
    assert got["total"] == 3
    assert [b["name"] for b in got["bridges"]] == ["alpha", "mid", "zeta"]
    assert [b["name"] for b in http.api("/api/v1/bridges?limit=1&offset=1")["bridges"]] == \
        ["mid"]
    assert http.api("/api/v1/bridges/zeta")["name"] == "zeta"
    # and /metrics has one sample per bridge in each family
    scrape = http.metrics()
    for name in FAMILIES:
        labels = sorted(x.labels["bridge"] for x in scrape.family(name).samples
                        if not x.name.endswith("_created"))
        assert labels == ["alpha", "mid", "zeta"], (name, labels)


def test_received_counts_messages_from_the_remote(make_broker_thread: MakeBroker) -> None:
    """An ``in`` rule: what the cloud publishes under the remote prefix comes in and is
    counted in ``received`` (API, /metrics)."""
    port = free_port()
    cloud = make_broker_thread(cloud_config(port, http=True))
    cfg = edge_config(port, rules=[{"pattern": "cmd/#", "direction": "in", "qos": 1,
                                    "remote_prefix": "edge-1/"}])
    client_id = cfg["bridges"][NAME]["client_id"]
    edge = make_broker_thread(cfg)
    http = Http(edge)
    cloud_http = Http(cloud)
    # the bridge's subscription is in place at the cloud (the cloud's own admin API)
    wait_until(lambda: cloud_http.api("/api/v1/subscriptions?client_id="
                                      + urllib.parse.quote(client_id))["total"] == 1,
               what="the bridge's subscription at the cloud")
    with Clients(edge.port) as at_edge, Clients(port) as at_cloud:
        sub = at_edge.paho(unique_id("s-"))
        sub.subscribe(("cmd/#", 1))
        pub = at_cloud.paho(unique_id("p-"))
        for i in range(4):
            pub.publish("edge-1/cmd/go", b"%d" % i, qos=1)
        pub.publish("other/cmd/go", b"not ours", qos=1)
        sub.messages.wait_for(4)
        info = poll("received 4", lambda: http.api(f"/api/v1/bridges/{NAME}"),
                    has(received=4, sent=0))
        assert info["connected"] is True
        s = http.metrics()
        assert s.get("mqttbroker_bridge_received_total", bridge=NAME) == 4


# -- $SYS --------------------------------------------------------------------------------------------


def sys_latest(c: Paho) -> dict[str, str]:
    """The newest value of each ``$SYS/broker/bridges/<NAME>/<field>`` seen by ``c``."""
    root = f"$SYS/broker/bridges/{NAME}/"
    out: dict[str, str] = {}
    for m in c.messages.messages:
        if m.topic.startswith(root):
            out[m.topic[len(root):]] = m.payload.decode()
    return out


def test_sys_topics_carry_the_bridge(site: Callable[..., Site]) -> None:
    """Every ``sys_interval``: connected, remote, queued, inflight, sent, received, dropped,
    retained; beside them (not replaced) the bridge's own state topic."""
    s = site(sys_interval=0.2, notifications=True)
    reader = s.paho(s.edge.port)
    reader.subscribe((f"$SYS/broker/bridges/{NAME}/#", 0),
                     (f"$SYS/broker/connection/{NAME}/state", 0))
    poll("$SYS connected 1 with its remote", lambda: sys_latest(reader),
         has(connected="1", remote=s.remote))
    # the state topic is retained and says 0 until the bridge is up: a reader that subscribed
    # first sees 0, then 1; the newest value is the one that counts
    state = f"$SYS/broker/connection/{NAME}/state"
    poll("the state topic's newest value 1",
         lambda: [m.payload for m in reader.messages.messages if m.topic == state][-1:],
         lambda newest: newest == [b"1"])
    assert set(sys_latest(reader)) == SYS_FIELDS, sys_latest(reader)

    s.publish_at_edge([b"1", b"2", b"3", b"4"])
    # (the bridge's state message to the cloud is not a message published at the edge: the
    # count is of ours, at least; exact counts are the /metrics and API tests')
    got = poll("$SYS sent >= 4", lambda: sys_latest(reader),
               lambda v: int(v.get("sent", "0")) >= 4)
    assert has(queued="0", inflight="0", dropped="0", received="0")(got), got

    s.stop_cloud()
    poll("$SYS connected 0", lambda: sys_latest(reader), has(connected="0"))
    s.publish_at_edge([b"w1", b"w2", b"w3"])
    got = poll("$SYS queued 3 while the cloud is down", lambda: sys_latest(reader),
               has(connected="0", queued="3", remote=""))

    # retained: a subscriber that comes later gets the latest values at once
    late = s.paho(s.edge.port)
    late.subscribe((f"$SYS/broker/bridges/{NAME}/connected", 0))
    m = late.messages.wait_topic(f"$SYS/broker/bridges/{NAME}/connected")
    assert m.retain and m.payload == b"0", m


# -- no bridge; /dashboard.json ---------------------------------------------------------------------


def test_nothing_of_bridges_without_one(make_broker_thread: MakeBroker) -> None:
    cfg = base_config()
    cfg["http"] = {"enabled": True, "bind": f"{HOST}:0", "token": TOKEN}
    bt = make_broker_thread(cfg)
    http = Http(bt)
    scrape = http.metrics()
    assert not [n for n in scrape.families if n.startswith("mqttbroker_bridge")], \
        sorted(scrape.families)
    assert http.api("/api/v1/bridges") == {"total": 0, "bridges": []}
    http.error("GET", f"/api/v1/bridges/{NAME}", 404)
    assert json.loads(http.get("/dashboard.json", auth=False).body)["bridges"] == []
    assert bt.broker is not None
    sys = bt.call(bt.broker.sys_values)
    assert not [t for t in sys if t.startswith("$SYS/broker/bridges/")], sys


def test_dashboard_json_lists_the_bridges(site: Callable[..., Site]) -> None:
    s = site()
    cfg = json.loads(s.http.get("/dashboard.json", auth=False).body)
    assert cfg["bridges"] == [{"name": NAME, "addresses": [s.remote]}]

