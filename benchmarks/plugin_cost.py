"""What a plugin costs on fan-in QoS 1: no plugin, one no-op native plugin, one amqtt plugin.

    python -m benchmarks.plugin_cost [--rounds 5] [--count 100000] [--out benchmarks/results]

Each round starts a fresh broker per variant (the order rotates each round) and runs the same
fan-in QoS 1 load (8 publishers -> 1 subscriber on ``bench/in/+``). The no-op plugin overrides
``authorize`` (answers None) and ``on_message`` (returns the message): both hooks on the
per-message path, doing nothing. The amqtt plugin is amqtt's own ``TopicTabooPlugin`` (a
topic plugin: asked about publish and receive, through the adapter). Figures are ratios to
"none" measured in the same round (this machine is shared and noisy): throughput (msg/s) and
the broker's CPU per delivered message. Writes ``plugin_cost.json`` and ``plugin_cost.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from mqttbroker.plugins import Action, Client, Message, Plugin

ROOT = Path(__file__).resolve().parent.parent


class NoOp(Plugin):
    """A plugin on the per-message path that decides nothing and changes nothing."""

    def authorize(self, client: Client, action: Action, topic: str) -> None:
        return None

    def on_message(self, client: Client | None, message: Message) -> Message:
        return message


VARIANTS: dict[str, str] = {
    "none": "",
    "noop": "plugins:\n  benchmarks.plugin_cost.NoOp:\n",
    "amqtt": "plugins:\n  amqtt.plugins.topic_checking.TopicTabooPlugin:\n",
}


def _config(workdir: Path, variant: str) -> Path:
    path = workdir / f"{variant}.yaml"
    path.write_text("listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:0\n"
                    + VARIANTS[variant], encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    from . import brokers, loadgen

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    # the broker processes import the no-op plugin from this checkout
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    names = list(VARIANTS)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="plugin-cost-") as tmp:
        configs = {v: _config(Path(tmp), v) for v in names}
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for variant in order:
                with brokers.running("ours", config=configs[variant],
                                     persistence="memory") as b:
                    res = loadgen.fan_in(loadgen.Probe(b.port, b.pid), 1, count=args.count)
                runs.append({"round": r + 1, "variant": variant, "msg_s": res["value"],
                             "broker_us_per_msg": res["broker_cpu_us_per_msg"],
                             "loss": res["loss"], "dups": res["dups"]})
                print(f"round {r + 1}/{args.rounds} {variant:5s} {res['value']:>9,.0f} msg/s "
                      f"{res['broker_cpu_us_per_msg']} us/msg loss {res['loss']}",
                      file=sys.stderr, flush=True)
    table = _summary(runs, names, args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "plugin_cost.json").write_text(json.dumps(runs, indent=1), encoding="utf-8")
    (args.out / "plugin_cost.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


def _summary(runs: list[dict[str, Any]], names: list[str], rounds: int) -> str:
    by = {(x["round"], x["variant"]): x for x in runs}
    header = ("| variant | msg/s (median) | throughput vs none | broker CPU/msg vs none "
              "| loss | dups |")
    lines = [header, "|---|---:|---:|---:|---:|---:|"]
    for v in names:
        rate = statistics.median(by[r, v]["msg_s"] for r in range(1, rounds + 1))
        thr = statistics.median(by[r, v]["msg_s"] / by[r, "none"]["msg_s"]
                                for r in range(1, rounds + 1))
        cpu = statistics.median(by[r, v]["broker_us_per_msg"] / by[r, "none"]["broker_us_per_msg"]
                                for r in range(1, rounds + 1))
        loss = sum(by[r, v]["loss"] for r in range(1, rounds + 1))
        dups = sum(by[r, v]["dups"] for r in range(1, rounds + 1))
        lines.append(f"| {v} | {rate:,.0f} | {thr:.2f}x | {cpu:.2f}x | {loss} | {dups} |")
    return ("Fan-in QoS 1, 8 publishers -> 1 subscriber, ratios to no plugin in the same round "
            f"(median of {rounds} rounds):\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
