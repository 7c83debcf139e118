"""Start and stop a fresh broker per run: ours, Mosquitto or amqtt, on a free 127.0.0.1 port.

Each broker runs as its own process with a config written to a temporary directory, logs to a
file there (shown if it fails to start), its open-file soft limit raised to the hard limit
(none of the three raises its own: the runner raises its own limit and the broker inherits
it), and is ready once its port accepts a connection. The
process's PID is the broker itself (no shell in between), so /proc/PID gives its RSS and CPU.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
BROKERS = ("ours", "mosquitto", "amqtt")
LABELS = {"ours": "mqttbroker", "mosquitto": "Mosquitto", "amqtt": "amqtt",
          "null": "null relay"}

# The same limits for ours and Mosquitto (amqtt has neither setting).
MAX_INFLIGHT = 20            # both brokers' default; 0 = unbounded (see command())
MAX_QUEUED = 1_000_000       # large enough that no scenario fills a queue
OURS_MAX_INFLIGHT = 65535    # our broker's largest window (packet ids are 16-bit)


class BrokerError(RuntimeError):
    """A broker did not start, or is missing."""


@dataclass
class BrokerProcess:
    """A running broker: name, port, PID, and where its config and log live."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path
    log: Path
    nofile: tuple[int, int] = field(default=(0, 0))
    config: OursConfig | None = None  # ours started from a config file (see ours_config)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (SIGKILL after ``timeout``); returns the exit status."""
        return terminate(self.proc, timeout)


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
    """SIGTERM a process, SIGKILL it after ``timeout`` seconds; its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile(nofile: int | None = None) -> tuple[int, int]:
    """Raise this process's open-file soft limit to its hard limit (as root, both to
    ``nofile`` when that is higher), so the brokers it starts inherit it; return the limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if nofile is not None and nofile > hard and os.geteuid() == 0:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
            return nofile, nofile
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard, hard


# Config keys naming files that must exist (relative names are relative to the config's folder,
# so a copied config gets them made absolute).
_FILE_KEYS = frozenset({"certfile", "keyfile", "cafile", "password_file", "acl_file"})


@dataclass(frozen=True)
class OursConfig:
    """Our broker's config as written into a run's temporary folder (see :func:`ours_config`).

    ``source``: the file it came from; ``path``: the copy the broker reads; ``backend`` and
    ``db_path``: its persistence (``db_path`` is inside the temporary folder, or None for the
    memory backend)."""

    source: Path
    path: Path
    backend: str
    db_path: Path | None
    sync: str | None


def _norm(key: object) -> str:
    return str(key).replace("-", "_")


def _put(section: dict[str, Any], key: str, value: Any) -> None:
    """``section[key] = value``, replacing the same key spelt with hyphens."""
    for k in [k for k in section if _norm(k) == _norm(key)]:
        del section[k]
    section[key] = value


def _get(section: dict[str, Any], key: str) -> Any:
    for k, v in section.items():
        if _norm(k) == _norm(key):
            return v
    return None


def _absolute_files(node: Any, base: Path) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if _norm(k) in _FILE_KEYS and isinstance(v, str):
                path = Path(v).expanduser()
                node[k] = str(path if path.is_absolute() else base / path)
            else:
                _absolute_files(v, base)


def ours_config(source: str | os.PathLike[str], workdir: Path, *, port: int | None = None,
                bench_limits: bool = False, persistence: str = "keep",
                max_queued: int = MAX_QUEUED, max_inflight: int = MAX_INFLIGHT) -> OursConfig:
    """Copy our broker's config file ``source`` into ``workdir`` so that a run touches nothing
    outside it: the persistence database is moved into ``workdir`` (same file name), and
    relative certificate/password/ACL file names are made absolute.

    ``persistence``: "keep" (the file's own backend, database in ``workdir``) or "memory"
    (the section removed: nothing stored). ``bench_limits``: the settings every benchmark
    run of ours uses (one listener on 127.0.0.1:``port``, no $SYS, anonymous, WARNING log,
    the in-flight window and queue limit shared with Mosquitto), so two runs that differ
    only in persistence compare."""
    source = Path(source)
    raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise BrokerError(f"{source}: not a mapping")
    _absolute_files(raw, source.resolve().parent)
    # runs measure MQTT over TCP: no HTTP listener (nor its token file), no WebSocket
    # listener on a fixed port that two runs (or a `make run`) would fight over
    for k in [k for k in raw if _norm(k) == "http"]:
        del raw[k]
    listeners = _get(raw, "listeners")
    if isinstance(listeners, dict):
        _put(raw, "listeners", {name: lc for name, lc in listeners.items()
                                if not (isinstance(lc, dict) and _get(lc, "type") == "ws")})
    if bench_limits:
        inflight = max_inflight or OURS_MAX_INFLIGHT
        _put(raw, "listeners", {"default": {"type": "tcp", "bind": f"127.0.0.1:{port or 0}"}})
        _put(raw, "sys_interval", 0)
        _put(raw, "log_level", "WARNING")
        auth = _get(raw, "auth")
        auth = dict(auth) if isinstance(auth, dict) else {}
        _put(auth, "allow_anonymous", True)
        _put(raw, "auth", auth)
        mqtt = _get(raw, "mqtt")
        mqtt = dict(mqtt) if isinstance(mqtt, dict) else {}
        _put(mqtt, "max_inflight_messages", inflight)
        _put(mqtt, "max_queued_messages", max_queued)
        # load generators open thousands of connections from a few addresses at once; Mosquitto
        # has no per-address rate limit either
        _put(mqtt, "max_connection_rate_per_address", 0)
        _put(raw, "mqtt", mqtt)
    section = _get(raw, "persistence")
    backend, db_path, sync = "memory", None, None
    if persistence == "memory" or not isinstance(section, dict):
        for k in [k for k in raw if _norm(k) == "persistence"]:
            del raw[k]
    elif persistence == "keep":
        section = dict(section)
        backend = str(_get(section, "backend") or "memory")
        sync = str(_get(section, "sync") or "commit")
        if backend != "memory":
            name = Path(str(_get(section, "path") or "mqttbroker.db")).name
            db_path = workdir / name
            _put(section, "path", str(db_path))
        _put(raw, "persistence", section)
    else:
        raise BrokerError(f"persistence must be 'keep' or 'memory', not {persistence!r}")
    path = workdir / "mqttbroker.yaml"
    path.write_text(f"# copied from {source} for a benchmark run\n"
                    + yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return OursConfig(source, path, backend, db_path, sync if backend != "memory" else None)


def command(name: str, port: int, workdir: Path, *, max_queued: int = MAX_QUEUED,
            max_inflight: int = MAX_INFLIGHT, config: OursConfig | None = None,
            mosquitto_user: str | None = None) -> list[str]:
    """Write the broker's config into ``workdir``; return the command line that runs it.

    ``max_inflight`` 0 means unbounded: Mosquitto's own 0, our broker's maximum (65535).
    ``config`` (ours only): run from that prepared config file (see :func:`ours_config`)
    instead, on 127.0.0.1:``port``."""
    if config is not None:
        if name != "ours":
            raise BrokerError(f"a config file applies to ours only, not {name!r}")
        return [str(VENV_BIN / "python"), "-m", "mqttbroker", "serve", "-c", str(config.path),
                "--host", "127.0.0.1", "--port", str(port)]
    if name == "ours":
        inflight = max_inflight or OURS_MAX_INFLIGHT
        conf = workdir / "mqttbroker.yaml"
        conf.write_text(
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: 127.0.0.1:{port}\n"
            "sys_interval: 0\n"
            "auth:\n"
            "  allow-anonymous: true\n"
            "mqtt:\n"
            f"  max_inflight_messages: {inflight}\n"
            f"  max_queued_messages: {max_queued}\n"
            "  max_connection_rate_per_address: 0\n"  # (load from a few addresses)
            "log_level: WARNING\n")
        return [str(VENV_BIN / "python"), "-m", "mqttbroker", "serve", "-c", str(conf),
                "--port", str(port)]
    if name == "mosquitto":
        if not Path(MOSQUITTO).exists():
            raise BrokerError(f"{MOSQUITTO} missing: `make peers` installs Debian's mosquitto")
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"max_inflight_messages {max_inflight}\n"
            f"max_queued_messages {max_queued}\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
            # (started as root it changes to this user, "mosquitto" unless given)
            + (f"user {mosquitto_user}\n" if mosquitto_user else ""))
        return [MOSQUITTO, "-c", str(conf)]
    if name == "amqtt":
        exe = VENV_BIN / "amqtt"
        if not exe.exists():
            raise BrokerError(f"{exe} missing: `pip install amqtt` (the test extra has it)")
        conf = workdir / "amqtt.yaml"
        # Only the anonymous-auth plugin: no $SYS, no event/packet logging plugins (the
        # defaults load all four when `plugins` is absent).
        conf.write_text(
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: 127.0.0.1:{port}\n"
            "plugins:\n"
            "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n")
        return [str(exe), "-c", str(conf)]
    if name == "null":  # benchmarks/nullbroker.py: calibration only, not an MQTT broker
        return [str(VENV_BIN / "python"), str(Path(__file__).parent / "nullbroker.py"),
                str(port)]
    raise BrokerError(f"unknown broker {name!r} (one of {', '.join(BROKERS)})")


def accepts(port: int) -> bool:
    """Something listens on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def start(name: str, *, timeout: float = 20.0, nofile: int | None = None,
          max_queued: int = MAX_QUEUED, max_inflight: int = MAX_INFLIGHT,
          config: str | os.PathLike[str] | None = None, bench_limits: bool = True,
          persistence: str = "keep",
          source: str | os.PathLike[str] | None = None, wrap: Sequence[str] = (),
          mosquitto_user: str | None = None) -> BrokerProcess:
    """Start a fresh broker ``name`` on a free port and wait until that port accepts.

    ``config`` (ours only): start from a copy of that config file (see :func:`ours_config`
    for ``bench_limits`` and ``persistence``; its database lives in the temporary folder).
    ``source`` (ours only): a folder holding an ``mqttbroker`` package (e.g. another revision's
    tree, see benchmarks/ab.py), run instead of the installed one: it goes first on the
    broker's PYTHONPATH; same interpreter and venv. ``wrap``: a command line the broker's is
    appended to (a profiler, valgrind), run in the broker's folder. ``mosquitto_user``: see
    :func:`command`."""
    raise_nofile(nofile)
    if source is not None and name != "ours":
        raise BrokerError(f"a source folder applies to ours only, not {name!r}")
    env = source_env(source)
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    last: BrokerError | None = None
    for _ in range(3):  # the free port may be taken between probing and binding
        port = free_port()
        prepared = None
        if config is not None:
            prepared = ours_config(config, workdir, port=port, bench_limits=bench_limits,
                                   persistence=persistence, max_queued=max_queued,
                                   max_inflight=max_inflight)
        argv = [*wrap, *command(name, port, workdir, max_queued=max_queued,
                                max_inflight=max_inflight, config=prepared,
                                mosquitto_user=mosquitto_user)]
        log = workdir / "broker.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=workdir, env=env)
        bp = BrokerProcess(name, port, proc, workdir, log, config=prepared)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if accepts(port):
                bp.nofile = _nofile_of(proc.pid)
                return bp
            time.sleep(0.05)
        bp.stop(2)
        last = BrokerError(f"{name} did not accept on 127.0.0.1:{port} within {timeout:.0f} s"
                           f" (exit {proc.returncode}); log:\n{bp.log_tail()}")
    shutil.rmtree(workdir, ignore_errors=True)
    assert last is not None
    raise last


def _nofile_of(pid: int) -> tuple[int, int]:
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                parts = line.split()
                return int(parts[3]), int(parts[4])
    except (OSError, ValueError, IndexError):
        pass
    return (0, 0)


@contextlib.contextmanager
def running(name: str, *, timeout: float = 20.0, nofile: int | None = None,
            max_queued: int = MAX_QUEUED, max_inflight: int = MAX_INFLIGHT,
            config: str | os.PathLike[str] | None = None, bench_limits: bool = True,
            persistence: str = "keep",
            source: str | os.PathLike[str] | None = None, wrap: Sequence[str] = (),
            mosquitto_user: str | None = None) -> Iterator[BrokerProcess]:
    """``with running("ours") as b: ... b.port, b.pid``: started fresh, stopped and cleaned
    up afterwards."""
    bp = start(name, timeout=timeout, nofile=nofile, max_queued=max_queued,
               max_inflight=max_inflight, config=config, bench_limits=bench_limits,
               persistence=persistence, source=source, wrap=wrap,
               mosquitto_user=mosquitto_user)
    try:
        yield bp
    finally:
        bp.stop()
        shutil.rmtree(bp.workdir, ignore_errors=True)


def source_env(source: str | os.PathLike[str] | None) -> dict[str, str] | None:
    """The environment that runs ours from the ``mqttbroker`` package in ``source`` (first on
    PYTHONPATH), or None for the installed one."""
    if source is None:
        return None
    paths = [str(Path(source).resolve()), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def compiled_modules(source: str | os.PathLike[str] | None) -> int:
    """How many of ours' modules a broker run from ``source`` imports as compiled extensions
    (mypyc's .so files: `make compiled`); 0 for the pure-Python package."""
    probe = ("import importlib, pathlib, mqttbroker; root = pathlib.Path(mqttbroker.__file__)"
             ".parent; print(sum(1 for so in root.rglob('*.so') if importlib.import_module("
             "'mqttbroker.' + '.'.join(so.relative_to(root).with_suffix('').with_suffix('')"
             ".parts)).__file__.endswith('.so')))")
    # (from "/", as a broker runs from its temporary folder: not from the checkout, whose
    # own mqttbroker would come first on sys.path)
    res = subprocess.run([str(VENV_BIN / "python"), "-c", probe], capture_output=True,
                         text=True, timeout=60, check=False, env=source_env(source), cwd="/")
    if res.returncode != 0:
        raise BrokerError(f"cannot import mqttbroker from {source}: {res.stderr.strip()}")
    return int(res.stdout.strip() or 0)


def versions(ours_source: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Each broker's version string, for the results file; ours says when it runs compiled
    (``ours_source``: the folder it runs from, see :func:`start`)."""
    out: dict[str, str] = {}
    for name, argv in (("ours", [str(VENV_BIN / "python"), "-m", "mqttbroker", "--version"]),
                       ("mosquitto", [MOSQUITTO, "-h"]),
                       ("amqtt", [str(VENV_BIN / "amqtt"), "--version"])):
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False,
                                 env=source_env(ours_source) if name == "ours" else None,
                                 cwd="/")
            text = (res.stdout or res.stderr).strip().splitlines()
            # "mqttbroker 0.1.0", "mosquitto version 2.0.11", "0.12.1": keep the number
            out[name] = text[0].split()[-1] if text else "?"
        except (OSError, subprocess.TimeoutExpired):
            out[name] = "missing"
    n = compiled_modules(ours_source)
    out["ours"] += f" (mypyc: {n} modules compiled)" if n else " (pure Python)"
    return out


if __name__ == "__main__":  # python -m benchmarks.brokers NAME: start one, print, stop on ^C
    b = start(sys.argv[1] if len(sys.argv) > 1 else "ours")
    print(f"{b.name} pid {b.pid} on 127.0.0.1:{b.port}, nofile {b.nofile}; ^C stops it")
    try:
        b.proc.wait()
    except KeyboardInterrupt:
        print(f"exit {b.stop()}")
