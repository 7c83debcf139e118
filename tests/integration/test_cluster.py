"""Cluster mode (docs/cluster.md): broker processes sharing one Redis act as one broker.

Every test starts its own ``redis-server`` on a free port (tests/integration/clusterproc.py)
and two or three nodes (``python -m mqttbroker serve -c FILE`` with a ``cluster`` section),
and talks to them with real paho-mqtt (3.1.1 and 5.0) and raw clients over loopback.

* cross-node delivery at QoS 0/1/2, each message once at min(pub, sub) QoS, in order per
  publisher and topic [MQTT-4.6.0-5];
* forwarding only to nodes with a matching subscriber (the inbox streams in Redis);
* one retained store: set on one node, seen on another, cleared on another;
* sessions follow devices: offline queue picked up on another node (session present), live
  takeover across nodes [MQTT-3.1.4-3] (DISCONNECT 0x8E for MQTT 5), a takeover while a
  stream flows (nothing acknowledged lost), session expiry across nodes;
* shared subscriptions spread over members on several nodes [MQTT-4.8.2];
* a node SIGKILLed mid-stream: every acknowledged QoS 1 message still arrives, QoS 2 once;
  the sessions of a killed node (in flight, queued, and what was published for them after
  the kill) come back on another node or on the restarted one; a QoS 2 resend is not
  forwarded twice; the device fleet rides out a node kill;
* Redis stopped for a few seconds: local traffic goes on, ``mqttbroker_cluster_redis_up``,
  "Redis unreachable" in the log, held QoS 1 messages arrive after the return;
* ``mqttbroker serve --workers 2``.

Routes reach the other nodes asynchronously (Redis pub/sub, docs/cluster.md "Routing"): before
counting, a test publishes QoS 0 probes on a probe topic until the subscriber has one. Every
wait is bounded; a failure shows the end of the nodes' logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import pytest
import redis

from mqttbroker.protocol.packets import Pubcomp, Publish, Pubrec, Pubrel

from .clusterproc import PREFIX, NodeProc, RedisProc, node_procs, redis_procs
from .helpers import TIMEOUT, V311, Collector, Msg, Paho, RawClient, unique_id, wait_until
from .test_crash import PahoStreamer, RawQos2Streamer, RawSubscriber, describe, wait_for_all
from .v5helpers import P, Paho5, RawV5

pytestmark = pytest.mark.timeout(60)

#: the mqtt section of every node: queues far longer than any stream here, so no queue bound
#: can be the reason a message is missing
MQTT = {"max_queued_messages": 100_000, "max_queued_bytes": 0}
#: fast failure detection for the fault tests (the defaults: 1.0 / 5.0 / 3.0)
FAST = {"heartbeat": 0.5, "node_timeout": 2.0, "takeover_timeout": 1.5}

Client = Paho | Paho5


# -- fixtures -----------------------------------------------------------------------------------

@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProc]:
    """A fresh redis-server on a free port, killed at the end of the test."""
    with redis_procs(tmp_path) as make:
        yield make()


@pytest.fixture
def cluster_nodes(tmp_path: Path,
                  redis_server: RedisProc) -> Iterator[Callable[..., list[NodeProc]]]:
    """``cluster_nodes(n, **NodeProc kwargs)`` starts ``n`` more nodes (``node-a``,
    ``node-b``, ...) on ``redis_server``, in parallel, and returns them once each accepts
    connections and shows its liveness key; every node is killed at the end of the test."""
    with node_procs(tmp_path) as make:
        count = 0

        def start(n: int, **kw: Any) -> list[NodeProc]:
            nonlocal count
            kw.setdefault("mqtt", MQTT)
            nodes = [make(redis_server.url, f"node-{chr(ord('a') + count + i)}", **kw)
                     for i in range(n)]
            count += n
            for node in nodes:
                node.spawn()
            for node in nodes:
                node.wait_ready()
            return nodes

        yield start


class Conns:
    """Makes clients (paho 3.1.1 / 5.0, raw) on any node; closes them all at the end."""

    def __init__(self) -> None:
        self._closers: list[Callable[[], None]] = []

    def add(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def paho(self, node: NodeProc, cid: str, protocol: str = "3.1.1", clean: bool = True,
             expiry: int | None = None, expect: int | None = 0) -> Client:
        """A connected paho client: 3.1.1 (``clean`` = CleanSession) or 5.0 (``clean`` =
        Clean Start, ``expiry`` = Session Expiry Interval)."""
        c: Client
        if protocol == "5.0":
            c = Paho5(cid)
            self.add(c.close)
            props = {"SessionExpiryInterval": expiry} if expiry else None
            c.connect(node.port, clean_start=clean, properties=props, expect=expect)
        else:
            c = Paho(cid, V311, clean_session=clean)
            self.add(c.close)
            c.connect(node.port, expect=expect)
        return c

    def close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def conns() -> Iterator[Conns]:
    c = Conns()
    yield c
    c.close()


# -- helpers ------------------------------------------------------------------------------------

def logs(*nodes: NodeProc) -> str:
    return "\n".join(n.log_tail(25) for n in nodes)


def on(c: Client | Collector, topic: str) -> list[Msg]:
    """The messages received on exactly ``topic``."""
    col = c if isinstance(c, Collector) else c.messages
    return col.topic(topic)


def wait_route(pub: Client, topic: str, *receivers: Client, timeout: float = 10.0) -> int:
    """Publish QoS 0 probes on ``topic`` from ``pub`` until every receiver got one (the
    subscription is known on the publisher's node); returns the probes sent."""
    deadline = time.monotonic() + timeout
    sent = 0
    while True:
        pub.publish(topic, b"probe", 0, wait=False)
        sent += 1
        step = time.monotonic() + 0.1
        while time.monotonic() < step:
            if all(on(r, topic) for r in receivers):
                return sent
            time.sleep(0.01)
        if time.monotonic() >= deadline:
            raise AssertionError(f"{sent} probes on {topic!r} over {timeout}s: the "
                                 f"subscription never reached the publisher's node")


def numbers(msgs: list[Msg]) -> list[int]:
    return [int(m.payload) for m in msgs]


def inbox_added(r: Any, node: str) -> int:
    """How many entries were ever added to ``node``'s inbox stream (XINFO STREAM
    entries-added: trimming or XDEL after delivery does not lower it); 0 if no stream.
    The entries are binary: XINFO goes through a client that does not decode."""
    raw = redis.Redis(connection_pool=r.connection_pool.__class__(
        **{**r.connection_pool.connection_kwargs, "decode_responses": False}))
    try:
        info: Any = raw.xinfo_stream(f"{PREFIX}:inbox:{node}")
        # redis-py's parser gives str or bytes keys depending on the protocol it speaks
        return int(info.get(b"entries-added", info.get("entries-added", 0)))
    except redis.ResponseError:  # no such key
        return 0
    finally:
        raw.close()


def owner(r: Any, cid: str) -> str | None:
    """The node that owns client id ``cid`` (``P:client:{id}`` ``node``)."""
    value = r.hget(f"{PREFIX}:client:{cid}", "node")
    return None if value is None else str(value)


def redis_up(node: NodeProc) -> float | None:
    try:
        return node.metrics(timeout=2).get("mqttbroker_cluster_redis_up")
    except OSError:
        return None


# -- 0. the harness itself --------------------------------------------------------------------

def test_redis_proc_stops_and_starts_on_the_same_port(redis_server: RedisProc) -> None:
    """The outage tool: ``stop(save=True)`` + ``start()`` comes back on the same port with the
    data (as a Redis with persistence); a plain ``stop()`` + ``start()`` comes back empty."""
    port = redis_server.port
    r = redis_server.client()
    r.set("k", "v")
    redis_server.stop(save=True)
    assert not redis_server.ping()
    redis_server.start()
    assert redis_server.port == port and redis_server.client().get("k") == "v"
    redis_server.stop()
    redis_server.start()
    assert redis_server.client().get("k") is None


def test_nodes_register_and_count_routes_in_redis(cluster_nodes: Callable[..., list[NodeProc]],
                                                 redis_server: RedisProc,
                                                 conns: Conns) -> None:
    """docs/cluster.md "State in Redis": each node renews ``P:node:{node}`` (expiring after
    node_timeout); ``P:routes:{node}`` counts the local sessions holding each filter (shared
    subscriptions per group), and the last unsubscribe (or a clean session's end) removes it;
    the inbox stream has its consumer group ``deliver``."""
    a, b = cluster_nodes(2)
    r = redis_server.client()
    for n in (a, b):
        ttl = r.pttl(f"{PREFIX}:node:{n.node}")
        assert 0 < ttl <= 5000, f"{n.node}: liveness key TTL {ttl} ms (node_timeout 5 s)"
        groups = [g["name"] for g in r.xinfo_groups(f"{PREFIX}:inbox:{n.node}")]
        assert "deliver" in groups, groups
    routes = f"{PREFIX}:routes:{a.node}"
    s1 = conns.paho(a, "rt-s1")
    s2 = conns.paho(a, "rt-s2", "5.0")
    assert s1.subscribe(("rt/#", 1)) == [1]
    assert s2.subscribe(("rt/#", 1), ("$share/g/rt/x", 0)) == [1, 0]
    # the count is the number of sessions: a node taking one session over from a dead node
    # subtracts one, and the others still on the dead node keep the route
    # (test_two_sessions_on_a_killed_node_one_taken_over_other_loses_nothing)
    with contextlib.suppress(AssertionError):
        wait_until(lambda: r.hget(routes, "rt/#") == "2", 2, what="rt/# counted twice")
    assert r.hget(routes, "rt/#") == "2", (
        f"two local sessions hold rt/#, the routes hash says {r.hgetall(routes)}")
    assert r.hget(routes, "$share/g/rt/x") == "1", r.hgetall(routes)
    assert not r.hgetall(f"{PREFIX}:routes:{b.node}"), "node-b holds no subscription"
    s1.unsubscribe("rt/#")
    wait_until(lambda: r.hget(routes, "rt/#") == "1", what="rt/# counted once")
    s2.disconnect()  # clean start, no expiry: the session and its routes end
    wait_until(lambda: not r.hexists(routes, "rt/#") or r.hget(routes, "rt/#") == "0",
               what="rt/# gone from the routes")
    wait_until(lambda: not r.hexists(routes, "$share/g/rt/x")
               or r.hget(routes, "$share/g/rt/x") == "0", what="the share group gone")


# -- 1. cross-node delivery -------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["3.1.1", "5.0"])
def test_cross_node_delivery_each_qos_once_in_order(
        cluster_nodes: Callable[..., list[NodeProc]], conns: Conns, protocol: str) -> None:
    """Three subscribers on node A (granted QoS 0, 1, 2 on ``xn/#``), one publisher on node B
    sending 200 numbered messages at each of QoS 0, 1 and 2 (each QoS on its own topic): every
    subscriber gets every message exactly once, at min(published, granted) QoS [MQTT-3.8.4-6],
    in the order sent on each topic [MQTT-4.6.0-5] ("Order" in docs/cluster.md)."""
    a, b = cluster_nodes(2)
    n = 200
    subs = {q: conns.paho(a, f"xn-sub{q}-{protocol}", protocol) for q in (0, 1, 2)}
    for q, s in subs.items():
        assert s.subscribe(("xn/#", q)) == [q]
    pub = conns.paho(b, f"xn-pub-{protocol}", protocol)
    wait_route(pub, "xn/probe", *subs.values())
    for p in (0, 1, 2):
        for i in range(n):
            pub.publish(f"xn/p{p}", str(i).encode(), p, wait=False)
    deadline = time.monotonic() + 20
    for q, s in subs.items():
        with contextlib.suppress(AssertionError):  # counted below
            s.messages.wait_until(
                lambda ms: sum(1 for m in ms if m.topic in ("xn/p0", "xn/p1", "xn/p2"))
                >= 3 * n, max(deadline - time.monotonic(), 0.1), f"{3 * n} messages")
    time.sleep(0.3)  # a duplicate would come now
    problems = []
    for q, s in subs.items():
        for p in (0, 1, 2):
            got = on(s, f"xn/p{p}")
            nums = numbers(got)
            if nums != list(range(n)):
                dup = sorted(k for k, c in Counter(nums).items() if c > 1)
                problems.append(f"sub QoS {q}, pub QoS {p}: {len(nums)} messages, missing "
                                f"{describe(set(range(n)) - set(nums))}, twice {dup[:20]}, "
                                f"in order: {nums == sorted(nums)}")
            qos = {m.qos for m in got}
            if qos and qos != {min(p, q)}:
                problems.append(f"sub QoS {q}, pub QoS {p}: delivered at QoS {qos}")
    assert not problems, "\n".join(problems) + "\n" + logs(a, b)


# -- 2. forwarded only where a subscriber is ----------------------------------------------------

def test_forwarded_only_to_nodes_with_a_matching_subscriber(
        cluster_nodes: Callable[..., list[NodeProc]], redis_server: RedisProc,
        conns: Conns) -> None:
    """docs/cluster.md "Routing": a message goes to the inbox of each other node whose routes
    match its topic, and to no other (not a broadcast). Three nodes, one subscriber of
    ``fw/a/#`` on A: messages on a topic nobody subscribes to (published on every node) add
    no entry to any inbox; messages on ``fw/a/data`` published on B add entries to A's inbox
    only (at most one per message); published on A they are delivered locally and add none."""
    a, b, c = cluster_nodes(3)
    r = redis_server.client()
    sub = conns.paho(a, "fw-sub")
    assert sub.subscribe(("fw/a/#", 1)) == [1]
    pubs = {n.node: conns.paho(n, f"fw-pub-{n.node}") for n in (a, b, c)}
    for n in (b, c):
        wait_route(pubs[n.node], f"fw/a/probe-{n.node}", sub)
    nodes = [a.node, b.node, c.node]
    before = {n: inbox_added(r, n) for n in nodes}

    for p in pubs.values():
        for i in range(10):
            p.publish("fw/nobody/x", b"%d" % i, 1)  # PUBACK: every XADD of it is written
    nobody = {n: inbox_added(r, n) - before[n] for n in nodes}
    assert nobody == dict.fromkeys(nodes, 0), (
        f"messages nobody subscribes to were forwarded: new inbox entries {nobody}")

    for i in range(10):
        pubs[b.node].publish("fw/a/data", b"%d" % i, 1)
    sub.messages.wait_until(lambda ms: len([m for m in ms if m.topic == "fw/a/data"]) >= 10,
                            10, "10 messages from node B")
    mid = {n: inbox_added(r, n) for n in nodes}
    delta = {n: mid[n] - before[n] for n in nodes}
    assert 1 <= delta[a.node] <= 10 and delta[b.node] == 0 and delta[c.node] == 0, (
        f"10 messages for a subscriber on {a.node}, published on {b.node}: new inbox "
        f"entries {delta}")

    for i in range(10, 15):
        pubs[a.node].publish("fw/a/data", b"%d" % i, 1)
    sub.messages.wait_until(lambda ms: len([m for m in ms if m.topic == "fw/a/data"]) >= 15,
                            10, "5 local messages")
    local = {n: inbox_added(r, n) - mid[n] for n in nodes}
    assert local == dict.fromkeys(nodes, 0), f"local deliveries went through Redis: {local}"
    time.sleep(0.2)
    assert numbers(on(sub, "fw/a/data")) == list(range(15))
    assert not on(sub, "fw/nobody/x")

    # the last unsubscribe withdraws the route: B soon stops forwarding to A
    sub.unsubscribe("fw/a/#")

    def not_forwarded() -> bool:
        before_a = inbox_added(r, a.node)
        pubs[b.node].publish("fw/a/data", b"gone", 1)
        return inbox_added(r, a.node) == before_a

    wait_until(not_forwarded, 5, interval=0.1, what="node B to stop forwarding fw/a/data")


# -- 3. retained messages: one store ----------------------------------------------------------

def fresh_retained(conns: Conns, node: NodeProc, cid: str, topic_filter: str,
                   within: float) -> list[Msg]:
    """What a new subscriber of ``topic_filter`` on ``node`` gets within ``within`` s."""
    s = conns.paho(node, cid)
    s.subscribe((topic_filter, 1))
    time.sleep(within)
    got = list(s.messages.messages)
    s.disconnect()
    return got


def test_retained_is_one_store_across_nodes(cluster_nodes: Callable[..., list[NodeProc]],
                                            redis_server: RedisProc, conns: Conns) -> None:
    """A retained message published on node A (PUBACK: it is in ``P:retained``) reaches a new
    subscriber on node B, and on a node started afterwards (C loads the hash at start), with
    RETAIN 1 [MQTT-3.3.1-6]; an empty retained message published on B clears it
    [MQTT-3.3.1-10]: gone from Redis and, soon, for a new subscriber on A and on C."""
    a, b = cluster_nodes(2)
    r = redis_server.client()
    pa = conns.paho(a, "ret-pa")
    pa.publish("ret/t1", b"r1", 1, retain=True)
    assert r.hexists(f"{PREFIX}:retained", "ret/t1"), (
        f"PUBACK came before the retained message was in Redis: "
        f"{r.hkeys(f'{PREFIX}:retained')}")

    tries = 0

    def seen_on(node: NodeProc) -> list[Msg]:
        nonlocal tries
        tries += 1
        return [m for m in fresh_retained(conns, node, f"ret-new{tries}", "ret/#", 0.2)
                if m.topic == "ret/t1"]

    got = wait_until(lambda: seen_on(b), 5, interval=0.05, what="the retained message on B")
    assert [(m.payload, m.retain) for m in got] == [(b"r1", True)], got
    (c,) = cluster_nodes(1)
    got = seen_on(c)
    assert [(m.payload, m.retain) for m in got] == [(b"r1", True)], (
        f"a node started after the retained message does not have it: {got}\n{logs(c)}")

    pb = conns.paho(b, "ret-pb")
    pb.publish("ret/t1", b"", 1, retain=True)
    assert not r.hexists(f"{PREFIX}:retained", "ret/t1"), "cleared on B, still in Redis"
    for node in (a, c):
        wait_until(lambda node=node: not seen_on(node), 5, interval=0.05,  # type: ignore[misc]
                   what=f"the retained message gone on {node.node}")


# -- 4. sessions follow devices ---------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["3.1.1", "5.0"])
def test_offline_session_picked_up_on_another_node(
        cluster_nodes: Callable[..., list[NodeProc]], redis_server: RedisProc,
        conns: Conns, protocol: str) -> None:
    """docs/cluster.md "Sessions follow devices": client X (3.1.1 CleanSession 0, or 5.0 with
    Session Expiry 300) subscribes at QoS 1 on node A and disconnects; 10 QoS 1 messages are
    published (and PUBACKed) on node B while X is away; X connects to node B: Session Present 1
    [MQTT-3.2.2-2], the 10 messages arrive in order; X is owned by B in Redis; messages
    published on A now reach X on B."""
    a, b = cluster_nodes(2)
    r = redis_server.client()
    cid = f"tk-x-{protocol}"
    x = conns.paho(a, cid, protocol, clean=protocol == "5.0", expiry=300)
    assert x.session_present is False
    assert x.subscribe((f"tk/{cid}/#", 1)) == [1]
    assert owner(r, cid) == a.node
    pub_b = conns.paho(b, "tk-pub-b")
    wait_route(pub_b, f"tk/{cid}/probe", x)
    x.disconnect()
    for i in range(10):
        pub_b.publish(f"tk/{cid}/data", b"%d" % i, 1)
    # at once: every PUBACKed message must come with the session, however fast X is back
    x2 = conns.paho(b, cid, protocol, clean=False, expiry=300)
    assert x2.session_present is True, f"session lost moving to {b.node}\n{logs(a, b)}"
    x2.messages.wait_until(lambda ms: len([m for m in ms if m.topic.endswith("/data")]) >= 10,
                           10, "the 10 queued messages")
    time.sleep(0.2)
    got = on(x2, f"tk/{cid}/data")
    assert numbers(got) == list(range(10)) and {m.qos for m in got} == {1}, (
        f"{[(m.payload, m.qos) for m in got]}\n{logs(a, b)}")
    assert owner(r, cid) == b.node
    assert cid not in r.smembers(f"{PREFIX}:owned:{a.node}")
    pub_a = conns.paho(a, "tk-pub-a")
    wait_route(pub_a, f"tk/{cid}/probe-a", x2)
    for i in range(5):
        pub_a.publish(f"tk/{cid}/after", b"%d" % i, 1)
    x2.messages.wait_until(lambda ms: len([m for m in ms if m.topic.endswith("/after")]) >= 5,
                           10, "5 messages published on the old node")
    assert numbers(on(x2, f"tk/{cid}/after")) == list(range(5))


def queued_while_stopped(conns: Conns, a: NodeProc, b: NodeProc, cid: str, root: str,
                         count: int) -> Client:
    """Client ``cid`` (3.1.1, CleanSession 0) subscribes at QoS 1 to ``root``/# on node
    ``a`` and goes away; ``a`` is stopped (SIGSTOP) while ``count`` QoS 1 messages
    (payloads 0, 1, ...) are published on ``root``/data on node ``b``, each PUBACKed once
    ``b`` has written it to ``a``'s inbox, where they wait; ``a`` goes on (SIGCONT) right
    after the last PUBACK. Returns the publisher on ``b``."""
    x = conns.paho(a, cid, "3.1.1", clean=False)
    assert x.subscribe((f"{root}/#", 1)) == [1]
    pub_b = conns.paho(b, f"{cid}-pub")
    wait_route(pub_b, f"{root}/probe", x)
    x.disconnect()
    assert a.proc is not None
    a.proc.send_signal(signal.SIGSTOP)
    try:
        infos = [pub_b.publish(f"{root}/data", b"%d" % i, 1, wait=False)
                 for i in range(count)]
        for info in infos:
            info.wait_for_publish(TIMEOUT)
            assert info.is_published()
    finally:
        a.proc.send_signal(signal.SIGCONT)
    return pub_b


def test_session_moves_while_its_old_node_still_reads_its_inbox(
        cluster_nodes: Callable[..., list[NodeProc]], redis_server: RedisProc,
        conns: Conns) -> None:
    """X (3.1.1, CleanSession 0) subscribed at QoS 1 on node A goes away. A is stopped
    (SIGSTOP) while 300 QoS 1 messages are published on node B: each is PUBACKed once B has
    written it to A's inbox, where they wait. A goes on (SIGCONT) as X connects to B, so A is
    asked to hand X's session over while most of them are still in its inbox. A hands over
    what it had read; what it reads after that it forwards to the session's new node, B,
    although B is where they were published (B did not deliver them itself: the session was
    not there yet). All 300 arrive, once each, in order; and what B publishes once the session
    is there, B delivers, once."""
    a, b = cluster_nodes(2)
    cid = "tk-inbox"
    pub_b = queued_while_stopped(conns, a, b, cid, "tk/inbox", 300)
    x2 = conns.paho(b, cid, "3.1.1", clean=False)
    assert x2.session_present is True, logs(a, b)
    x2.messages.wait_until(lambda ms: len([m for m in ms if m.topic.endswith("/data")]) >= 300,
                           15, "the 300 messages")
    time.sleep(0.3)  # (and no more)
    assert numbers(on(x2, "tk/inbox/data")) == list(range(300)), logs(a, b)
    # published on B now, with the session there: B delivers them; A, still a forwarding
    # address for X's filters (B's routes still name it), sends them back, and B, seeing
    # them numbered after the takeover, does not deliver them twice
    for i in range(20):
        pub_b.publish("tk/inbox/after", b"%d" % i, 1)
    x2.messages.wait_until(lambda ms: len([m for m in ms if m.topic.endswith("/after")]) >= 20,
                           10, "the 20 published after")
    time.sleep(0.5)
    assert numbers(on(x2, "tk/inbox/after")) == list(range(20)), logs(a, b)


def test_clean_start_on_another_node_gets_nothing_of_the_old_session(
        cluster_nodes: Callable[..., list[NodeProc]], redis_server: RedisProc,
        conns: Conns) -> None:
    """As above (A stopped while 300 messages for X are published on B, going on as X
    connects to B), but X comes back with CleanSession 1 and subscribes to another filter:
    the old session is discarded [MQTT-3.1.2-6], so none of the messages queued for it reach
    the new connection, neither with the session (there is none) nor forwarded by A from its
    inbox afterwards (the new session is not subscribed to their topic); a message on its new
    filter does."""
    a, b = cluster_nodes(2)
    cid = "tk-clean"
    pub_b = queued_while_stopped(conns, a, b, cid, "tk/clean/old", 300)
    x2 = conns.paho(b, cid, "3.1.1", clean=True)
    assert x2.session_present is False, logs(a, b)
    assert x2.subscribe(("tk/clean/new/#", 1)) == [1]
    pub_b.publish("tk/clean/new/data", b"new", 1)
    assert x2.messages.wait_topic("tk/clean/new/data").payload == b"new"
    time.sleep(1.0)  # (A has read its inbox by now: what it forwards has come)
    old = on(x2, "tk/clean/old/data")
    assert old == [], f"{len(old)} of the old session's messages reached the clean one\n" \
        + logs(a, b)


def test_live_takeover_across_nodes_mqtt5(cluster_nodes: Callable[..., list[NodeProc]],
                                          redis_server: RedisProc, conns: Conns) -> None:
    """[MQTT-3.1.4-3]: X is connected on node A (MQTT 5, Session Expiry 300, a QoS 1
    subscription); a second connection with id X on node B takes the session over: the one on
    A gets DISCONNECT 0x8E Session taken over and is closed; B answers CONNACK 0 with Session
    Present 1; messages then published on A reach X on B."""
    a, b = cluster_nodes(2)
    r = redis_server.client()
    old = RawV5(a.port)
    conns.add(old.close)
    ack = old.connect5("lt-x5", properties={P.SESSION_EXPIRY_INTERVAL: 300})
    assert ack.return_code == 0
    assert old.subscribe5(("lt/x5/#", 1)).return_codes == [1]
    new = conns.paho(b, "lt-x5", "5.0", clean=False, expiry=300)
    assert new.session_present is True, logs(a, b)
    disc = old.expect_disconnect(5)
    assert disc.reason_code == 0x8E, f"DISCONNECT 0x{disc.reason_code:02X}, not 0x8E"
    assert owner(r, "lt-x5") == b.node
    pub_a = conns.paho(a, "lt-pub5")
    wait_route(pub_a, "lt/x5/probe", new)
    pub_a.publish("lt/x5/data", b"after", 1)
    assert new.messages.wait_topic("lt/x5/data").payload == b"after"


def test_live_takeover_across_nodes_mqtt311(cluster_nodes: Callable[..., list[NodeProc]],
                                            redis_server: RedisProc, conns: Conns) -> None:
    """3.1.1 [MQTT-3.1.4-2]: X connected on node A (CleanSession 0) loses its connection when
    a client with id X connects to node B, which finds the session (Session Present 1) and its
    subscription: a message published on B reaches the new connection."""
    a, b = cluster_nodes(2)
    r = redis_server.client()
    old = RawClient(a.port)
    conns.add(old.close)
    assert old.connect("lt-x3", clean=False).return_code == 0
    assert old.subscribe(("lt/x3/#", 1)) == [1]
    new = conns.paho(b, "lt-x3", "3.1.1", clean=False)
    assert new.session_present is True, logs(a, b)
    old.wait_closed(5)
    assert owner(r, "lt-x3") == b.node
    pub_b = conns.paho(b, "lt-pub3")
    pub_b.publish("lt/x3/data", b"after", 1)
    assert new.messages.wait_topic("lt/x3/data").payload == b"after"


@pytest.mark.parametrize("qos", [1, 2])
def test_takeover_mid_stream_loses_nothing(cluster_nodes: Callable[..., list[NodeProc]],
                                           qos: int) -> None:
    """A live takeover while messages flow: X (3.1.1, CleanSession 0, QoS ``qos``) receives a
    stream published on node C while connected to node A; after ~500 acknowledgements X
    connects to node B (the connection on A is closed [MQTT-3.1.4-2]) and the stream goes on.
    Every message C acknowledged reaches X over its two connections (QoS 1 at least once;
    QoS 2 exactly once, X keeping the packet ids awaiting PUBREL across the move
    [MQTT-4.3.3-2]). Messages that were on their way to A when A handed the session over must
    not be lost: A forwards them, or hands them over with the session."""
    a, b, c = cluster_nodes(3)
    topic = f"mv{qos}"
    x1 = RawSubscriber(a.port, f"{topic}-x")
    x2 = RawSubscriber(b.port, f"{topic}-x")
    x2.awaiting_rel = x1.awaiting_rel  # one client, two connections: one QoS 2 state
    closers: list[Callable[[], None]] = [x1.close, x2.close]
    try:
        assert x1.connect(clean=False) is False
        assert x1.subscribe(f"{topic}/#", qos) == qos
        probe = Paho(f"{topic}-probe", V311)
        closers.append(probe.close)
        probe.connect(c.port)

        def probed() -> bool:
            probe.publish(f"{topic}/probe", b"-1", 0, wait=False)
            return -1 in x1.numbers()

        wait_until(probed, 10, interval=0.1, what="the route on node C")
        st: Any = (PahoStreamer(c.port, f"{topic}-pub", f"{topic}/n", qos=1) if qos == 1
                   else RawQos2Streamer(c.port, f"{topic}-pub", f"{topic}/n"))
        closers.insert(0, st.finish)
        st.start(limit=4000, seconds=15)
        wait_until(lambda: st.acks >= 500, 10, what="500 acknowledgements before the move")
        assert x2.connect(clean=False) is True, logs(a, b)
        x1.wait_closed(5)
        wait_until(lambda: st.acks >= 1500 or st.down.is_set(), 15,
                   what="1000 more acknowledgements after the move")
        assert not st.down.is_set(), f"the publisher was dropped\n{logs(c)}"
        st.finish()
        acked = st.acked()

        def got() -> set[int]:
            return x1.numbers() | x2.numbers()

        missing = wait_for_all(acked, got, 8)
        x2.wait_idle(quiet=0.5, timeout=10)
        assert not missing, (f"acknowledged QoS {qos} messages lost in the takeover: "
                             f"{describe(missing)} of {len(acked)}\n{logs(a, b)}")
        if qos == 2:
            delivered = [n for n in x1.delivered + x2.delivered if n >= 0]
            twice = {n for n, k in Counter(delivered).items() if k > 1}
            assert not twice, f"QoS 2 delivered twice across the takeover: {describe(twice)}"
    finally:
        for close in closers:
            with contextlib.suppress(Exception):
                close()


def test_session_expiry_holds_across_nodes(cluster_nodes: Callable[..., list[NodeProc]],
                                           conns: Conns) -> None:
    """MQTT 5 Session Expiry across nodes: X (Session Expiry 1 s) subscribes on node A and
    disconnects; 3 s later X connects to node B with Clean Start 0: the session has expired
    [MQTT-3.1.2-23] (Session Present 0, no subscription: a message published on A is not
    delivered). A session with expiry 300 taken the same way is present."""
    a, b = cluster_nodes(2)
    short = conns.paho(a, "ex-short", "5.0", expiry=1)
    long = conns.paho(a, "ex-long", "5.0", expiry=300)
    for cl in (short, long):
        assert cl.subscribe(("ex/#", 1)) == [1]
        cl.disconnect()
    time.sleep(3)
    short2 = conns.paho(b, "ex-short", "5.0", clean=False, expiry=300)
    long2 = conns.paho(b, "ex-long", "5.0", clean=False, expiry=300)
    assert short2.session_present is False, "an expired session was resumed on another node"
    assert long2.session_present is True
    pub = conns.paho(a, "ex-pub", "5.0")
    wait_route(pub, "ex/probe", long2)
    pub.publish("ex/data", b"x", 1)
    long2.messages.wait_topic("ex/data")
    time.sleep(0.3)
    assert not on(short2, "ex/data") and not on(short2, "ex/probe"), (
        "the expired session's subscription still delivers")


# -- 5. shared subscriptions ------------------------------------------------------------------

def test_shared_subscription_spreads_over_nodes(cluster_nodes: Callable[..., list[NodeProc]],
                                                conns: Conns) -> None:
    """[MQTT-4.8.2] ``$share/g/sh/#`` with a member on node A and one on node B, 100 QoS 1
    messages published on node C: each message goes to exactly one member of the group
    (together they get all 100, none twice), and both members get some (the publishing node
    picks among the nodes with a member, round robin: docs/cluster.md "Routing")."""
    a, b, c = cluster_nodes(3)
    members = [conns.paho(a, "sh-ma", "5.0"), conns.paho(b, "sh-mb", "5.0")]
    for m in members:
        assert m.subscribe(("$share/g/sh/#", 1)) == [1]
    pub = conns.paho(c, "sh-pub", "5.0")
    wait_route(pub, "sh/probe", *members)
    for i in range(100):
        pub.publish("sh/data", b"%d" % i, 1, wait=False)
    pub.publish("sh/data", b"100", 1)
    wait_until(lambda: sum(len(on(m, "sh/data")) for m in members) >= 101, 15,
               what="101 messages over the group")
    time.sleep(0.3)  # a duplicate would come now
    got = [numbers(on(m, "sh/data")) for m in members]
    everything = Counter(n for g in got for n in g)
    twice = sorted(n for n, k in everything.items() if k > 1)
    assert set(everything) == set(range(101)) and not twice, (
        f"missing {describe(set(range(101)) - set(everything))}, twice {twice}\n"
        f"{logs(a, b, c)}")
    assert all(got), f"one member got nothing: {[len(g) for g in got]}"


# -- 6. a node killed ---------------------------------------------------------------------------

def _kill_mid_streams(node: NodeProc, streamers: list[Any], at_least: int,
                      rng: random.Random) -> int:
    wait_until(lambda: sum(s.acks for s in streamers) >= at_least
               or any(s.down.is_set() for s in streamers), 15, interval=0.001,
               what=f"{at_least} acknowledgements")
    time.sleep(rng.uniform(0.0, 0.03))
    assert not any(s.down.is_set() for s in streamers), (
        f"a publisher lost its connection before the kill:\n{node.log_tail()}")
    node.kill()
    acks = int(sum(s.acks for s in streamers))
    for s in streamers:
        wait_until(s.down.is_set, 10, what="the publisher to notice the kill")
        s.finish()
    return acks


@pytest.mark.parametrize("qos", [1, 2])
def test_node_killed_mid_stream_loses_no_acknowledged_message(
        cluster_nodes: Callable[..., list[NodeProc]], redis_server: RedisProc,
        qos: int) -> None:
    """docs/cluster.md "QoS across nodes": three nodes; a persistent subscriber (QoS ``qos``)
    on node C; three publishers stream numbered messages at QoS ``qos`` to node A, which is
    SIGKILLed after ~1500 acknowledgements (PUBACK; PUBREC for QoS 2); the publishers
    reconnect to node B with the same client ids (B takes them over from the dead node) and go
    on. Every message acknowledged by A or B reaches the subscriber (QoS 1: at least once
    [MQTT-4.3.2]; QoS 2: exactly once [MQTT-4.3.3]); A's liveness key expires."""
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    a, b, c = cluster_nodes(3, cluster=FAST)
    r = redis_server.client()
    topic = f"kill{qos}"
    sub = RawSubscriber(c.port, f"{topic}-sub")
    streamers: list[Any] = []
    try:
        assert sub.connect(clean=False) is False
        assert sub.subscribe(f"{topic}/#", qos) == qos
        probe = Paho(f"{topic}-probe", V311)
        streamers.append(probe)
        probe.connect(a.port)

        def probed() -> bool:
            probe.publish(f"{topic}/probe", b"-1", 0, wait=False)
            return -1 in sub.numbers()

        wait_until(probed, 10, interval=0.1, what="the route on node A")
        probe.close()

        def streamer(node: NodeProc, i: int, first: int) -> Any:
            cid = f"{topic}-pub{i}"
            if qos == 1:
                return PahoStreamer(node.port, cid, f"{topic}/p{i}", qos=1, first=first)
            return RawQos2Streamer(node.port, cid, f"{topic}/p{i}", first=first)

        first = [i * 100_000 for i in range(3)]
        on_a = [streamer(a, i, first[i]) for i in range(3)]
        streamers += on_a
        for s in on_a:
            s.start(limit=20_000, seconds=20)
        target = rng.randint(1200, 1800)
        acks = _kill_mid_streams(a, on_a, target, rng)
        acked: set[int] = set().union(*(s.acked() for s in on_a))
        info = (f"seed {seed}: {acks} acknowledgements at the kill (target {target}), "
                f"{len(acked)} acknowledged")
        assert acks >= 200, info

        on_b = [streamer(b, i, on_a[i].next) for i in range(3)]
        streamers += on_b
        for s in on_b:
            s.start(limit=1000, seconds=10)
        wait_until(lambda: all(s.acks >= 300 or s.down.is_set() for s in on_b), 15,
                   what="300 acknowledgements from node B per publisher")
        for s in on_b:
            s.finish()
            acked |= s.acked()
        assert all(s.acks >= 300 for s in on_b), f"{info}; on B: {[s.acks for s in on_b]}"
        published = set().union(*(range(first[i], on_b[i].next) for i in range(3)))

        missing = wait_for_all(acked, sub.numbers, 20)
        sub.wait_idle(quiet=0.5, timeout=10)
        assert not missing, (f"acknowledged QoS {qos} messages lost with node A ({info}): "
                             f"{describe(missing)}\n{logs(b, c)}")
        delivered = [n for n in sub.delivered if n >= 0]
        assert set(delivered) <= published, "numbers nobody published"
        if qos == 2:
            twice = {n for n, k in Counter(delivered).items() if k > 1}
            assert not twice, (f"QoS 2 delivered twice ({info}; {sub.absorbed} resends "
                               f"absorbed): {describe(twice)}")
        wait_until(lambda: not r.exists(f"{PREFIX}:node:{a.node}"), 5,
                   what="node A's liveness key to expire")
    finally:
        for s in streamers:
            with contextlib.suppress(Exception):
                s.finish() if not isinstance(s, Paho) else s.close()
        sub.close()


def probe_raw(pub: Client, topic: str, x: RawClient, timeout: float = 10.0) -> None:
    """QoS 0 probes on ``topic`` from ``pub`` until the raw client ``x`` receives one (other
    packets it receives meanwhile are dropped)."""
    deadline = time.monotonic() + timeout
    while True:
        pub.publish(topic, b"probe", 0, wait=False)
        with contextlib.suppress(TimeoutError):
            while True:
                p = x.recv(0.1)
                if isinstance(p, Publish) and p.topic == topic:
                    return
        if time.monotonic() >= deadline:
            raise AssertionError(f"no probe on {topic!r} reached the raw client in {timeout}s")


def data_publishes(x: RawClient, n: int, topic: str, timeout: float = 10.0,
                   ack: bool = True) -> list[Publish]:
    """The next ``n`` PUBLISH packets on ``topic`` (probes and the rest skipped), acknowledged
    unless told otherwise."""
    deadline = time.monotonic() + timeout
    out: list[Publish] = []
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"got {len(out)} of {n} PUBLISH on {topic!r}: "
                                 f"{[(p.payload, p.dup) for p in out]}")
        with contextlib.suppress(TimeoutError):
            p = x.recv(left)
            if isinstance(p, Publish) and p.topic == topic:
                out.append(p)
                if ack:
                    x.ack(p)
    return out


def test_session_of_a_killed_node_taken_over_with_inflight_and_queued(
        cluster_nodes: Callable[..., list[NodeProc]], redis_server: RedisProc,
        conns: Conns) -> None:
    """docs/cluster.md "Sessions follow devices", step 3: X (3.1.1, CleanSession 0) on node A
    receives 5 QoS 1 messages without acknowledging them and drops its connection; 5 more are
    queued for it (all published on node B, PUBACKed; ``P:items:X`` holds the 10). Node A is
    SIGKILLed; X connects to node B, which takes the session from Redis (A does not answer:
    at most ``takeover_timeout`` later): Session Present 1 [MQTT-3.2.2-2], the 5 unacknowledged
    ones resent with DUP 1 [MQTT-4.4.0-1] [MQTT-3.3.1-1], then the 5 queued, in order
    [MQTT-4.6.0-2]."""
    a, b = cluster_nodes(2, cluster=FAST)
    r = redis_server.client()
    x = RawClient(a.port)
    conns.add(x.close)
    assert x.connect("dk-x", clean=False).session_present is False
    assert x.subscribe(("dk/#", 1)) == [1]
    pub = conns.paho(b, "dk-pub")
    probe_raw(pub, "dk/probe", x)
    for i in range(5):
        pub.publish("dk/data", b"%d" % i, 1)
    first = data_publishes(x, 5, "dk/data", ack=False)
    assert numbers([Msg(p.topic, p.payload, p.qos, p.retain) for p in first]) == list(range(5))
    x.close()  # no PUBACK, no DISCONNECT
    for i in range(5, 10):
        pub.publish("dk/data", b"%d" % i, 1)
    wait_until(lambda: r.hlen(f"{PREFIX}:items:dk-x") >= 10, 5,
               what="10 items of dk-x in Redis (5 in flight, 5 queued)")
    a.kill()
    t0 = time.monotonic()
    x2 = RawClient(b.port, timeout=10)
    conns.add(x2.close)
    ack = x2.connect("dk-x", clean=False, timeout=10)
    took = time.monotonic() - t0
    assert ack.return_code == 0 and ack.session_present is True, f"{ack}\n{logs(b)}"
    assert took < FAST["takeover_timeout"] + 3, f"CONNACK after {took:.1f}s"
    got = data_publishes(x2, 10, "dk/data")
    assert [(int(p.payload), p.dup) for p in got[:5]] == [(i, True) for i in range(5)], got
    assert [int(p.payload) for p in got] == list(range(10)), got
    assert owner(r, "dk-x") == b.node


@pytest.mark.parametrize("back_on", ["restarted", "other"])
def test_persistent_session_on_a_killed_node_loses_nothing(
        cluster_nodes: Callable[..., list[NodeProc]], redis_server: RedisProc,
        conns: Conns, back_on: str) -> None:
    """docs/cluster.md "A node is killed": X (3.1.1, CleanSession 0, QoS 1) is connected to
    node A when A is SIGKILLed. 10 QoS 1 messages published on node B right away (before A's
    liveness key expires) and 10 more after it expired are all PUBACKed. X comes back either
    to A restarted under the same name ("Messages already in its inbox wait for it: when it
    comes back it delivers them to the sessions it still owns") or to node B, which takes the
    session over from Redis. Either way Session Present 1 and all 20 arrive (at least once, in
    order): the broker stores the QoS 1 messages matching a disconnected persistent session's
    subscriptions [MQTT-3.1.2-5] [MQTT-4.3.2] and it acknowledged every one of them.

    (The page also says the others "drop its routes ... (nothing more is forwarded to it)";
    that would lose the second 10, acknowledged to their publisher, if X came back to A: the
    node keeps forwarding until the sessions are taken over, which this test lets it do.)"""
    a, b = cluster_nodes(2, cluster=FAST)
    r = redis_server.client()
    x = conns.paho(a, "ki-x", clean=False)
    assert x.subscribe(("ki/#", 1)) == [1]
    pub = conns.paho(b, "ki-pub")
    wait_route(pub, "ki/probe", x)
    a.kill()
    t0 = time.monotonic()
    for i in range(10):
        pub.publish("ki/data", b"%d" % i, 1)
    assert time.monotonic() - t0 < FAST["node_timeout"], "too slow to test the inbox"
    wait_until(lambda: not r.exists(f"{PREFIX}:node:{a.node}"), 5,
               what="node A's liveness key to expire")
    time.sleep(FAST["heartbeat"] * 2)  # the others have looked at it by now
    for i in range(10, 20):
        pub.publish("ki/data", b"%d" % i, 1)
    if back_on == "restarted":
        a.start()
        x2 = conns.paho(a, "ki-x", clean=False)
    else:
        x2 = conns.paho(b, "ki-x", clean=False)
    assert x2.session_present is True, logs(a, b)
    want = {b"%d" % i for i in range(20)}
    with contextlib.suppress(AssertionError):
        x2.messages.wait_until(lambda ms: {m.payload for m in ms if m.topic == "ki/data"}
                               >= want, 10, "the 20 messages")
    nums = numbers(on(x2, "ki/data"))
    missing = set(range(20)) - set(nums)
    assert not missing, (f"acknowledged QoS 1 messages lost with node A "
                         f"(back on {back_on}): {describe(missing)}; got {nums}\n{logs(a, b)}")
    firsts = sorted(set(nums), key=nums.index)
    assert firsts == list(range(20)), f"out of order: {nums}"


def test_two_sessions_on_a_killed_node_one_taken_over_other_loses_nothing(
        cluster_nodes: Callable[..., list[NodeProc]], conns: Conns) -> None:
    """Two persistent sessions X and Y (3.1.1, CleanSession 0) on node A hold the same filter
    ``dd/#`` (QoS 1) when A is SIGKILLed. X comes back on node B (taking its session from
    Redis; the dead node's route for ``dd/#`` must still count Y). 10 QoS 1 messages are then
    published on node C and PUBACKed; X gets them. Y comes back on node B too: Session
    Present 1 and the 10 messages, which the broker acknowledged while Y's session held a
    matching subscription [MQTT-3.1.2-5] (``P:routes:{node}`` counts sessions per filter:
    docs/cluster.md "State in Redis")."""
    a, b, c = cluster_nodes(3, cluster=FAST)
    x = conns.paho(a, "dd-x", clean=False)
    y = conns.paho(a, "dd-y", clean=False)
    for cl in (x, y):
        assert cl.subscribe(("dd/#", 1)) == [1]
    pub = conns.paho(c, "dd-pub")
    wait_route(pub, "dd/probe", x, y)
    a.kill()
    x2 = conns.paho(b, "dd-x", clean=False)
    assert x2.session_present is True
    wait_route(pub, "dd/probe-x", x2)
    for i in range(10):
        pub.publish("dd/data", b"%d" % i, 1)
    x2.messages.wait_until(lambda ms: len([m for m in ms if m.topic == "dd/data"]) >= 10, 10,
                           "X: the 10 messages")
    y2 = conns.paho(b, "dd-y", clean=False)
    assert y2.session_present is True
    with contextlib.suppress(AssertionError):
        y2.messages.wait_until(lambda ms: {m.payload for m in ms if m.topic == "dd/data"}
                               >= {b"%d" % i for i in range(10)}, 8, "Y: the 10 messages")
    missing = set(range(10)) - set(numbers(on(y2, "dd/data")))
    assert not missing, (f"Y lost acknowledged messages published after X left the dead "
                         f"node: {describe(missing)}\n{logs(b, c)}")


def test_qos2_resent_publish_not_forwarded_again(
        cluster_nodes: Callable[..., list[NodeProc]], conns: Conns) -> None:
    """docs/cluster.md "QoS 2 exactly once": a QoS 2 PUBLISH resent with DUP 1 before PUBREL
    is answered PUBREC again and not forwarded again [MQTT-4.3.3-2], also when the publisher's
    session (CleanSession 0, ``P:inbound:{id}``) moved to another node in between: the QoS 2
    subscriber on node A gets each message once."""
    a, b, c = cluster_nodes(3)
    sub = conns.paho(a, "q2-sub")
    assert sub.subscribe(("q2/#", 2)) == [2]
    probe = conns.paho(b, "q2-probe")
    wait_route(probe, "q2/probe", sub)
    probe_c = conns.paho(c, "q2-probe-c")
    wait_route(probe_c, "q2/probe-c", sub)
    p = RawClient(b.port)
    conns.add(p.close)
    assert p.connect("q2-pub", clean=False).return_code == 0
    # same node: PUBLISH, PUBREC, PUBLISH DUP, PUBREC, PUBREL, PUBCOMP
    p.send(Publish("q2/data", b"one", 2, False, False, 7))
    assert p.expect(Pubrec).packet_id == 7
    p.send(Publish("q2/data", b"one", 2, False, True, 7))
    assert p.expect(Pubrec).packet_id == 7
    p.send(Pubrel(7))
    assert p.expect(Pubcomp).packet_id == 7
    # the session moves from B to C between PUBREC and the resend
    p.send(Publish("q2/data", b"two", 2, False, False, 8))
    assert p.expect(Pubrec).packet_id == 8
    p.disconnect()
    p2 = RawClient(c.port)
    conns.add(p2.close)
    ack = p2.connect("q2-pub", clean=False)
    assert ack.return_code == 0 and ack.session_present is True
    p2.send(Publish("q2/data", b"two", 2, False, True, 8))
    assert p2.expect(Pubrec).packet_id == 8
    p2.send(Pubrel(8))
    assert p2.expect(Pubcomp).packet_id == 8
    sub.messages.wait_until(lambda ms: len(on(sub.messages, "q2/data")) >= 2, 5, "2 messages")
    time.sleep(0.5)  # a duplicate would come now
    assert [(m.payload, m.qos) for m in on(sub, "q2/data")] == [(b"one", 2), (b"two", 2)], (
        f"{on(sub, 'q2/data')}\n{logs(a, b, c)}")


def test_fleet_across_nodes_rides_out_a_node_kill(
        cluster_nodes: Callable[..., list[NodeProc]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The device fleet (devices/fleet.py, its broker-restart profile) publishes to node A
    while its verifier (devices/verifier.py: MQTT 5, a persistent QoS 2 subscription) is on
    node B; node A is SIGKILLed mid-run and restarted under the same name 1 s later, the
    devices reconnect to it and resend what they buffered. No QoS 1/2 reading the cluster
    acknowledged is lost, none at QoS 2 arrives twice."""
    import devices.fleet as fleet_mod
    from devices.profile import Profile, load_profile
    from devices.verifier import Verifier

    a, b = cluster_nodes(2, cluster=FAST)
    monkeypatch.setattr(fleet_mod, "Verifier",
                        lambda host, port, timeline: Verifier(host, b.port, timeline))
    prof = load_profile("broker-restart")
    prof = Profile(**{**prof.as_dict(), "interval_scale": 0.2, "ramp_up": 1.0, "drain": 6.0})
    result: dict[str, Any] = {}

    def fleet() -> None:
        result["report"], _ = fleet_mod.run_fleet(f"mqtt://127.0.0.1:{a.port}", 40, 8.0, prof,
                                                  processes=1, progress=False)

    t = threading.Thread(target=fleet, daemon=True)
    t.start()
    t.join(3.0)
    assert t.is_alive(), "the fleet ended before the node was killed"
    a.restart(1.0, kill=True)
    t.join(50)
    assert not t.is_alive(), "the fleet did not finish"
    report = result["report"]
    assert report["published"]["1"] > 0, report
    assert report["published"]["2"] >= 10, report  # each door sensor's report at power-up
    assert report["reconnects"] >= 40, report  # every device went through the kill
    assert report["lost"]["1"] == 0 and report["lost"]["2"] == 0, f"{report}\n{logs(a, b)}"
    assert report["duplicates"]["2"] == 0, report


# -- 7. Redis goes away -----------------------------------------------------------------------

class Ticker:
    """A QoS 0 publisher sending a numbered message every ``interval`` s in a thread."""

    def __init__(self, client: Client, topic: str, interval: float = 0.02) -> None:
        self.client, self.topic, self.interval = client, topic, interval
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self.client.publish(self.topic, b"%d" % self.sent, 0, wait=False)
            self.sent += 1

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(5)


def test_redis_outage_local_traffic_goes_on_and_held_messages_arrive(
        cluster_nodes: Callable[..., list[NodeProc]], redis_server: RedisProc,
        conns: Conns) -> None:
    """docs/cluster.md "Redis goes away": Redis stopped for ~3 s (then started again on the
    same port with its data, as a Redis with persistence comes back). Node A keeps serving
    local traffic (a local QoS 0 subscriber keeps receiving a QoS 0 stream), both processes
    stay alive, ``mqttbroker_cluster_redis_up`` is 0 during the outage and 1 after, A's log
    says "Redis unreachable" once. QoS 1 messages published on A during the outage for a
    subscriber on B are held (no PUBACK yet) and arrive after the return; cross-node delivery
    works again both ways."""
    a, b = cluster_nodes(2, http=True)
    local = conns.paho(a, "out-local")
    assert local.subscribe(("out/local/#", 0)) == [0]
    remote = conns.paho(b, "out-remote", clean=False)
    assert remote.subscribe(("out/remote/#", 1)) == [1]
    pub = conns.paho(a, "out-pub")
    assert isinstance(pub, Paho)
    wait_route(pub, "out/remote/probe", remote)
    assert redis_up(a) == 1 and redis_up(b) == 1
    ticker = Ticker(conns.paho(a, "out-ticker"), "out/local/tick")
    try:
        wait_until(lambda: len(on(local, "out/local/tick")) >= 10, 5, what="local ticks")
        t0 = time.monotonic()
        redis_server.stop(save=True)
        down = wait_until(lambda: redis_up(a) == 0, 8, interval=0.1,
                          what="mqttbroker_cluster_redis_up 0 on node A")
        held = [pub.publish("out/remote/held", b"%d" % i, 1, wait=False) for i in range(20)]
        ticks_then = len(on(local, "out/local/tick"))
        time.sleep(max(0.0, 3.0 - (time.monotonic() - t0)))
        ticks_during = len(on(local, "out/local/tick")) - ticks_then
        assert a.running and b.running, f"a node died with Redis\n{logs(a, b)}"
        assert ticks_during >= 10, (
            f"local QoS 0 traffic stopped with Redis: {ticks_during} ticks in the last part "
            f"of the outage\n{logs(a)}")
        assert redis_up(a) == 0 and redis_up(b) == 0
        unacked = sum(1 for h in held if not h.is_published())
        redis_server.start()
    finally:
        ticker.finish()
    assert down
    wait_until(lambda: redis_up(a) == 1 and redis_up(b) == 1, 15, interval=0.1,
               what="mqttbroker_cluster_redis_up back to 1 on both nodes")
    for h in held:
        h.wait_for_publish(15)
    remote.messages.wait_until(
        lambda ms: {m.payload for m in ms if m.topic == "out/remote/held"}
        >= {b"%d" % i for i in range(20)}, 15,
        "the 20 QoS 1 messages published during the outage")
    assert unacked > 0, "QoS 1 messages for another node were acknowledged without Redis"
    sent = ticker.sent
    got = set(numbers(on(local, "out/local/tick")))
    assert len(got) >= sent * 0.9, f"local ticks lost: {len(got)} of {sent}"
    # cross-node again, both ways
    for i in range(5):
        pub.publish("out/remote/after", b"%d" % i, 1)
    pub_b = conns.paho(b, "out-pub-b")
    for i in range(5):
        pub_b.publish("out/local/fromb", b"%d" % i, 1)
    remote.messages.wait_until(lambda ms: len([m for m in ms if m.topic == "out/remote/after"])
                               >= 5, 10, "A -> B after the outage")
    local.messages.wait_until(lambda ms: len([m for m in ms if m.topic == "out/local/fromb"])
                              >= 5, 10, "B -> A after the outage")
    text = a.log_text().lower()
    assert text.count("redis unreachable") == 1, (
        f"'Redis unreachable' {text.count('redis unreachable')} times in node A's log "
        f"(once expected)\n{a.log_tail()}")


# -- 8. --workers -------------------------------------------------------------------------------

def test_workers_share_the_port_and_act_as_one_broker(
        tmp_path: Path, redis_server: RedisProc) -> None:
    """``mqttbroker serve --workers 2``: two worker processes accept on the same port
    (SO_REUSEPORT), each a node ``<node>-w<i>`` with its liveness key; 20 times a subscriber
    and a publisher on separate connections exchange a QoS 1 message, and the connections
    land on both workers (``P:client:{id}`` ``node``); SIGTERM stops the parent and its
    workers (exit 0)."""
    r = redis_server.client()
    with node_procs(tmp_path) as make, Conns() as conns:
        node = make(redis_server.url, "wk", workers=2, mqtt=MQTT).start()
        keys = node.liveness_keys()
        assert len(keys) == 2, keys
        workers = {k.removeprefix(f"{PREFIX}:node:") for k in keys}
        owners: Counter[str] = Counter()
        for i in range(20):
            sub = conns.paho(node, f"wk-sub{i}")
            assert sub.subscribe((f"wk/{i}/#", 1)) == [1]
            pub = conns.paho(node, f"wk-pub{i}")
            owners.update(owner(r, cid) or "?" for cid in (f"wk-sub{i}", f"wk-pub{i}"))

            def exchanged(sub: Client = sub, pub: Client = pub, i: int = i) -> bool:
                pub.publish(f"wk/{i}/m", b"%d" % i, 1)
                return bool(on(sub, f"wk/{i}/m"))

            wait_until(exchanged, 5, interval=0.1,
                       what=f"round {i}: a message from publisher to subscriber")
            sub.disconnect()
            pub.disconnect()
        assert set(owners) == workers, (
            f"connections by owner {dict(owners)}, workers {workers}\n{node.log_tail()}")
        pgid = node.pid
        code = node.terminate(10)
        assert code == 0, f"exit code {code} after SIGTERM\n{node.log_tail()}"

        def group_gone() -> bool:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return True
            return False

        wait_until(group_gone, 10, what="the workers to exit with the parent")


def test_workers_need_a_cluster_section(tmp_path: Path, redis_server: RedisProc) -> None:
    """``--workers N`` runs N nodes of the configured cluster: without a ``cluster`` section
    ``serve --workers 2`` refuses to start (an error naming the cluster section, a non-zero
    exit) rather than running N separate brokers."""
    with node_procs(tmp_path) as make:
        node = make(redis_server.url, "nowk", workers=2, with_cluster=False).spawn()
        assert node.proc is not None
        try:
            code = node.proc.wait(15)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"serve --workers 2 without a cluster section is still "
                                 f"running after 15 s\n{node.log_tail()}") from None
        said = node.log_text().replace(str(tmp_path), "<tmp>").lower()  # the path names the test
        assert code != 0 and "cluster section" in said, node.log_tail()


def test_sys_topics_are_each_nodes_own(redis_server: RedisProc,
                                       make_broker_thread: Callable[[dict[str, Any]], Any]
                                       ) -> None:
    """docs/cluster.md: ``$SYS`` is per node. With a ``$SYS/#`` subscriber on node A, node B's
    ``$SYS`` updates are not forwarded to A, and none lands in the shared retained store; A's
    subscriber sees A's own (its uptime, its clients)."""
    def config(node: str) -> dict[str, Any]:
        return {"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}},
                "sys_interval": 0.2, "auth": {"allow-anonymous": True},
                "cluster": {"redis": redis_server.url, "node": node}}

    a = make_broker_thread(config("sys-a"))
    make_broker_thread(config("sys-b"))
    sub = Paho("sys-sub", V311)
    try:
        sub.connect(a.port)
        sub.subscribe(("$SYS/broker/clients/connected", 0))
        sub.messages.wait_until(lambda ms: len(ms) >= 3, 5, "three $SYS updates from node A")
        time.sleep(1.0)  # five more intervals of node B's $SYS
        r = redis_server.client()
        assert inbox_added(r, "sys-a") == 0, "node B forwarded its $SYS to node A"
        assert [k for k in r.hkeys(f"{PREFIX}:retained") if "$SYS" in str(k)] == []
        # live updates (not the retained one from before it connected): A has just this client
        assert {m.payload for m in sub.messages.messages if not m.retain} == {b"1"}
    finally:
        sub.close()


def _thread_nodes(redis_server: RedisProc, make: Callable[[dict[str, Any]], Any],
                  *names: str) -> list[Any]:
    return [make({"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}},
                  "sys_interval": 0, "auth": {"allow-anonymous": True},
                  "mqtt": {"max_connection_rate_per_address": 0},
                  "cluster": {"redis": redis_server.url, "node": n}}) for n in names]


def test_a_subscription_acknowledged_on_one_node_gets_the_next_publish_on_another(
        redis_server: RedisProc, make_broker_thread: Callable[[dict[str, Any]], Any]) -> None:
    """After SUBACK [MQTT-3.8.4-1] a message published on another node at once is delivered:
    the SUBACK waits until the other nodes can know the route (docs/cluster.md). 20 times, a
    fresh filter each time, the publish sent the moment the SUBACK arrives."""
    a, b = _thread_nodes(redis_server, make_broker_thread, "sa-a", "sa-b")
    sub, pub = Paho("sa-sub", V311), Paho("sa-pub", V311)
    try:
        sub.connect(a.port)
        pub.connect(b.port)
        for i in range(20):
            assert sub.subscribe((f"sa/{i}", 1)) == [1]
            pub.publish(f"sa/{i}", b"%d" % i, 1)
        sub.messages.wait_until(lambda ms: len(ms) >= 20, 10, "the 20 messages")
        assert sorted(int(m.payload) for m in sub.messages.messages) == list(range(20))
    finally:
        sub.close()
        pub.close()


def test_assigned_client_ids_need_no_claim_mqtt_3_1_3_6(
        redis_server: RedisProc, make_broker_thread: Callable[[dict[str, Any]], Any]) -> None:
    """An empty client id with a clean session gets an id assigned [MQTT-3.1.3-6] on a node
    too (a regression: the node claimed each new id, then assigned another, for ever)."""
    (a,) = _thread_nodes(redis_server, make_broker_thread, "as-a")
    r = RawClient(a.port, 4)
    try:
        assert r.connect("").return_code == 0
    finally:
        r.close()


def test_new_client_id_refused_while_redis_is_away(
        redis_server: RedisProc, make_broker_thread: Callable[[dict[str, Any]], Any]) -> None:
    """docs/cluster.md: while Redis is unreachable a client id the node does not hold cannot
    be claimed: CONNACK 0x03 Server unavailable (3.1.1), and the node goes on: once Redis is
    back the same client connects."""
    (a,) = _thread_nodes(redis_server, make_broker_thread, "away-a")
    redis_server.stop()
    try:
        r = RawClient(a.port, 4, timeout=15)
        try:
            assert r.connect("never-seen", timeout=15).return_code == 3
        finally:
            r.close()
    finally:
        redis_server.start()
    r = RawClient(a.port, 4)
    try:
        assert r.connect("never-seen").return_code == 0
    finally:
        r.close()


def test_the_store_keeps_extension_records_per_node(redis_server: RedisProc) -> None:
    """What an extension (an MQTT-SN listener) stores through a node's RedisStore comes back
    to that node, and only to it; a record deleted in the batch that made it never lands."""
    import redis.asyncio as aioredis

    from mqttbroker.cluster.store import Keys, RedisStore

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        r = aioredis.from_url(redis_server.url)
        keys = Keys(unique_id("records-"))
        first = RedisStore(r, keys, "node-a")
        assert (await first.open(loop)).records == {}
        first.put_record("mqttsn:sn", "c1", b"\x81\xa1a\x01")
        first.put_record("mqttsn:sn", "c2", b"gone")
        first.delete_record("mqttsn:sn", "c2")
        first.put_record("other", "k", b"")
        await first.close()
        again = RedisStore(r, keys, "node-a")
        assert (await again.open(loop)).records == {
            "mqttsn:sn": {"c1": b"\x81\xa1a\x01"}, "other": {"k": b""}}
        again.delete_record("other", "k")
        await again.close()
        assert (await RedisStore(r, keys, "node-a").open(loop)).records == {
            "mqttsn:sn": {"c1": b"\x81\xa1a\x01"}}
        assert (await RedisStore(r, keys, "node-b").open(loop)).records == {}
        await r.aclose()

    asyncio.run(scenario())


def test_a_connect_storm_beyond_the_redis_pool_is_not_taken_for_an_outage(
        cluster_nodes: Callable[..., list[NodeProc]]) -> None:
    """300 clients CONNECT to one node at the same moment: every CONNECT claims its client id
    in Redis. redis-py's default pool raised "Too many connections" past 100 requests at
    once, the node took that for Redis being down and refused clients with CONNACK 0x03
    (found by benchmarks/scale.py); the node's pool now makes requests wait for a
    connection. Every client gets CONNACK 0."""
    (node,) = cluster_nodes(1, cluster=FAST)
    storm = 300

    async def storm_connects() -> list[bytes]:
        async def one(i: int) -> bytes:
            r, w = await asyncio.open_connection("127.0.0.1", node.port)
            cid = f"storm-{i:04d}".encode()
            body = (b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid)
            w.write(bytes((0x10, len(body))) + body)
            try:
                return await asyncio.wait_for(r.readexactly(4), 15)
            finally:
                w.close()

        return await asyncio.gather(*(one(i) for i in range(storm)))

    answers = asyncio.run(storm_connects())
    assert [a.hex(" ") for a in answers] == ["20 02 00 00"] * storm, node.log_tail()
    assert "unreachable" not in node.log_text()
