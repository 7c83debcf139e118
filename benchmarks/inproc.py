"""The broker's own cost per message, in process: no sockets, no load generator, no scheduler.

    python -m benchmarks.inproc [--qos 0] [--count 50000] [--reps 9]
    python -m benchmarks.inproc --connect [--count 10000]   # connection set-up instead
    PYTHONPATH=/path/to/other/checkout python -m benchmarks.inproc   # another revision

A broker is started in this process (its listener is never used); two connections are made
on fake transports that only count the bytes written: a subscriber of ``b/in/#`` and a
publisher whose PUBLISH packets (64-byte payloads, 200 per read) are handed to its
``data_received`` directly. The figure is the process CPU time per message over one pass:
decode, checks, routing, encoding and the write to the subscriber's transport. The minimum
over ``--reps`` passes is the least disturbed one. ``--connect``: the CPU time per connection
of ``--count`` connections made, sent a 3.1.1 CONNECT (CONNACK written) and closed.

On a shared machine the end-to-end benchmarks (benchmarks/run.py, ab.py) move by +-10-20%
between runs; this one by about +-3%, so it is the one that can tell a 2% change in the
per-message path from noise (run it alternately against two checkouts, several times).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any

import mqttbroker
from mqttbroker.broker import Broker
from mqttbroker.client import ClientConnection


class CountingTransport:
    """Enough of an asyncio transport for a connection: writes are counted, not sent."""

    def __init__(self) -> None:
        self.written = 0

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if key == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _connect(client_id: str) -> bytes:
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    return bytes((0x10, len(body))) + body


def _subscribe(topic_filter: str, qos: int) -> bytes:
    f = topic_filter.encode()
    body = b"\x00\x01" + len(f).to_bytes(2, "big") + f + bytes((qos,))
    return bytes((0x82, len(body))) + body


def _publish(topic: str, payload: bytes, qos: int, pid: int) -> bytes:
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + (pid.to_bytes(2, "big") if qos else b"") + payload
    return bytes((0x30 | qos << 1, len(body))) + body


async def measure(qos: int, count: int, reps: int) -> list[float]:
    """CPU microseconds per message, one figure per pass."""
    broker = Broker({"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}},
                     "sys_interval": 0, "log_level": "WARNING",
                     "mqtt": {"max_connection_rate_per_address": 0,
                              "max_queued_messages": 10_000_000,
                              "max_inflight_messages": 65535}})
    await broker.start()
    try:
        sub = ClientConnection(broker, "default")
        sub_t = CountingTransport()
        sub.connection_made(sub_t)  # type: ignore[arg-type]
        sub.data_received(_connect("inproc-sub") + _subscribe("b/in/#", qos))
        pub = ClientConnection(broker, "default")
        pub.connection_made(CountingTransport())  # type: ignore[arg-type]
        pub.data_received(_connect("inproc-pub"))
        reads = [b"".join(_publish("b/in/x", b"p" * 64, qos, (i % 60000) + 1)
                          for i in range(j, min(j + 200, count))) for j in range(0, count, 200)]
        figures = []
        for _ in range(reps):
            gc.collect()
            gc.disable()
            t = time.process_time()
            for data in reads:
                pub.data_received(data)
            figures.append((time.process_time() - t) / count * 1e6)
            gc.enable()
            # the loop turns between passes, as it does between reads in a live broker: the
            # end-of-turn flushes run (core/turns.py) and what the pass made can be freed
            await asyncio.sleep(0)
            session = sub.session
            if session is not None:  # (QoS 1: nothing is acknowledged; start empty again)
                session.inflight.clear()
                if session.queue:
                    session.queue = type(session.queue)()
        if not sub_t.written:
            raise RuntimeError("the subscriber got nothing")
        return figures
    finally:
        await broker.shutdown()


async def measure_connect(count: int, reps: int) -> list[float]:
    """CPU microseconds per connection (made, CONNECT, CONNACK, closed), one figure per
    pass."""
    broker = Broker({"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}},
                     "sys_interval": 0, "log_level": "WARNING",
                     "mqtt": {"max_connection_rate_per_address": 0}})
    await broker.start()
    try:
        frames = [_connect(f"inproc-{i:06d}") for i in range(count)]
        figures = []
        for _ in range(reps):
            gc.collect()
            gc.disable()
            t = time.process_time()
            made = []
            for data in frames:
                c = ClientConnection(broker, "default")
                c.connection_made(CountingTransport())  # type: ignore[arg-type]
                c.data_received(data)
                made.append(c)
            for c in made:
                c.connection_lost(None)
            figures.append((time.process_time() - t) / count * 1e6)
            gc.enable()
            await asyncio.sleep(0)  # (the end-of-turn flushes run, as between reads)
            if len(broker.connections):
                raise RuntimeError("connections left after closing them all")
        return figures
    finally:
        await broker.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qos", type=int, choices=(0, 1), default=0)
    ap.add_argument("--count", type=int, default=50_000)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--connect", action="store_true", help="connection set-up instead")
    args = ap.parse_args()
    where = mqttbroker.__file__.rsplit("/mqttbroker/", 1)[0]
    if args.connect:
        count = min(args.count, 10_000)  # (a CONNECT is one loop turn: no need for more)
        figures = sorted(asyncio.run(measure_connect(count, args.reps)))
        print(f"{where}: {count:,} connections x {args.reps}: min {figures[0]:.2f}, median "
              f"{figures[len(figures) // 2]:.2f} us CPU per connection")
        return
    figures = sorted(asyncio.run(measure(args.qos, args.count, args.reps)))
    print(f"{where}: QoS {args.qos}, {args.count:,} messages x {args.reps}: "
          f"min {figures[0]:.3f}, median {figures[len(figures) // 2]:.3f} us CPU per message")


if __name__ == "__main__":
    main()
