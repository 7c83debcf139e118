"""A CONNECT storm on a cluster node: every CONNECT claims its client id in Redis
(docs/cluster.md), and a node runs at most ``CLAIMS_AT_ONCE`` of those claims at a time
(cluster/node.py). Unbounded, a burst of CONNECTs read in one turn of the loop filled the
node's Redis pool, its other requests waited past ``POOL_WAIT``, Redis was taken for down and
72,993 of 100,000 devices were refused with CONNACK 0x03 (benchmarks.scale, 7 workers).

In process: a real broker with a cluster section on a real ``redis-server``, 300 raw MQTT
3.1.1 clients over loopback that all send CONNECT before the broker reads any. The claims are
counted as they run (the node's own ``_take``, wrapped)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mqttbroker.broker import Broker
from mqttbroker.cluster import node as cluster_node

from .clusterproc import redis_procs
from .rawmqtt import connect_bytes

STORM = 300
TIMEOUT = 30.0


async def test_a_connect_storm_claims_client_ids_a_bounded_number_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    running = peak = 0
    real_take = cluster_node.ClusterNode._take

    async def counted_take(self: cluster_node.ClusterNode, cid: str,
                           clean: bool) -> tuple[object, str | None]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            return await real_take(self, cid, clean)
        finally:
            running -= 1

    monkeypatch.setattr(cluster_node.ClusterNode, "_take", counted_take)
    with redis_procs(tmp_path) as make_redis:
        redis = make_redis()
        broker = Broker({"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}},
                         "sys_interval": 0,
                         "mqtt": {"max_connection_rate_per_address": 0},
                         "cluster": {"redis": redis.url, "node": "storm"}})
        await broker.start()
        try:
            port = broker.addresses[0][2]
            conns = await asyncio.wait_for(asyncio.gather(
                *(asyncio.open_connection("127.0.0.1", port) for _ in range(STORM))), TIMEOUT)
            for i, (_, writer) in enumerate(conns):  # every CONNECT out before any is read
                writer.write(connect_bytes(f"storm-{i}"))
            acks = await asyncio.wait_for(asyncio.gather(
                *(reader.readexactly(4) for reader, _ in conns)), TIMEOUT)
            for _, writer in conns:
                writer.close()
        finally:
            await broker.shutdown()
    assert acks == [b"\x20\x02\x00\x00"] * STORM  # every device in, none refused
    # the storm did press on the bound (unbounded, the claims of one turn all ran at once)
    assert peak == cluster_node.CLAIMS_AT_ONCE, peak
