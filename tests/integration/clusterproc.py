"""Real processes for the cluster tests (docs/cluster.md): a Redis server and broker nodes.

* :class:`RedisProc`: ``/usr/bin/redis-server`` on a free 127.0.0.1 port, nothing saved, its
  files in a temporary folder and its output in ``redis.log`` there. :meth:`RedisProc.start`
  waits (bounded) until it answers PING; :meth:`RedisProc.stop` (SIGTERM, or ``SHUTDOWN SAVE``
  with ``save=True`` so a later start on the SAME port finds its data again, as a Redis with
  persistence would), :meth:`RedisProc.kill` (SIGKILL) and :meth:`RedisProc.start` again make
  an outage. ``.url`` is ``redis://127.0.0.1:PORT/0``; :meth:`RedisProc.client` a ``redis``
  client (decoded strings) for looking at the cluster's keys.
* :class:`NodeProc`: one node (a :class:`~tests.integration.brokerproc.BrokerProc` whose
  config has a ``cluster`` section instead of ``persistence``): one TCP listener on a free
  port, ``$SYS`` off, anonymous clients, no per-address connection rate limit, optionally the
  HTTP listener (``/metrics``) on a free port and ``mqttbroker serve --workers N``. It runs in
  a process group of its own, so :meth:`NodeProc.kill` (SIGKILL) also takes the workers of
  ``--workers`` down.
* :func:`redis_procs` / :func:`node_procs`: context managers that stop every Redis and node
  they made when the block ends; the fixtures ``redis_server`` and ``cluster_nodes`` are built
  on them (tests/integration/test_cluster.py).
* :func:`metrics`: ``/metrics`` of a node as ``{name: value}`` (samples without labels).

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
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import yaml

from .brokerproc import HOST, ROOT, START_TIMEOUT, BrokerProc, free_port, port_open

REDIS_SERVER = "/usr/bin/redis-server"
PREFIX = "mqttbroker"  # the cluster's default Redis key prefix

__all__ = [
    "HOST",
    "PREFIX",
    "REDIS_SERVER",
    "NodeProc",
    "RedisProc",
    "metrics",
    "node_procs",
    "redis_procs",
]


# -- Redis --------------------------------------------------------------------------------------

class RedisProc:
    """One ``redis-server`` (restartable on the same port) with its files in ``folder``."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log_path = folder / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kw: Any) -> Any:
        """A ``redis.Redis`` for this server (strings decoded unless told, short timeouts)."""
        import redis

        kw.setdefault("socket_timeout", 5)
        kw.setdefault("socket_connect_timeout", 5)
        kw.setdefault("decode_responses", True)
        return redis.Redis(host=HOST, port=self.port, db=0, **kw)

    def ping(self) -> bool:
        """Does it answer PING (+PONG)? A plain socket: redis-py would retry for seconds."""
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 10.0) -> RedisProc:
        """Start (again, on the same port and folder) and wait until it answers PING."""
        assert not self.running, "redis is already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind", HOST, "--save", "",
                 "--appendonly", "no", "--dir", str(self.folder), "--daemonize", "no"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"redis-server exited with code {self.proc.returncode} while starting "
                    f"(port {self.port}):\n{self.log_tail()}")
            if port_open(self.port) and self.ping():
                return self
            if time.monotonic() >= deadline:
                self.kill()
                raise AssertionError(f"redis-server did not answer PING on port {self.port} "
                                     f"within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self, *, save: bool = False, timeout: float = 10.0) -> None:
        """Stop it: SIGTERM (nothing saved: a restart comes back empty) or, with ``save``,
        ``SHUTDOWN SAVE`` (a snapshot in the folder: a restart loads it, as a Redis run with
        persistence would come back)."""
        if not self.running:
            return
        assert self.proc is not None
        if save:
            # a plain socket: redis-py retries (seconds) when the server closes the connection
            with socket.create_connection((HOST, self.port), timeout=5) as sock:
                sock.sendall(b"*2\r\n$8\r\nSHUTDOWN\r\n$4\r\nSAVE\r\n")
                with contextlib.suppress(OSError):
                    sock.recv(1024)  # EOF once it is saved and going (or an error line)
        else:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"redis-server did not stop within {timeout}s") from None
        if not save:  # an earlier snapshot would come back: a plain stop forgets everything
            with contextlib.suppress(FileNotFoundError):
                (self.folder / "dump.rdb").unlink()

    def kill(self) -> None:
        """SIGKILL; waits until the process is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            text = []
        return "\n".join(["--- redis log (end) ---", *text[-lines:], "---"])

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RedisProc port {self.port} {'running' if self.running else 'stopped'}>"


@contextlib.contextmanager
def redis_procs(folder: Path) -> Iterator[Callable[..., RedisProc]]:
    """``make(name="redis", port=None)`` makes and starts a Redis in ``folder/name``; every
    one made is killed when the block ends."""
    made: list[RedisProc] = []

    def make(name: str = "redis", port: int | None = None) -> RedisProc:
        r = RedisProc(folder / name, port)
        made.append(r)
        return r.start()

    try:
        yield make
    finally:
        for r in made:
            r.close()


# -- broker nodes -------------------------------------------------------------------------------

class NodeProc(BrokerProc):
    """One cluster node: ``python -m mqttbroker serve -c FILE [--workers N]``.

    ``cluster`` adds keys to the ``cluster`` section (``heartbeat``, ``node_timeout``,
    ``takeover_timeout``, ``prefix``); ``mqtt`` is the ``mqtt`` section (merged over
    ``max_connection_rate_per_address: 0``); ``http`` enables the HTTP listener on a free port
    (``.http_port``) for ``/metrics``; ``workers`` runs that many worker processes on the same
    port (each a node ``<node>-w<i>``); ``extra`` adds top-level config sections.
    """

    def __init__(self, folder: Path, redis_url: str, node: str, *,
                 cluster: dict[str, Any] | None = None, mqtt: dict[str, Any] | None = None,
                 http: bool = False, workers: int | None = None, port: int | None = None,
                 log_level: str = "INFO", extra: dict[str, Any] | None = None,
                 with_cluster: bool = True) -> None:
        # BrokerProc always writes a persistence section: the config is written again below
        super().__init__(folder, persist={}, port=port, log_level=log_level)
        self.node = node
        self.redis_url = redis_url
        self.prefix = str((cluster or {}).get("prefix", PREFIX))
        #: wait_ready also waits for the liveness key(s) in Redis (a node in the cluster)
        self.joined_check = with_cluster
        self.workers = workers
        self.http_port: int | None = free_port() if http else None
        self.log_path = folder / "node.log"
        self.config_path = folder / "node.yaml"
        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{self.port}"}},
            "sys_interval": 0,
            "auth": {"allow-anonymous": True},
            "mqtt": {"max_connection_rate_per_address": 0, **(mqtt or {})},
            "log_level": log_level,
        }
        if with_cluster:
            config["cluster"] = {"redis": redis_url, "node": node, **(cluster or {})}
        if self.http_port is not None:
            config["http"] = {"enabled": True, "bind": f"{HOST}:{self.http_port}"}
        config.update(extra or {})
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        with contextlib.suppress(FileNotFoundError):
            (folder / "broker.yaml").unlink()

    @property
    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "mqttbroker", "serve", "-c", str(self.config_path)]
        if self.workers is not None:
            cmd += ["--workers", str(self.workers)]
        return cmd

    def spawn(self) -> NodeProc:
        """Start the process (its own process group) without waiting for it."""
        assert not self.running, "the node is already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            log.flush()
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            self.proc = subprocess.Popen(self.command, cwd=ROOT, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> NodeProc:
        """Wait until the MQTT port (and the HTTP one, if any) accepts connections; fail with
        the end of the log if the process exits or does not listen in time."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"node {self.node} exited with code {self.proc.returncode} while starting "
                    f"(start {self.starts}, port {self.port}):\n{self.log_tail()}")
            if port_open(self.port) and (self.http_port is None or port_open(self.http_port)) \
                    and (not self.joined_check or self.joined()):
                return self
            if time.monotonic() >= deadline:
                self.kill()
                raise AssertionError(
                    f"node {self.node} did not accept connections on port {self.port} (and "
                    f"show its liveness key{'s' if self.workers else ''} "
                    f"{self.liveness_pattern!r} in Redis) within {timeout}s "
                    f"(start {self.starts}):\n{self.log_tail()}")
            time.sleep(0.02)

    def start(self, timeout: float = START_TIMEOUT) -> NodeProc:
        return self.spawn().wait_ready(timeout)

    @property
    def liveness_pattern(self) -> str:
        """The liveness key(s) of this node: ``P:node:{node}``, ``P:node:{node}-w*`` for
        ``--workers``."""
        return f"{self.prefix}:node:{self.node}" + ("-w*" if self.workers else "")

    def liveness_keys(self) -> list[str]:
        import redis

        c = redis.Redis.from_url(self.redis_url, decode_responses=True, socket_timeout=1,
                                 socket_connect_timeout=1)
        try:
            return sorted(str(k) for k in c.keys(self.liveness_pattern))
        except redis.RedisError:
            return []
        finally:
            c.close()

    def joined(self) -> bool:
        """Does Redis hold this node's liveness key (every worker's, with ``--workers``)?"""
        return len(self.liveness_keys()) == (self.workers or 1)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL to the node's process group (its workers too); waits for the process."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group is the process's own session
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout)

    def metrics(self, timeout: float = 5.0) -> dict[str, float]:
        assert self.http_port is not None, "started without http"
        return metrics(self.http_port, timeout)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_text().splitlines()
        return "\n".join([f"--- node {self.node} log (end) ---", *text[-lines:], "---"])

    def __repr__(self) -> str:
        state = f"pid {self.proc.pid}" if self.running and self.proc else "stopped"
        return f"<NodeProc {self.node} port {self.port} {state}>"


@contextlib.contextmanager
def node_procs(folder: Path) -> Iterator[Callable[..., NodeProc]]:
    """``make(redis_url, node, **NodeProc kwargs)`` makes (does not start) a node in
    ``folder/node``; every node made is killed (process group) when the block ends."""
    made: list[NodeProc] = []

    def make(redis_url: str, node: str, **kw: Any) -> NodeProc:
        n = NodeProc(folder / node, redis_url, node, **kw)
        made.append(n)
        return n

    try:
        yield make
    finally:
        for n in made:
            n.close()


# -- /metrics -----------------------------------------------------------------------------------

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy


def metrics(http_port: int, timeout: float = 5.0) -> dict[str, float]:
    """The samples without labels of ``GET /metrics`` (Prometheus text) as name -> value."""
    with _opener.open(f"http://{HOST}:{http_port}/metrics", timeout=timeout) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or "{" in line:
            continue
        name, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value.split()[0])
    return out
