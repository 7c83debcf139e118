"""``devices run``: drive an MQTT broker with a simulated fleet and report what was lost."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Final

import click

from .link import LinkRelay, parse_loopback
from .profile import check_link_cuts, load_profile
from .report import clock, plot, summary_table, write_report
from .seeding import start_hour


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Simulated sensor fleet for MQTT brokers."""


@cli.command()
@click.option("--broker", default="mqtt://127.0.0.1:1883", show_default=True,
              help="Broker URL, mqtt://HOST:PORT.")
@click.option("--devices", "count", type=click.IntRange(1, 100_000), default=100,
              show_default=True, help="Number of devices (one MQTT connection each).")
@click.option("--duration", type=click.FloatRange(1, 86_400), default=30, show_default=True,
              help="Seconds the devices report for.")
@click.option("--profile", default="steady", show_default=True,
              help="Profile name (configs/fleet-NAME.yaml) or a path to a profile file.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="Write the JSON report here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Write a PNG plot of msg/s and latency here (default: next to --report).")
@click.option("--processes", type=click.IntRange(1, 256),
              help="Worker processes (default: one per core).")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of everything the devices send; the report gives it, to replay a run.")
@click.option("--quiet", is_flag=True, help="No live progress line.")
@click.option("--verify-at", "verify_at", metavar="URL",
              help="Broker the verifier subscribes at (default: --broker). Edge gateway: the "
                   "cloud broker the edge bridges to.")
@click.option("--relay", "relay_at", metavar="HOST:PORT",
              help="Run the link relay here (127.0.0.x), forwarding to --verify-at; point the "
                   "edge's bridge at it. The profile's link_cuts cut it (edge-gateway).")
@click.option("--protocol", type=click.Choice(["mqtt", "mqttsn"]), default="mqtt",
              show_default=True,
              help="What the devices speak: MQTT over TCP to --broker, or MQTT-SN over UDP to "
                   "--mqttsn (sleeping sensors; the verifier stays on the MQTT side).")
@click.option("--mqttsn", "mqttsn_at", metavar="HOST:PORT",
              help="The broker's mqttsn listener (127.0.0.x), for MQTT-SN devices.")
@click.option("--mqttsn-share", type=click.FloatRange(0, 1),
              help="Fraction of the devices speaking MQTT-SN (a mixed fleet); default 1 with "
                   "--protocol mqttsn, else 0.")
@click.option("--check", is_flag=True,
              help="Exit with status 3 unless the verdict is OK (no QoS 1/2 message lost, "
                   "QoS 2 exactly once, every link cut happened).")
def run(broker: str, count: int, duration: float, profile: str, report_path: str | None,
        plot_path: str | None, processes: int | None, seed: int, quiet: bool,
        verify_at: str | None, relay_at: str | None, protocol: str, mqttsn_at: str | None,
        mqttsn_share: float | None, check: bool) -> None:
    """Run COUNT devices for DURATION seconds and verify every message."""
    from .fleet import parse_broker, run_fleet  # paho-mqtt: here, so main() can say it is missing

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        parse_broker(broker)
        prof = load_profile(profile)
        check_link_cuts(prof, duration)
        upstream = parse_broker(verify_at) if verify_at else None
        listen = parse_loopback(relay_at, "--relay") if relay_at else None
        gateway = parse_loopback(mqttsn_at, "--mqttsn") if mqttsn_at else None
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from None
    share = mqttsn_share if mqttsn_share is not None else (1.0 if protocol == "mqttsn" else 0.0)
    if share > 0 and gateway is None:
        raise click.UsageError("MQTT-SN devices need the gateway: give --mqttsn HOST:PORT (the "
                               "broker's mqttsn listener)")
    if gateway is not None and gateway[1] == 0:
        raise click.UsageError("--mqttsn: give the mqttsn listener's port, not 0")
    if share == 0:
        gateway = None
    if listen is not None and upstream is None:
        raise click.UsageError("--relay forwards to the cloud broker: give --verify-at too")
    if prof.link_cuts and listen is None:
        raise click.UsageError(
            f"profile {prof.name} cuts the link between the edge and the cloud broker: give "
            f"--relay HOST:PORT (the address the edge's bridge connects to) and --verify-at "
            f"URL (the cloud broker)")
    click.echo(f"fleet: {count} devices, profile {prof.name}, {duration:g} s, broker {broker}, "
               f"seed {seed} (simulated start {clock(start_hour(seed, prof.start_hour))})",
               err=True)
    if gateway is not None:
        click.echo(f"mqttsn: {share:.0%} of the devices sleep on MQTT-SN via "
                   f"{gateway[0]}:{gateway[1]}", err=True)
    relay = None
    try:
        if listen is not None and upstream is not None:
            try:
                relay = LinkRelay(upstream, listen)
            except ValueError as exc:
                raise click.UsageError(str(exc)) from None
            relay.start()
            cuts = ", ".join(f"{at:g} s for {length:g} s" for at, length in prof.link_cuts)
            click.echo(f"link: relay {relay.address} -> {upstream[0]}:{upstream[1]}, verifier "
                       f"at {verify_at}; cuts: {cuts or 'none'}", err=True)
        report, series = run_fleet(broker, count, duration, prof, processes=processes,
                                   seed=seed, progress=not quiet, verify_at=verify_at,
                                   relay=relay, mqttsn=gateway, mqttsn_share=share)
    except (OSError, RuntimeError) as exc:
        click.echo(f"devices: error: {exc}", err=True)
        sys.exit(1)
    finally:
        if relay is not None:
            relay.stop()
    click.echo(summary_table(report))
    if report_path:
        write_report(report, report_path)
        click.echo(f"report: {report_path}", err=True)
        if plot_path is None:
            plot_path = str(Path(report_path).with_suffix(".png"))
    if plot_path:
        plot(series, plot_path, title=f"{count} devices, profile {prof.name} - {broker}")
        click.echo(f"plot: {plot_path}", err=True)
    if not report_path:
        click.echo(json.dumps(report, sort_keys=True))
    if check and not report["verdict"]["ok"]:
        sys.exit(3)


# The devices extra (pyproject.toml): module -> its distribution. paho-mqtt drives the devices,
# matplotlib draws the plot (imported only then: without this check a run would fail at its end)
_EXTRA: Final = {"paho": "paho-mqtt", "matplotlib": "matplotlib"}


def main() -> None:
    """Console entry point; without the devices extra, one line naming how to install it."""
    missing = [dist for module, dist in _EXTRA.items() if importlib.util.find_spec(module) is None]
    if missing:
        which = "which is" if len(missing) == 1 else "which are"
        click.echo(f"devices: error: the device fleet needs {' and '.join(missing)}, {which} "
                   "not installed: pip install 'mqttbroker[devices]'", err=True)
        sys.exit(1)
    cli()


if __name__ == "__main__":
    main()
