"""A reconnect storm: N clients with persistent sessions come back at once, beside Mosquitto.

    python -m benchmarks.storm [--clients 10000] [--brokers ours,mosquitto] [--rounds 1]
                               [--out benchmarks/results]

Per broker (fresh, as ``make bench`` starts it; ours keeps sessions in memory, as Mosquitto
does without persistence): ``--clients`` raw-socket MQTT 3.1.1 clients in two processes
connect with CleanSession 0 and subscribe at QoS 1 to their own ``storm/<id>``; all drop
their sockets at once (no DISCONNECT); one QoS 1 message per client is published, which
the broker queues in each offline session; then every client reconnects at the same moment
(CleanSession 0, no new SUBSCRIBE) and must get Session Present 1 and its queued message
exactly once. Measured: the time from the storm's start to the last CONNACK, and to the last
queued message delivered; failures, wrong counts. Prints the table and writes
``OUT/storm.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path
from typing import Any

from . import brokers, wire
from .run import machine

Json = dict[str, Any]
PROCS = 2
CAP = 120.0  # seconds any phase may take


class Client(asyncio.Protocol):
    """One client: CONNECT (CleanSession 0), SUBSCRIBE on the first visit; counts CONNACKs
    with Session Present and the messages it gets, acknowledging them."""

    def __init__(self, cid: str, first: bool, state: State) -> None:
        self.cid, self.first, self.state = cid, first, state
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        data = wire.connect(self.cid, keepalive=600, clean=False)
        if self.first:
            data += wire.subscribe(1, [(f"storm/{self.cid}", 1)])
        transport.write(data)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for first, body in wire.take_frames(self.buf):
            kind = first >> 4
            st = self.state
            if kind == 2:
                if body[1] != 0:
                    st.errors.append(f"CONNACK 0x{body[1]:02X}")
                elif not self.first:
                    st.connacks += 1
                    st.present += body[0] & 1
                    st.last_connack = time.monotonic_ns()
            elif kind == 9:
                st.subscribed += 1
            elif kind == 3:
                tlen = int.from_bytes(body[:2], "big")
                if (first >> 1) & 3:
                    assert self.transport is not None
                    self.transport.write(b"\x40\x02" + body[2 + tlen:4 + tlen])
                st.got[self.cid] = st.got.get(self.cid, 0) + 1
                st.last_message = time.monotonic_ns()


class State:
    def __init__(self) -> None:
        self.subscribed = self.connacks = self.present = 0
        self.last_connack = self.last_message = 0
        self.got: dict[str, int] = {}
        self.errors: list[str] = []


async def _clients(conn: Any, port: int, ids: list[str]) -> None:
    loop = asyncio.get_running_loop()
    st = State()

    async def visit(first: bool) -> list[asyncio.Transport]:
        out: list[asyncio.Transport] = []
        for cid in ids:  # (all at once: a storm; the kernel's backlog takes the rest)
            t, _ = await loop.create_connection(functools.partial(Client, cid, first, st),
                                                "127.0.0.1", port)
            out.append(t)
        return out

    held = await visit(True)
    deadline = time.monotonic() + CAP
    while st.subscribed < len(ids) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    for t in held:
        t.abort()  # gone without DISCONNECT
    conn.send(("down", st.subscribed))
    conn.recv()  # "storm": the messages are queued
    t0 = time.monotonic_ns()
    held = await visit(False)
    deadline = time.monotonic() + CAP
    while (st.connacks < len(ids) or len(st.got) < len(ids)) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    conn.send(("back", {"t0_ns": t0, "connacks": st.connacks, "present": st.present,
                        "last_connack_ns": st.last_connack, "last_message_ns": st.last_message,
                        "delivered": len(st.got),
                        "wrong": sum(1 for n in st.got.values() if n != 1),
                        "errors": st.errors[:5]}))
    for t in held:
        t.close()


def _clients_main(conn: Any, port: int, ids: list[str]) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    uvloop.run(_clients(conn, port, ids))


async def _queue_messages(port: int, ids: list[str]) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(wire.connect("storm-publisher", keepalive=600))
    await r.readexactly(4)
    for n, cid in enumerate(ids):
        w.write(wire.publish(f"storm/{cid}", b"queued", qos=1, packet_id=n % 65535 + 1))
        if n % 1000 == 999:
            await w.drain()
    for _ in ids:  # every PUBACK: the broker has them all
        head = await asyncio.wait_for(r.readexactly(4), CAP)
        assert head[0] == 0x40, head
    w.close()


def one_run(name: str, n: int, ours_source: str | None = None) -> Json:
    ids = [f"storm-{i:06d}" for i in range(n)]
    opts: dict[str, Any] = {"source": ours_source} if name == "ours" and ours_source else {}
    with brokers.running(name, nofile=n + 1024, **opts) as b:
        ctx = mp.get_context("spawn")
        pipes, procs = [], []
        for i in range(PROCS):
            a, c = ctx.Pipe()
            p = ctx.Process(target=_clients_main, args=(c, b.port, ids[i::PROCS]))
            p.start()
            pipes.append(a)
            procs.append(p)
        try:
            subscribed = 0
            for a in pipes:
                if not a.poll(CAP + 30):
                    raise RuntimeError("a client process did not report")
                subscribed += a.recv()[1]
            time.sleep(1.0)  # (the broker notices every socket gone)
            asyncio.run(_queue_messages(b.port, ids))
            for a in pipes:
                a.send("storm")
            back = []
            for a in pipes:
                if not a.poll(CAP + 30):
                    raise RuntimeError("a client process did not report")
                back.append(a.recv()[1])
        finally:
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
    t0 = min(r["t0_ns"] for r in back)
    return {"broker": name, "clients": n, "subscribed": subscribed,
            "reconnected": sum(r["connacks"] for r in back),
            "session_present": sum(r["present"] for r in back),
            "delivered": sum(r["delivered"] for r in back),
            "wrong": sum(r["wrong"] for r in back),
            "errors": sorted({e for r in back for e in r["errors"]})[:5],
            "all_connacks_s": round((max(r["last_connack_ns"] for r in back) - t0) / 1e9, 2),
            "all_delivered_s": round((max(r["last_message_ns"] for r in back) - t0) / 1e9, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.storm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", "-n", type=int, default=10_000)
    p.add_argument("--brokers", default="ours,mosquitto")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--ours-source", default=None,
                   help="run ours from this folder's mqttbroker (e.g. compiled/, `make compiled`)")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.brokers.split(",") if s.strip()]
    runs = []
    for rnd in range(args.rounds):
        for name in names[rnd % len(names):] + names[:rnd % len(names)]:
            res = one_run(name, args.clients, args.ours_source)
            res["round"] = rnd + 1
            runs.append(res)
            print(f"round {rnd + 1} {name}: {res['reconnected']:,}/{args.clients:,} back "
                  f"(Session Present {res['session_present']:,}) in {res['all_connacks_s']} s, "
                  f"{res['delivered']:,} queued messages delivered by {res['all_delivered_s']} s,"
                  f" {res['wrong']} wrong" + (f"; errors {res['errors']}" if res["errors"]
                                               else ""), flush=True)
    ok = all(r["reconnected"] == r["clients"] == r["session_present"] == r["delivered"]
             and not r["wrong"] for r in runs)
    out = {"clients": args.clients, "rounds": args.rounds, "runs": runs, "ok": ok,
           "versions": brokers.versions(args.ours_source), "machine": machine()}
    path = Path(args.out) / "storm.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"Wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
