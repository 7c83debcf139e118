"""``devices run``: drive an MQTT broker with a simulated fleet and report what was lost."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from .fleet import parse_broker, run_fleet
from .profile import load_profile
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
def run(broker: str, count: int, duration: float, profile: str, report_path: str | None,
        plot_path: str | None, processes: int | None, seed: int, quiet: bool) -> None:
    """Run COUNT devices for DURATION seconds and verify every message."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        parse_broker(broker)
        prof = load_profile(profile)
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"fleet: {count} devices, profile {prof.name}, {duration:g} s, broker {broker}, "
               f"seed {seed} (simulated start {clock(start_hour(seed, prof.start_hour))})",
               err=True)
    try:
        report, series = run_fleet(broker, count, duration, prof, processes=processes,
                                   seed=seed, progress=not quiet)
    except (OSError, RuntimeError) as exc:
        click.echo(f"devices: error: {exc}", err=True)
        sys.exit(1)
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


def main() -> None:
    """Console entry point."""
    cli()


if __name__ == "__main__":
    main()
