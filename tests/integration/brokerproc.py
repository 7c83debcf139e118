"""The broker as a real process, for tests that kill it: ``python -m mqttbroker serve -c FILE``.

* :func:`free_port`: a TCP port on 127.0.0.1 nobody listens on (bound, then closed).
* :class:`BrokerProc`: writes a YAML config (one listener on 127.0.0.1:<port>, ``$SYS`` off,
  anonymous clients, the ``persistence`` and ``mqtt`` sections given), starts the broker, waits
  until the port accepts connections, and stops it with SIGKILL (:meth:`BrokerProc.kill`, a
  crash) or SIGTERM (:meth:`BrokerProc.terminate`, a clean shutdown that must exit 0).
  :meth:`BrokerProc.start` again restarts it on the same port and database. Everything the
  broker prints goes to ``broker.log`` in its folder; :meth:`BrokerProc.log_tail` shows the end
  of it in failure messages.
* :func:`broker_procs`: a context manager that makes brokers and kills every one still running
  when it ends (use it in a fixture, so a failing test never leaves a broker behind).

Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]  # the repository (``python -m mqttbroker`` runs here)
START_TIMEOUT = 15.0  # the longest a broker may take to accept connections


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # (Linux's default)


_LOW_PORT = 20000
_HIGH_PORT = min(_ephemeral_low(), 32768)  # (exclusive)
_next_port = _LOW_PORT + (os.getpid() * 7919) % max(1, _HIGH_PORT - _LOW_PORT)
_issued: set[int] = set()


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on, below the ephemeral range: a broker restarted
    on it cannot find it taken. (With an ephemeral port, a client that keeps reconnecting to
    the dead broker may be given that very port as its own source port and connect to itself,
    a TCP simultaneous open, which holds the port: the restart then fails with "address
    already in use". Failed once on a clean clone.) Each port is handed out once per run."""
    global _next_port
    span = _HIGH_PORT - _LOW_PORT
    for _ in range(max(span, 0)):
        port = _next_port
        _next_port = _LOW_PORT + (port + 1 - _LOW_PORT) % span
        if port in _issued:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        _issued.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # (no room below: any)
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int, timeout: float = 0.2) -> bool:
    """Does something accept TCP connections on 127.0.0.1:port?"""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def persistence(path: Path | str, sync: str = "commit", fsync: bool = False,
                flush_interval: float | None = None) -> dict[str, Any]:
    """A ``persistence`` section: SQLite at ``path``."""
    section: dict[str, Any] = {"backend": "sqlite", "path": str(path), "sync": sync,
                               "fsync": fsync}
    if flush_interval is not None:
        section["flush_interval"] = flush_interval
    return section


class BrokerProc:
    """One broker process (restartable) with its config file, database and log in ``folder``.

    ``persist`` is the ``persistence`` section (default: SQLite ``db.sqlite`` in ``folder``,
    ``sync: commit``, ``fsync: false``); ``mqtt`` the ``mqtt`` section; ``extra`` any other
    top-level sections.
    """

    def __init__(self, folder: Path, *, persist: dict[str, Any] | None = None,
                 mqtt: dict[str, Any] | None = None, port: int | None = None,
                 log_level: str = "INFO", extra: dict[str, Any] | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.db_path = folder / "db.sqlite"
        self.persist = persist if persist is not None else persistence(self.db_path)
        self.port = port or free_port()
        self.config_path = folder / "broker.yaml"
        self.log_path = folder / "broker.log"
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{self.port}"}},
            "sys_interval": 0,
            "auth": {"allow-anonymous": True},
            "persistence": self.persist,
            "log_level": log_level,
        }
        if mqtt:
            config["mqtt"] = dict(mqtt)
        config.update(extra or {})  # more sections (``bridges``, ``http``)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.sigterm_seconds: float | None = None  # how long the last SIGTERM exit took

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self, timeout: float = START_TIMEOUT) -> BrokerProc:
        """Start the broker (again: same port, same database) and wait until it accepts
        connections. Fails with the end of its log if it exits or does not listen in time."""
        assert not self.running, "the broker is already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mqttbroker", "serve", "-c", str(self.config_path)],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the broker exited with code {self.proc.returncode} while starting "
                    f"(start {self.starts}, port {self.port}):\n{self.log_tail()}")
            if port_open(self.port):
                return self
            if time.monotonic() >= deadline:
                self.kill()
                raise AssertionError(
                    f"the broker did not accept connections on port {self.port} within "
                    f"{timeout}s (start {self.starts}):\n{self.log_tail()}")
            time.sleep(0.02)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL: the crash. Waits until the process is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.kill()
        self.proc.wait(timeout)

    def terminate(self, timeout: float = 5.0) -> int:
        """SIGTERM and wait at most ``timeout`` s for the process to exit; return its exit code.
        Fails (and kills it) if it is still running then."""
        assert self.proc is not None and self.proc.poll() is None, "the broker is not running"
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"the broker did not exit within {timeout}s of SIGTERM:\n{self.log_tail()}"
            ) from None
        self.sigterm_seconds = time.monotonic() - t0
        return code

    def restart(self, downtime: float = 0.0, *, kill: bool = False) -> BrokerProc:
        """Stop (SIGTERM, asserting exit code 0; or SIGKILL with ``kill``), stay down
        ``downtime`` seconds, start again."""
        if kill:
            self.kill()
        else:
            code = self.terminate()
            assert code == 0, f"exit code {code} after SIGTERM:\n{self.log_tail()}"
        if downtime:
            time.sleep(downtime)
        return self.start()

    def close(self) -> None:
        """Make sure the process is gone (SIGKILL if it still runs)."""
        with contextlib.suppress(Exception):
            self.kill()

    # -- diagnostics ----------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines the broker printed (for failure messages)."""
        text = self.log_text().splitlines()
        return "\n".join(["--- broker log (end) ---", *text[-lines:], "---"])

    def __repr__(self) -> str:
        state = f"pid {self.proc.pid}" if self.running and self.proc else "stopped"
        return f"<BrokerProc port {self.port} {state} db {self.db_path}>"


@contextlib.contextmanager
def broker_procs(folder: Path) -> Iterator[Callable[..., BrokerProc]]:
    """``make(name="broker", **BrokerProc kwargs)`` makes (does not start) a broker in
    ``folder/name``; every broker made is killed when the block ends."""
    made: list[BrokerProc] = []

    def make(name: str = "broker", **kw: Any) -> BrokerProc:
        b = BrokerProc(folder / name, **kw)
        made.append(b)
        return b

    try:
        yield make
    finally:
        for b in made:
            b.close()
