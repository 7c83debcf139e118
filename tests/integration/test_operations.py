"""Operations (docs/operations.md), each against real broker processes:

* ``mqttbroker serve --log-format json``: every line the broker writes to stderr, from start
  to SIGTERM, is one JSON object (a plugin's traceback included, in ``exc``); under
  ``--workers 2`` (``log_format: json`` from the config file) the supervisor's and both
  workers' lines too, each worker's tagged with its index.
* contrib/grafana/mqttbroker.json: every metric name a panel (or the instance variable)
  queries is one ``/metrics`` exposes -- from a broker with persistence, a bridge and an
  MQTT-SN listener, and from a cluster node (their families appear only with them) -- so the
  dashboard cannot drift from mqttbroker/web/prometheus.py.
* contrib/systemd/mqttbroker.service: the example config it reads passes ``check-config``;
  ``ExecStart`` started as written (the paths of its two folders moved to a temporary one,
  stderr a file that ``JOURNAL_STREAM`` names, as systemd's journal stream) serves, with
  journald's priority prefixes on its lines; ``ExecReload`` run as written reloads the password
  file (a user added after the start can then log in) and the broker keeps serving.

No systemd is needed: what the unit asks of the broker is checked, systemd itself is not.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mqttbroker.passwd import set_password
from mqttbroker.protocol.constants import ReasonCode
from mqttbroker.protocol.packets import Disconnect

from .brokerproc import HOST, ROOT, START_TIMEOUT, free_port, port_open
from .clusterproc import RedisProc
from .helpers import Paho, RawClient, unique_id, wait_until

pytestmark = pytest.mark.timeout(60)

CONTRIB = ROOT / "contrib"
UNIT = CONTRIB / "systemd" / "mqttbroker.service"
EXAMPLE = CONTRIB / "systemd" / "mqttbroker.yaml"
DASHBOARD = CONTRIB / "grafana" / "mqttbroker.json"
ENTRY_POINT = Path(sys.executable).parent / "mqttbroker"  # the installed console script
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy


@dataclass
class Run:
    """What a broker process left: its stderr lines, /metrics' sample names, its exit code."""

    lines: list[str]
    metric_names: set[str]
    code: int


class Serve:
    """``argv`` as a process (its own session: SIGKILL at the end takes workers too), stderr
    (and stdout) to ``log``, ``env`` over the test's environment without JOURNAL_STREAM."""

    def __init__(self, argv: list[str], log: Path, *, env: dict[str, str] | None = None,
                 journal: bool = False) -> None:
        self.log = log
        environ = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        environ.update(env or {}, PYTHONUNBUFFERED="1")
        with log.open("wb") as out:
            if journal:  # what systemd does for StandardError=journal: name the stream
                st = os.fstat(out.fileno())
                environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=environ,
                                         start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def lines(self) -> list[str]:
        return self.text().splitlines()

    def wait_listening(self, *ports: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not all(port_open(p) for p in ports):
            assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"not listening on {ports}:\n{self.text()}"
            time.sleep(0.02)

    def wait_line(self, pattern: str, timeout: float = 10.0) -> str:
        def found() -> str | None:
            return next((ln for ln in self.lines() if re.search(pattern, ln)), None)
        try:
            return wait_until(found, timeout, interval=0.02, what=pattern)
        except AssertionError:
            raise AssertionError(f"no line matching {pattern!r}:\n{self.text()}") from None

    def terminate(self, timeout: float = 15.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit {timeout}s after SIGTERM:\n{self.text()}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def sample_names(http_port: int) -> set[str]:
    """The sample names of ``GET /metrics`` (counters' ``_total``, histograms' ``_bucket``,
    ``_sum`` and ``_count``: the names PromQL queries)."""
    with _opener.open(f"http://{HOST}:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def write_config(folder: Path, config: dict[str, Any]) -> Path:
    path = folder / "broker.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# -- the runs -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def single_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One broker (``--log-format json`` on the command line) with every optional family of
    /metrics but the cluster's: SQLite persistence, a bridge (to a port nobody listens on), an
    MQTT-SN listener; a plugin whose on_connect raises (a logged traceback). Started, used
    (a client connects, subscribes, publishes), scraped, sent SIGHUP and SIGTERM."""
    folder = tmp_path_factory.mktemp("single")
    port, http_port, nobody = free_port(), free_port(), free_port()
    config = write_config(folder, {
        "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"},
                      # UDP: the same port number as the TCP listener (docs/mqttsn.md)
                      "sn": {"type": "mqttsn", "bind": f"{HOST}:{port}",
                             "advertise_interval": 0}},
        "sys_interval": 0,
        "auth": {"allow-anonymous": True},
        "persistence": {"backend": "sqlite", "path": str(folder / "db.sqlite"),
                        "fsync": False},
        "http": {"enabled": True, "bind": f"{HOST}:{http_port}", "dashboard": False},
        "bridges": {"cloud": {"addresses": [f"{HOST}:{nobody}"],
                              "topics": [{"pattern": "up/#", "direction": "out", "qos": 1}]}},
        "plugins": {"tests.integration.sample_plugins.FailingEvents": {}},
    })
    serve = Serve([sys.executable, "-m", "mqttbroker", "serve", "-c", str(config),
                   "--log-format", "json"], folder / "stderr.log")
    try:
        serve.wait_listening(port, http_port)
        client = Paho(unique_id("ops"))
        try:
            client.connect(port)
            client.subscribe(("up/#", 1))
            client.publish("up/t", b"x", qos=1, retain=True)
            client.messages.wait_for(1)
            client.disconnect()
        finally:
            client.close()
        serve.wait_line(r"on_connect failed on purpose")
        names = sample_names(http_port)
        serve.proc.send_signal(signal.SIGHUP)
        serve.wait_line(r"received SIGHUP")
        code = serve.terminate()
        yield Run(serve.lines(), names, code)
    finally:
        serve.close()


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """A cluster node under ``serve --workers 2`` with ``log_format: json`` in its config (and
    the HTTP listener, on worker 0): the cluster's /metrics families and the workers' logs."""
    folder = tmp_path_factory.mktemp("cluster")
    with RedisProc(folder / "redis") as redis:
        port, http_port = free_port(), free_port()
        config = write_config(folder, {
            "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"}},
            "sys_interval": 0,
            "auth": {"allow-anonymous": True},
            "http": {"enabled": True, "bind": f"{HOST}:{http_port}", "dashboard": False},
            "cluster": {"redis": redis.url, "node": "ops"},
            "log_format": "json",
        })
        serve = Serve([sys.executable, "-m", "mqttbroker", "serve", "-c", str(config),
                       "--workers", "2"], folder / "stderr.log")
        try:
            serve.wait_listening(port, http_port)
            for index in (0, 1):  # both workers up (each logs its listener)
                serve.wait_line(rf'"msg": "listener default: listening.*"worker": {index}\}}')
            names = sample_names(http_port)
            code = serve.terminate()
            yield Run(serve.lines(), names, code)
        finally:
            serve.close()


def _records(lines: list[str]) -> list[dict[str, Any]]:
    records = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(obj, dict), line
        assert {"ts", "level", "logger", "msg"} <= set(obj), line
        assert ISO_UTC.fullmatch(obj["ts"]), line
        records.append(obj)
    return records


def test_every_stderr_line_of_a_json_broker_is_a_json_record(single_run: Run) -> None:
    assert single_run.code == 0, "\n".join(single_run.lines)
    records = _records(single_run.lines)
    msgs = [r["msg"] for r in records]
    assert msgs[0].startswith("mqttbroker ") and "starting" in msgs[0]
    assert "received SIGHUP, reloading certificates and password/ACL files" in msgs
    assert "received SIGTERM, shutting down" in msgs
    assert {r["level"] for r in records} >= {"INFO", "ERROR"}
    assert all("worker" not in r for r in records)  # (no --workers)
    failed = [r for r in records if "on_connect failed on purpose" in r.get("exc", "")]
    assert failed and failed[0]["level"] == "ERROR", records
    assert failed[0]["exc"].startswith("Traceback (most recent call last):\n")


def test_workers_log_json_each_with_its_index(cluster_run: Run) -> None:
    assert cluster_run.code == 0, "\n".join(cluster_run.lines)
    records = _records(cluster_run.lines)
    supervisor = [r for r in records if "worker" not in r]
    assert any(r["logger"] == "mqttbroker.workers" and r["msg"].startswith("started 2 workers")
               for r in supervisor), records
    for index in (0, 1):
        own = [r["msg"] for r in records if r.get("worker") == index]
        assert any(m.startswith("listener default: listening") for m in own), records
        assert "received SIGTERM, shutting down" in own, records


_SUPERVISE = """
import sys
from mqttbroker.workers import RestartPolicy, supervise
sys.exit(supervise(2, sys.argv[1:], RestartPolicy(delay=0.1, max_delay=0.2, stable_after=30.0,
                                                  give_up_after=3)))
"""


def test_workers_that_cannot_start_make_the_supervisor_give_up(tmp_path: Path) -> None:
    """``serve --workers 2`` whose workers die at start (the cluster's Redis is not there):
    each is restarted after a backoff, and at its third death in a row within
    stable_after of its start the supervisor stops the other worker and exits with status 1
    instead of restarting them for ever (workers.RestartPolicy; the defaults give up at 6
    deaths and back off 1, 2, 4, 8, 16 s; this run is shortened through supervise()'s
    policy)."""
    port = free_port()
    config = write_config(tmp_path, {
        "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"}},
        "sys_interval": 0,
        "cluster": {"redis": f"redis://{HOST}:{free_port()}/0", "node": "nowhere"},
    })
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _SUPERVISE, "serve", "-c", str(config),
                           "--workers", "2"], check=False, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    took = time.monotonic() - t0
    err = proc.stderr
    assert proc.returncode == 1, err
    assert err.count("cannot reach Redis") >= 3, err  # the workers' own reason, each time
    restarts = re.findall(r"worker (\d) \(pid \d+\) exited with status 1; restarting it in "
                          r"(\d\.\d)s", err)
    assert {w for w, _ in restarts} <= {"0", "1"} and len(restarts) >= 2, err
    assert all(float(wait) <= 0.2 for _, wait in restarts), err
    assert len(re.findall(r"3 deaths in a row, each within 30s of its start; giving up, "
                          r"stopping the workers", err)) == 1, err
    assert took < 45, f"gave up after {took:.1f}s"


def _exited(pid: int) -> bool:
    """``pid`` has exited: gone, or a zombie nobody has reaped yet (an orphan's new parent
    may be a PID 1 that does not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    """``serve --workers 2`` whose supervisor gets SIGKILL (so it cannot stop its workers):
    each worker sees within a second that its supervisor is gone, says so, and shuts down in
    order (sessions stored, clients told), leaving the port free. Orphans would otherwise go
    on serving it, under their node names, beside the workers of a supervisor started
    again."""
    with RedisProc(tmp_path / "redis") as redis:
        port = free_port()
        config = write_config(tmp_path, {
            "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"}},
            "sys_interval": 0,
            "cluster": {"redis": redis.url, "node": "orphans"},
            "log_format": "json",
        })
        serve = Serve([sys.executable, "-m", "mqttbroker", "serve", "-c", str(config),
                       "--workers", "2"], tmp_path / "stderr.log")
        pids: list[int] = []
        try:
            serve.wait_listening(port)
            for index in (0, 1):
                serve.wait_line(rf'"msg": "listener default: listening.*"worker": {index}\}}')
            started = serve.wait_line(r"started 2 workers: pids \d+, \d+")
            pids += [int(p) for p in re.findall(r"\d+", started.split("pids", 1)[1])]
            client = RawClient(port, level=5)  # a client of one worker: told when it goes
            client.connect(unique_id("orphan"))
            serve.proc.kill()
            serve.proc.wait(5)
            t0 = time.monotonic()
            wait_until(lambda: all(_exited(pid) for pid in pids), 10,
                       what="both workers exit")
            took = time.monotonic() - t0
            assert not port_open(port)
            told = [p for p in client.wait_closed(5) if isinstance(p, Disconnect)]
            assert [d.reason_code for d in told] == [ReasonCode.SERVER_SHUTTING_DOWN], told
            gone = f"the supervisor (pid {serve.proc.pid}) is gone: shutting down"
            records = _records(serve.lines())
            for index in (0, 1):
                own = [r["msg"] for r in records if r.get("worker") == index]
                assert gone in own, own
                assert "broker stopped" in own[own.index(gone):], own
            assert took < 5, f"the workers took {took:.1f}s to exit"
        finally:
            serve.close()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# -- Grafana ------------------------------------------------------------------------------------

def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))  # a collapsed row holds its panels


def test_dashboard_queries_only_metric_names_the_broker_exposes(single_run: Run,
                                                                cluster_run: Run) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    exprs: list[str] = [variables["instance"]["definition"]]
    graphs = [p for p in _panels(dashboard["panels"]) if p["type"] != "row"]
    assert len(graphs) >= 20
    ids = [p["id"] for p in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in graphs:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], f"panel {p['title']!r} queries nothing"
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
            exprs.append(t["expr"])
    used = {name for e in exprs
            for name in re.findall(r"\b(?:mqttbroker|process)_[A-Za-z0-9_:]+", e)}
    exposed = single_run.metric_names | cluster_run.metric_names
    assert len(used) >= 40, sorted(used)
    assert used <= exposed, f"queried, not exposed: {sorted(used - exposed)}"
    # each optional family really came from the run that enables it
    assert "mqttbroker_storage_commit_seconds_bucket" in single_run.metric_names
    assert "mqttbroker_bridge_connected" in single_run.metric_names
    assert "mqttbroker_mqttsn_clients" in single_run.metric_names
    assert "mqttbroker_cluster_redis_up" in cluster_run.metric_names
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= used


# -- systemd ------------------------------------------------------------------------------------

def _unit() -> configparser.RawConfigParser:
    # strict=False: systemd allows a key twice (SystemCallFilter=), the last does not replace
    parser = configparser.RawConfigParser(strict=False, interpolation=None,
                                          comment_prefixes=("#", ";"), delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_runs_the_example_config_and_reloads_on_execreload(tmp_path: Path) -> None:
    unit = _unit()
    service = unit["Service"]
    assert service["User"] == "mqttbroker" and service["Type"] == "exec"
    state = Path("/var/lib") / service["StateDirectory"]
    etc = Path("/etc") / service["ConfigurationDirectory"]
    exec_start = shlex.split(service["ExecStart"])
    assert exec_start[1:] == ["serve", "-c", str(etc / "mqttbroker.yaml")], exec_start
    assert Path(exec_start[0]).name == "mqttbroker"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"

    # the two folders systemd gives the service, moved to tmp_path; the ports to free ones
    new_state, new_etc = tmp_path / "state", tmp_path / "etc"
    new_state.mkdir()
    new_etc.mkdir()
    port, http_port = free_port(), free_port()
    text = EXAMPLE.read_text()
    for old, new in ((str(state), str(new_state)), (str(etc), str(new_etc)),
                     ("0.0.0.0:1883", f"{HOST}:{port}"),
                     ("127.0.0.1:8080", f"{HOST}:{http_port}")):
        assert old in text, f"{EXAMPLE.name} no longer mentions {old}"
        text = text.replace(old, new)
    config = new_etc / "mqttbroker.yaml"
    config.write_text(text)
    set_password(str(new_etc / "passwd"), "alice", "alice-secret", iterations=1)

    checked = subprocess.run([str(ENTRY_POINT), "check-config", str(config)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=30, check=False)
    assert checked.returncode == 0 and checked.stdout.strip() == f"{config}: OK", checked

    argv = [str(ENTRY_POINT), *[str(config) if a == str(etc / "mqttbroker.yaml") else a
                                for a in exec_start[1:]]]
    serve = Serve(argv, tmp_path / "journal", journal=True)
    try:
        serve.wait_listening(port, http_port)
        serve.wait_line(r"^<6>INFO mqttbroker: listener default: listening")
        assert (new_state / "api-token").exists()  # the state folder is where state goes
        assert (new_state / "mqttbroker.db").exists()

        alice = Paho(unique_id("alice"), username="alice", password="alice-secret")
        bob = Paho(unique_id("bob"), username="bob", password="bob-secret")
        try:
            alice.connect(port)
            bob.connect(port, expect=4)  # (3.1.1: bad user name or password)
        finally:
            alice.close()
            bob.close()
        serve.wait_line(r"^<4>WARNING ")  # the refused login, at journald's warning priority

        set_password(str(new_etc / "passwd"), "bob", "bob-secret", iterations=1)
        reload = shlex.split(service["ExecReload"].replace("$MAINPID", str(serve.proc.pid)))
        subprocess.run(reload, check=True, timeout=10)
        serve.wait_line(r"^<6>INFO mqttbroker\.auth: reloaded password file ")
        bob = Paho(unique_id("bob"), username="bob", password="bob-secret")
        raw = RawClient(port)
        try:
            bob.connect(port)  # the new user, without a restart
            assert raw.connect(unique_id("anon")).return_code == 5  # still no anonymous
        finally:
            bob.close()
            raw.close()
        assert serve.proc.poll() is None
        assert serve.terminate() == 0, serve.text()
    finally:
        serve.close()
    lines = serve.lines()
    assert lines and all(re.match(r"<[2-7]>[A-Z]+ ", ln) for ln in lines), serve.text()


# -- log lines cannot be forged from the network ---------------------------------------------

def test_control_characters_from_clients_cannot_forge_a_text_log_record(tmp_path: Path) -> None:
    """Client ids, user names and topics are the network's strings. Over real sockets: a
    client id and a user name carrying a newline followed by a fake record, and a PUBLISH
    whose topic carries a newline and an ANSI escape, all against a broker logging text at
    DEBUG. Every stderr line is a record (it starts
    with a UTC timestamp) or a traceback continuation; the fake record never starts a line
    and no raw control character reaches the log."""
    port = free_port()
    config = write_config(tmp_path, {
        "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"}},
        "sys_interval": 0, "auth": {"allow-anonymous": True}, "log_level": "DEBUG"})
    serve = Serve([sys.executable, "-m", "mqttbroker", "serve", "-c", str(config)],
                  tmp_path / "stderr.log")
    forged = "2026-01-01T00:00:00.000Z ERROR mqttbroker: FORGED"
    try:
        serve.wait_listening(port)
        client = Paho(f"evil\n{forged}")
        client.client.username_pw_set(f"user\r\n{forged}")
        try:
            client.connect(port)
            client.publish(f"t/\n{forged}/\x1b[31m", b"x", qos=1)
            serve.wait_line(r"evil")
        finally:
            client.close()
        serve.wait_line(r"evil.*(disconnected|closed|lost)")
    finally:
        serve.terminate()
        serve.close()
    lines = serve.lines()
    assert any("evil" in line for line in lines), lines
    for line in lines:
        assert ISO_UTC.match(line) or line.startswith("  | "), f"not a record: {line!r}"
        assert "FORGED" not in line or not line.startswith("2026-01-01"), line
        assert not any(c in line for c in "\r\x1b\x00"), line
