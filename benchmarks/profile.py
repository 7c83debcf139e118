"""Profile the broker's hot path with pyinstrument (a statistical profiler).

    python -m benchmarks.profile [--qos 1] [--count 100000] [--out docs/profiles/NAME.txt]
    python -m benchmarks.profile --connect [--count 10000]

Starts ``mqttbroker.broker.Broker`` in this process under pyinstrument, drives it from a
child process with one raw-socket publisher and one subscriber (64-byte payloads, QoS 1/2
publishers keep 100 in flight), and writes pyinstrument's text report. ``--connect``
profiles connection set-up instead: ``--count`` raw-socket clients (64 connecting at a time)
each send CONNECT, wait for CONNACK and stay, then all close. Set PYTHONPATH to a checkout of
another commit to profile that version of the broker the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import sys
import time
from pathlib import Path

from benchmarks import wire


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _drive(port: int, qos: int, count: int) -> float:
    sr, sw = await asyncio.open_connection("127.0.0.1", port)
    sw.write(wire.connect("prof-sub"))
    await sr.readexactly(4)
    sw.write(wire.subscribe(1, [("prof/#", qos)]))
    await sr.readexactly(5)
    pr, pw = await asyncio.open_connection("127.0.0.1", port)
    pw.write(wire.connect("prof-pub"))
    await pr.readexactly(4)
    window = asyncio.Semaphore(100 if qos else count)
    done = asyncio.Event()
    t0 = time.perf_counter()

    async def publisher() -> None:
        for seq in range(count):
            await window.acquire()
            pw.write(wire.publish("prof/t", wire.payload(1, seq), qos=qos,
                                  packet_id=wire.packet_id_for(seq) if qos else 0))
            if not qos:
                window.release()
            if seq % 100 == 0:
                await pw.drain()

    async def publisher_acks() -> None:
        buf = b""
        while qos and not done.is_set():
            data = await pr.read(65536)
            if not data:
                return
            buf += data
            frames, used = wire.split_frames(buf)
            buf = buf[used:]
            for first, _start, _end in frames:
                if first >> 4 == 4:  # PUBACK
                    window.release()

    async def subscriber() -> None:
        got = 0
        buf = b""
        while got < count:
            data = await sr.read(262144)
            if not data:
                return
            buf += data
            frames, used = wire.split_frames(buf)
            for first, start, end in frames:
                if first >> 4 == 3:
                    got += 1
                    if qos == 1:
                        sw.write(wire.ack(4, int.from_bytes(buf[end - 66:end - 64], "big")))
            buf = buf[used:]
        done.set()

    acks = asyncio.create_task(publisher_acks())
    await asyncio.wait_for(asyncio.gather(publisher(), subscriber()), 120)
    elapsed = time.perf_counter() - t0
    acks.cancel()
    return count / elapsed


async def _connects(port: int, count: int) -> float:
    """``count`` clients CONNECT (64 at a time) and stay; the rate of CONNACKs, then all
    close."""
    window = asyncio.Semaphore(64)
    held: list[asyncio.StreamWriter] = []

    async def one(i: int) -> None:
        async with window:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(wire.connect(f"prof-{i}"))
            await r.readexactly(4)
            held.append(w)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    rate = count / (time.perf_counter() - t0)
    for w in held:
        w.close()
    return rate


def _client(port: int, qos: int, count: int, out: mp.Queue[float]) -> None:
    if qos < 0:
        out.put(asyncio.run(_connects(port, count)))
    else:
        out.put(asyncio.run(_drive(port, qos, count)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qos", type=int, choices=(0, 1), default=1)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--connect", action="store_true",
                    help="profile connection set-up (CONNECT -> CONNACK) instead")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.connect:
        args.qos = -1
    from pyinstrument import Profiler

    from mqttbroker.broker import Broker

    port = _free_port()
    rate: list[float] = []

    async def run() -> None:
        broker = Broker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                         "sys_interval": 0, "log_level": "WARNING",
                         "mqtt": {"max_queued_messages": 1_000_000,
                                  # (one address opens every connection)
                                  "max_connection_rate_per_address": 0}})
        await broker.start()
        ctx = mp.get_context("spawn")
        q: mp.Queue[float] = ctx.Queue()
        proc = ctx.Process(target=_client, args=(port, args.qos, args.count, q))
        proc.start()
        loop = asyncio.get_running_loop()
        rate.append(await loop.run_in_executor(None, q.get, True, 150))
        proc.join(5)
        await broker.shutdown()

    profiler = Profiler(interval=0.0005)
    profiler.start()
    import uvloop

    uvloop.run(run())
    profiler.stop()
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    header = (f"# {args.count} connections, {rate[0]:,.0f} CONNACKs/s under the profiler\n"
              if args.connect else
              f"# QoS {args.qos}, {args.count} messages, {rate[0]:,.0f} msg/s under the "
              "profiler\n")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(header + text)
    print(header + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
