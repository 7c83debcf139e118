"""The broker's own cost per message, in process: no sockets, no load generator, no scheduler.

    python -m benchmarks.inproc [--qos 0] [--count 50000] [--reps 9]
    python -m benchmarks.inproc --connect [--count 10000]   # connection set-up instead
    python -m benchmarks.inproc --pingpong [--count 20000]  # one message per read, acknowledged
    PYTHONPATH=/path/to/other/checkout python -m benchmarks.inproc   # another revision

A broker is started in this process (its listener is never used); two connections are made
on fake transports that only count the bytes written: a subscriber of ``b/in/#`` and a
publisher whose PUBLISH packets (64-byte payloads, 200 per read) are handed to its
``data_received`` directly. The figure is the process CPU time per message over one pass:
decode, checks, routing, encoding and the write to the subscriber's transport. The minimum
over ``--reps`` passes is the least disturbed one. ``--connect``: the CPU time per connection
of ``--count`` connections made, sent a 3.1.1 CONNECT (CONNACK written) and closed.

``--pingpong``: the path of the latency scenario (one QoS 1 message at a time), hot. On uvloop,
with the broker's own socket transport (transports/rawtcp.py) over socket pairs: one PUBLISH per
read of the publisher, the delivery read from the subscriber's socket, one PUBACK per read of
the subscriber, the broker's end of turn held and released around each read as its hub does.
The figure (CPU per message, this process: the broker's work, its two sends, and the two
reads standing in for the clients) leaves out only the event loop's wake-ups; set beside the
live broker's CPU per message in the latency scenario, it says how much of that is the
cold path rather than the work.

On a shared machine the end-to-end benchmarks (benchmarks/run.py, ab.py) move by +-10-20%
between runs; this one by about +-3%, so it is the one that can tell a 2% change in the
per-message path from noise (run it alternately against two checkouts, several times).
"""

from __future__ import annotations

import _socket
import argparse
import asyncio
import gc
import socket
import time
from collections.abc import Callable
from typing import Any

import uvloop

import mqttbroker
from mqttbroker.broker import Broker
from mqttbroker.client import ClientConnection
from mqttbroker.transports import rawtcp


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


def _broker(**mqtt: int) -> Broker:
    """A broker for this process only (its listener is never used): no $SYS, no per-address
    connection rate limit, ``mqtt`` settings on top."""
    return Broker({"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}},
                   "sys_interval": 0, "log_level": "WARNING",
                   "mqtt": {"max_connection_rate_per_address": 0, **mqtt}})


def _cpu_us_per(count: int, one_pass: Callable[[], object]) -> float:
    """CPU microseconds per item of ``one_pass`` (``count`` items), run with the cyclic
    collector off after a full collection, so that no pass pays for another's garbage."""
    gc.collect()
    gc.disable()
    try:
        t = time.process_time()
        one_pass()
        return (time.process_time() - t) / count * 1e6
    finally:
        gc.enable()


async def measure(qos: int, count: int, reps: int) -> list[float]:
    """CPU microseconds per message, one figure per pass."""
    broker = _broker(max_queued_messages=10_000_000, max_inflight_messages=65535)
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

        def one_pass() -> None:
            for data in reads:
                pub.data_received(data)

        figures = []
        for _ in range(reps):
            figures.append(_cpu_us_per(count, one_pass))
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
    broker = _broker()
    await broker.start()
    try:
        frames = [_connect(f"inproc-{i:06d}") for i in range(count)]

        def one_pass() -> None:
            made = []
            for data in frames:
                c = ClientConnection(broker, "default")
                c.connection_made(CountingTransport())  # type: ignore[arg-type]
                c.data_received(data)
                made.append(c)
            for c in made:
                c.connection_lost(None)

        figures = []
        for _ in range(reps):
            figures.append(_cpu_us_per(count, one_pass))
            await asyncio.sleep(0)  # (the end-of-turn flushes run, as between reads)
            if len(broker.connections):
                raise RuntimeError("connections left after closing them all")
        return figures
    finally:
        await broker.shutdown()


def _socket_pair() -> tuple[_socket.socket, socket.socket]:
    """The broker's end as rawtcp.RawServer makes it (a plain non-blocking _socket.socket),
    and the client's end."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    family, kind, proto = int(ours.family), int(ours.type), ours.proto
    return _socket.socket(family, kind | socket.SOCK_NONBLOCK, proto, ours.detach()), theirs


async def measure_pingpong(count: int, reps: int) -> list[float]:
    """CPU microseconds per QoS 1 message, one read per packet (see the module's docstring),
    one figure per pass."""
    broker = _broker()
    await broker.start()
    turn = broker.end_of_turn
    hub = rawtcp.Hub(asyncio.get_running_loop(), turn)
    ends: list[socket.socket] = []
    try:
        conns = []
        for i, first in enumerate((_connect("pingpong-sub") + _subscribe("b/in/#", 1),
                                   _connect("pingpong-pub"))):
            sock, theirs = _socket_pair()
            ends.append(theirs)
            conn = ClientConnection(broker, "default")
            t = rawtcp.RawTransport(sock, conn, hub, ("127.0.0.1", 40000 + i))
            hub.add(sock.fileno(), t)
            conn.connection_made(t)
            conn.data_received(first)
            conns.append(conn)
        sub, pub = conns
        await asyncio.sleep(0.05)  # (CONNACKs, SUBACK: written at the end of this turn)
        for theirs in ends:
            theirs.recv(65536)
        sub_end, pub_end = ends
        reads = [_publish("b/in/x", b"p" * 64, 1, (i % 60000) + 1) for i in range(count)]

        def one_pass() -> None:
            for data in reads:
                turn.hold()
                pub.data_received(data)
                turn.release()
                delivery = sub_end.recv(65536)  # a PUBLISH: its packet id follows the topic
                end = 6 + int.from_bytes(delivery[2:4], "big")
                turn.hold()
                sub.data_received(b"\x40\x02" + delivery[end - 2:end])  # its PUBACK
                turn.release()
                pub_end.recv(65536)  # the publisher's PUBACK

        figures = []
        for _ in range(reps):
            figures.append(_cpu_us_per(count, one_pass))
            await asyncio.sleep(0)
        session = sub.session
        if session is None or session.inflight:
            raise RuntimeError("the subscriber's deliveries were not all acknowledged")
        return figures
    finally:
        await broker.shutdown()
        hub.close()
        for theirs in ends:
            theirs.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qos", type=int, choices=(0, 1), default=0)
    ap.add_argument("--count", type=int, default=50_000)
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--connect", action="store_true", help="connection set-up instead")
    ap.add_argument("--pingpong", action="store_true",
                    help="QoS 1, one message per read and its PUBACK, over sockets on uvloop")
    args = ap.parse_args()
    where = mqttbroker.__file__.rsplit("/mqttbroker/", 1)[0]
    if args.pingpong:
        if not rawtcp.available():
            ap.error("--pingpong needs epoll (Linux)")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            figures = sorted(runner.run(measure_pingpong(args.count, args.reps)))
        print(f"{where}: QoS 1 one per read, {args.count:,} messages x {args.reps}: min "
              f"{figures[0]:.2f}, median {figures[len(figures) // 2]:.2f} us CPU per message")
        return
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
