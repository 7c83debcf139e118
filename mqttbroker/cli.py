"""Command line: ``mqttbroker serve``, ``check-config``, ``passwd`` and ``scram-credential``.

Exit codes: 0 success (and clean shutdown on SIGINT/SIGTERM), 1 a runtime failure such as a
port already in use (or an invalid file for ``check-config``), 2 an invalid config for ``serve``
(click also uses 2 for usage errors). Nothing imports this module; it is the process edge.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Final

import click

from . import __version__, logs
from .config import LOG_LEVELS, Config, load_config
from .config.model import LOG_FORMATS
from .errors import ConfigError, MQTTBrokerError
from .plugins.host import load_classes

log = logging.getLogger("mqttbroker")

_Report = Callable[[str], None]


def _print_config_error(exc: ConfigError, *, err: bool) -> None:
    for issue in exc.issues:
        click.echo(issue.format(exc.filename), err=err)


def _reporter(plain: bool) -> _Report:
    """How a failure found once logging is set up reaches stderr: the line written for a
    person (``mqttbroker: error: ...``, ``FILE:LINE: ...``) when the log is plain text, else
    an ERROR record, so that a machine reading json or journald lines meets one form only."""

    def report(line: str) -> None:
        if plain:
            click.echo(line, err=True)
        else:
            log.error("%s", line.removeprefix("mqttbroker: error: "))

    return report


def _report_config_error(exc: ConfigError, report: _Report) -> None:
    for issue in exc.issues:
        report(issue.format(exc.filename))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="mqttbroker",
                      message="%(prog)s %(version)s")
def cli() -> None:
    """An MQTT 3.1, 3.1.1 and 5.0 broker for fleets of small sensors and mobile devices."""


@cli.command()
@click.option("-c", "--config", "config_file", metavar="FILE",
              help="YAML config file (default: built-in defaults, 127.0.0.1:1883).")
@click.option("--host", help="Listen on this address (applies to every MQTT listener).")
@click.option("--port", type=click.IntRange(0, 65535),
              help="Listen on this port (the first listener's; 0 = every listener, the HTTP "
                   "one too, on any free port).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
              help="Override log_level from the config.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS, case_sensitive=False),
              help="Override log_format from the config: text (timestamp, level, logger, "
                   "message; journald's priority prefixes when stderr is the journal) or json "
                   "(one object per line). docs/operations.md.")
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Worker processes sharing the ports (SO_REUSEPORT), each a node of the "
                   "config's cluster (needs a cluster section).")
@click.option("--worker-index", type=int, default=None, hidden=True)
def serve(config_file: str | None, host: str | None, port: int | None,
          log_level: str | None, log_format: str | None, workers: int,
          worker_index: int | None) -> None:
    """Run the broker until SIGINT or SIGTERM (SIGHUP reloads certificates, passwords, ACLs)."""
    try:
        config = load_config(config_file).with_overrides(host, port, log_level, log_format)
        load_classes(config.plugins, config_file)  # FILE:LINE for a plugin that does not load
    except ConfigError as exc:  # (before logging: the config names the log format)
        _print_config_error(exc, err=True)
        sys.exit(2)
    # a worker (started by supervise() with the same arguments) writes the same form, tagged
    # with its index, to the stderr it inherits (and so detects the same journal)
    report = _reporter(logs.configure(config.log_level, config.log_format,
                                      worker=worker_index))
    if workers > 1 and worker_index is None:
        problem = _workers_problem(config)
        if problem:
            report(f"mqttbroker: error: --workers {workers}: {problem}")
            sys.exit(2)
        from .workers import supervise

        sys.exit(supervise(workers, sys.argv[1:]))
    if worker_index is not None:
        config = _worker_config(config, worker_index)
    if port and len(config.listeners) > 1:
        log.warning("--port %d applies to the first listener (%s); the others keep theirs",
                    port, config.listeners[0].name)
    log.info("mqttbroker %s starting (config: %s)", __version__,
             config_file or "built-in defaults")
    supervisor = _supervisor_pid() if worker_index is not None else None
    try:
        code = _run(_serve(config, report, reuse_port=worker_index is not None,
                           supervisor=supervisor))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        code = 130
    sys.exit(code)


def _supervisor_pid() -> int | None:
    """The PID of the ``serve --workers`` process that started this worker (None for a
    worker started some other way: nothing to watch)."""
    from .workers import SUPERVISOR_ENV

    value = os.environ.get(SUPERVISOR_ENV, "")
    return int(value) if value.isdigit() else None


def _workers_problem(config: Config) -> str | None:
    if config.cluster is None:
        return ("needs a cluster section: the workers share sessions, routes and retained "
                "messages through Redis (docs/cluster.md)")
    if any(lc.port == 0 for lc in config.listeners):
        return "every listener needs a fixed port (the workers share them)"
    return None


def _worker_config(config: Config, index: int) -> Config:
    """Worker ``index``'s config: node ``<node>-w<index>``; the HTTP listener on worker 0."""
    assert config.cluster is not None
    cluster = dataclasses.replace(config.cluster, node=f"{config.cluster.node}-w{index}")
    http = config.http if index == 0 else dataclasses.replace(config.http, enabled=False)
    return dataclasses.replace(config, cluster=cluster, http=http)


@cli.command("convert-mosquitto")
@click.argument("file", metavar="MOSQUITTO_CONF", type=click.Path(exists=True, dir_okay=False))
def convert_mosquitto(file: str) -> None:
    """Print MOSQUITTO_CONF as our YAML configuration; the lines it cannot carry over are
    named, with their numbers, in the opening comments."""
    import yaml

    from .config.mosquitto import convert

    with open(file, encoding="utf-8") as fh:
        config, notes = convert(fh.read())
    click.echo(f"# converted from {file} by mqttbroker convert-mosquitto")
    for note in notes:
        click.echo(f"# not carried over: {note}")
    click.echo(yaml.safe_dump(config, sort_keys=False, default_flow_style=False), nl=False)


@cli.command("check-config")
@click.argument("file", metavar="FILE")
def check_config(file: str) -> None:
    """Validate FILE; print every problem as FILE:LINE: key.path: problem."""
    from .transports.tls import build_context

    try:
        config = load_config(file)
        load_classes(config.plugins, file)  # each plugin imports and takes its options
        for lc in config.listeners:  # TLS files load, and each key fits its certificate
            if lc.ssl:
                try:
                    build_context(lc)
                except ConfigError as exc:
                    raise ConfigError(exc.issues, file) from None
    except ConfigError as exc:
        _print_config_error(exc, err=False)
        sys.exit(1)
    click.echo(f"{file}: OK")


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop when it is installed, else on the default asyncio loop."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)


async def _serve(config: Config, report: _Report, reuse_port: bool = False,
                 supervisor: int | None = None) -> int:
    """Start the broker, wait for SIGINT/SIGTERM (reloading on SIGHUP), shut down; return the
    exit code. A failure to start goes to ``report``. ``supervisor``: the PID of this
    worker's supervisor (``serve --workers``); once it is no longer this process's parent
    (it died without stopping us), shut down as on SIGTERM."""
    from .broker import Broker  # imported late: config errors are reported without it

    try:
        broker = Broker(config, reuse_port=reuse_port)
    except ConfigError as exc:  # the config is valid but asks for what the broker lacks
        _report_config_error(exc, report)
        return 2
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []
    started = False
    hangup_during_start = False

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    def reload() -> None:
        log.info("received SIGHUP, reloading certificates and password/ACL files")
        try:
            broker.reload()
        except Exception:  # reload logs its own failures; this is a backstop
            log.exception("reload failed; the broker keeps running")

    def on_hangup() -> None:
        # SIGHUP reloads (as Mosquitto does) and never stops the broker; one that comes
        # while the broker starts is done once it has started
        nonlocal hangup_during_start
        if started:
            reload()
        else:
            hangup_during_start = True

    # The handlers go in before the listeners open: a SIGTERM that comes as soon as the
    # broker listens (a supervisor, systemd, a test) still shuts it down in order (sessions
    # stored, clients told) instead of killing it mid-start.
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    if hasattr(signal, "SIGHUP"):  # not on Windows
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        await broker.start()
    except OSError as exc:
        await _quiet_shutdown(broker)
        report(f"mqttbroker: error: {_describe_os_error(exc, config)}")
        return 1
    except ConfigError as exc:
        await _quiet_shutdown(broker)
        _report_config_error(exc, report)
        return 2
    except MQTTBrokerError as exc:
        await _quiet_shutdown(broker)
        report(f"mqttbroker: error: {exc}")
        return 1
    started = True
    _tune_gc()
    if hangup_during_start:
        reload()
    watch: asyncio.TimerHandle | None = None

    def check_supervisor() -> None:
        nonlocal watch
        if os.getppid() == supervisor:
            watch = loop.call_later(SUPERVISOR_CHECK_S, check_supervisor)
            return
        log.warning("the supervisor (pid %d) is gone: shutting down", supervisor)
        stop.set()

    if supervisor is not None:
        check_supervisor()  # (gone already, before this worker got here: stops at once)
    try:
        await stop.wait()
        if received:  # (else the supervisor's absence, logged)
            log.info("received %s, shutting down", received[0])
    finally:
        if watch is not None:
            watch.cancel()
        for sig in signals:  # a second Ctrl-C now interrupts a stuck shutdown
            loop.remove_signal_handler(sig)
        await broker.shutdown()
    return 0


# Python's cyclic collector, tuned for a server process (the broker's objects are mostly
# acyclic: messages, packets and buffers are freed by reference counting): the first
# generation is collected after GC_YOUNG container allocations instead of 700. At the default
# QoS 1 traffic triggered a young collection every ~110 messages and a full one (every object
# of the process traversed) every ~12,000 (benchmarks.inproc, 50,000 messages: 448 young, 40
# middle, 4 full collections); docs/performance.md has the before/after figures.
GC_YOUNG: Final = 50_000
SUPERVISOR_CHECK_S: Final = 0.5  # how often a worker looks whether its supervisor is there


def _tune_gc() -> None:
    """Once the broker has started: what exists now (modules, config, listeners) is moved
    out of the collector's sight for good (``gc.freeze``: never traversed again, so a full
    collection costs what the clients made, not the whole process), and young collections
    come less often (:data:`GC_YOUNG`). The process edge's choice, not the library's: a
    ``Broker`` embedded in another program leaves that program's collector alone."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, middle, old)


async def _quiet_shutdown(broker: Any) -> None:
    """Release whatever a failed start opened; the start error is the one to report."""
    try:
        await broker.shutdown()
    except Exception:  # best effort after a failed start
        log.debug("shutdown after failed start raised", exc_info=True)


def _describe_os_error(exc: OSError, config: Config) -> str:
    """One line for a listener that cannot bind, naming the address when we can tell."""
    addresses = ", ".join(f"{lst.host}:{lst.port}" for lst in config.listeners)
    if config.http.enabled:
        addresses += f" (http {config.http.host}:{config.http.port})"
    if exc.errno == errno.EADDRINUSE:
        return (f"cannot listen on {addresses}: address already in use "
                f"(is another broker running? try --port)")
    if exc.errno == errno.EACCES:
        return f"cannot listen on {addresses}: permission denied (ports below 1024 need root)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {addresses}: address not available on this machine"
    return f"cannot start listeners ({addresses}): {exc.strerror or exc}"


@cli.command("scram-credential")
@click.argument("user")
@click.option("--password", help="The password (default: prompt twice without echo; a "
              "password on the command line can end up in shell history and ps).")
@click.option("--iterations", type=click.IntRange(4096, 10_000_000), default=4096,
              show_default=True, help="PBKDF2 iterations (RFC 7677: at least 4096).")
def scram_credential(user: str, password: str | None, iterations: int) -> None:
    """Print USER's SCRAM-SHA-256 credential as a line for ``auth: scram-users:``.

    The line holds a salted verifier (PostgreSQL's format), never the password.
    """
    import json
    import re

    from .enhanced_auth import make_scram_credential

    if not user:
        raise click.BadParameter("must not be empty", param_hint="USER")
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise click.BadParameter("must not be empty", param_hint="--password")
    credential = make_scram_credential(password, iterations=iterations)
    # A plain YAML key only when YAML cannot read it as anything but this string.
    plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", user) and user.lower() not in {
        "y", "n", "yes", "no", "on", "off", "true", "false", "null"}
    key = user if plain else json.dumps(user, ensure_ascii=False)
    click.echo(f'  {key}: "{credential}"')


@cli.command("passwd")
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False))
@click.argument("user")
@click.option("--password", help="The password (default: prompt twice without echo; a "
              "password on the command line can end up in shell history and ps).")
@click.option("-D", "--delete", is_flag=True, help="Remove USER from FILE.")
@click.option("--iterations", type=click.IntRange(1, 10_000_000), default=101,
              show_default=True, help="PBKDF2-SHA512 iterations (mosquitto_passwd 2.0 writes "
              "101; each is paid on the broker's event loop at every new login).")
def passwd(file: str, user: str, password: str | None, delete: bool, iterations: int) -> None:
    """Add USER to a password file, change its password, or --delete it.

    Writes Mosquitto's format (user:$7$<iterations>$<salt>$<hash>, PBKDF2-SHA512, what
    mosquitto_passwd 2.x writes), never the password; the file is created if missing and
    replaced atomically, with mode 0600. Other lines are kept as they are.
    """
    from .passwd import delete_user, set_password, user_problem

    try:
        if delete:
            if password is not None:
                raise click.UsageError("--delete takes no --password")
            if not delete_user(file, user):
                click.echo(f"mqttbroker: error: user {user!r} is not in {file}", err=True)
                sys.exit(1)
            click.echo(f"{file}: deleted {user}")
            return
        problem = user_problem(user)
        if problem:
            raise click.BadParameter(problem, param_hint="USER")
        if password is None:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        if not password:
            raise click.BadParameter("must not be empty", param_hint="--password")
        added = set_password(file, user, password, iterations)
    except ConfigError as exc:  # the file is there but is not a password file
        _print_config_error(exc, err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"mqttbroker: error: {file}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    click.echo(f"{file}: {'added' if added else 'changed the password of'} {user}")


def main() -> None:
    """Console-script entry point (``mqttbroker``) and ``python -m mqttbroker``."""
    cli(prog_name="mqttbroker")
