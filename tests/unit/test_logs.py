"""mqttbroker/logs.py: the lines real logging records become, in each form.

Records go through a real ``logging.Logger`` into a handler with the formatter under test;
exceptions are raised and caught, not built. journald is recognised from a real file
descriptor whose device and inode ``JOURNAL_STREAM`` names; :func:`logs.configure` is run in
a child process, whose stderr is a real file (it changes process-wide logging state).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mqttbroker import logs
from mqttbroker.config import load_config
from mqttbroker.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
Emit = Callable[..., str]
TEXT_LINE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\w+) (.+?): (.*)")


@pytest.fixture
def emit() -> Iterator[Emit]:
    """``emit(formatter, level, msg, *args, exc=False)``: log one record through a real logger
    and return what the handler wrote."""
    logger = logging.getLogger("test.logs")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger.addHandler(handler)

    def run(formatter: logging.Formatter, level: int, msg: str, *args: object,
            exc: bool = False) -> str:
        out.seek(0)
        out.truncate()
        handler.setFormatter(formatter)
        if exc:
            try:
                raise ValueError("boom\nsecond line of the exception")
            except ValueError:
                logger.log(level, msg, *args, exc_info=True)
        else:
            logger.log(level, msg, *args)
        return out.getvalue()

    yield run
    logger.removeHandler(handler)
    logger.propagate = True


def test_text_line_has_utc_timestamp_level_logger_message(emit: Emit) -> None:
    before = datetime.now(UTC)
    out = emit(logs.TextFormatter(), logging.INFO, "client %s connected", "c1")
    after = datetime.now(UTC)
    assert out.endswith("\n") and out.count("\n") == 1, out
    m = TEXT_LINE.fullmatch(out.rstrip("\n"))
    assert m, out
    stamp = datetime.fromisoformat(m[1])
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= stamp <= after
    assert m.group(2, 3, 4) == ("INFO", "test.logs", "client c1 connected")


def test_text_escapes_control_characters_so_a_message_cannot_forge_a_record(emit: Emit) -> None:
    evil = "c1\n2026-01-01T00:00:00.000Z ERROR mqttbroker: forged\r\x1b[2J\u2028end"
    out = emit(logs.TextFormatter(), logging.WARNING, "client %s refused", evil)
    assert out.count("\n") == 1 and len(out.rstrip("\n").splitlines()) == 1, repr(out)
    m = TEXT_LINE.fullmatch(out.rstrip("\n"))
    assert m, out
    assert m[4] == ("client c1\\n2026-01-01T00:00:00.000Z ERROR mqttbroker: forged\\r"
                    "\\x1b[2J\\u2028end refused")


def test_text_traceback_follows_on_marked_continuation_lines(emit: Emit) -> None:
    out = emit(logs.TextFormatter(), logging.ERROR, "reload failed", exc=True)
    first, *rest = out.rstrip("\n").split("\n")
    assert TEXT_LINE.fullmatch(first) and first.endswith("ERROR test.logs: reload failed")
    assert rest, out
    assert all(line.startswith(logs.CONTINUATION) for line in rest), out
    body = [line.removeprefix(logs.CONTINUATION) for line in rest]
    assert body[0] == "Traceback (most recent call last):"
    assert any(line.startswith("    raise ValueError(") for line in body), out
    # the exception's own newline is a continuation line too, never a line of its own
    assert body[-2:] == ["ValueError: boom", "second line of the exception"], body


def test_json_line_is_one_object_with_the_fields(emit: Emit) -> None:
    out = emit(logs.JsonFormatter(), logging.WARNING, "client %s: %s", "é\u2028",
               "a\nb \"q\"")
    assert out.count("\n") == 1 and out.isascii(), repr(out)
    assert len(out.splitlines()) == 1  # (no U+2028 or other separator left raw either)
    obj = json.loads(out)
    assert set(obj) == {"ts", "level", "logger", "msg"}
    assert obj["level"] == "WARNING" and obj["logger"] == "test.logs"
    assert obj["msg"] == "client é\u2028: a\nb \"q\""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", obj["ts"])
    stamp = datetime.fromisoformat(obj["ts"])
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60


def test_json_keeps_the_traceback_in_exc(emit: Emit) -> None:
    out = emit(logs.JsonFormatter(), logging.ERROR, "reload failed", exc=True)
    assert out.count("\n") == 1, repr(out)
    obj = json.loads(out)
    assert obj["msg"] == "reload failed"
    assert obj["exc"].startswith("Traceback (most recent call last):\n")
    assert obj["exc"].endswith("ValueError: boom\nsecond line of the exception")


def test_worker_index_in_both_forms(emit: Emit) -> None:
    text = emit(logs.TextFormatter(worker=3), logging.INFO, "hello")
    m = TEXT_LINE.fullmatch(text.rstrip("\n"))
    assert m and m.group(2, 3) == ("INFO", "w3 test.logs"), text
    obj = json.loads(emit(logs.JsonFormatter(worker=3), logging.INFO, "hello"))
    assert obj["worker"] == 3
    assert "worker" not in json.loads(emit(logs.JsonFormatter(), logging.INFO, "hello"))


@pytest.mark.parametrize(("level", "prio"), [
    (logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3),
    (logging.CRITICAL, 2)])
def test_journald_lines_carry_the_priority_and_no_timestamp(emit: Emit, level: int,
                                                            prio: int) -> None:
    name = logging.getLevelName(level)
    out = emit(logs.TextFormatter(journald=True), level, "hello")
    assert out == f"<{prio}>{name} test.logs: hello\n"
    obj = json.loads(emit(logs.JsonFormatter(journald=True), level, "hello")
                     .removeprefix(f"<{prio}>"))
    assert obj["level"] == name and "ts" in obj


def test_journald_traceback_lines_keep_the_records_priority(emit: Emit) -> None:
    out = emit(logs.TextFormatter(journald=True), logging.ERROR, "failed", exc=True)
    lines = out.rstrip("\n").split("\n")
    assert lines[0] == "<3>ERROR test.logs: failed"
    assert len(lines) > 3 and all(line.startswith("<3>" + logs.CONTINUATION)
                                  for line in lines[1:]), out


def test_journal_stream_is_recognised_only_for_the_fd_it_names(tmp_path: Path) -> None:
    with (tmp_path / "journal").open("w") as journal, (tmp_path / "other").open("w") as other:
        st = os.fstat(journal.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert logs.stderr_is_journal(journal.fileno(), env)
        # stderr redirected away from the journal: the inherited variable no longer applies
        assert not logs.stderr_is_journal(other.fileno(), env)
        assert not logs.stderr_is_journal(journal.fileno(), {})
        for bad in ("", f"{st.st_dev}", f"{st.st_dev}:", f":{st.st_ino}", "a:b",
                    f"{st.st_dev}:{st.st_ino + 1}"):
            assert not logs.stderr_is_journal(journal.fileno(), {"JOURNAL_STREAM": bad}), bad
    r, w = os.pipe()  # a pipe (docker's stderr) has a device and inode too
    try:
        st = os.fstat(w)
        assert logs.stderr_is_journal(w, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        closed = os.sysconf("SC_OPEN_MAX")  # (no fd has this number: fstat fails)
        assert not logs.stderr_is_journal(closed, {"JOURNAL_STREAM": "1:1"})
    finally:
        os.close(r)
        os.close(w)


_CHILD = """
import logging, sys, warnings
from mqttbroker import logs
from mqttbroker.config import load_config
from mqttbroker.errors import ConfigError
plain = logs.configure("INFO", sys.argv[1], worker=int(sys.argv[2]) if sys.argv[2] else None)
print("plain" if plain else "machine")
logging.getLogger("mqttbroker.x").debug("not shown at INFO")
logging.getLogger("mqttbroker.x").warning("careful")
warnings.warn("old API")
raise RuntimeError("nobody caught this")
"""


def _child(tmp_path: Path, form: str, *, journal: bool, worker: str = "") -> tuple[str, str]:
    """Run ``logs.configure`` in a child whose stderr is a real file (named by JOURNAL_STREAM
    with ``journal``); return its stdout and its stderr."""
    err_path = tmp_path / f"stderr-{form}-{journal}"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with err_path.open("w") as err:
        if journal:
            st = os.fstat(err.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        done = subprocess.run([sys.executable, "-c", _CHILD, form, worker], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=err, text=True, timeout=30,
                              check=False)
    assert done.returncode == 1, done
    return done.stdout.strip(), err_path.read_text()


def test_configure_routes_warnings_and_uncaught_exceptions_through_the_form(
        tmp_path: Path) -> None:
    out, err = _child(tmp_path, "json", journal=False, worker="2")
    assert out == "machine"
    records = [json.loads(line) for line in err.splitlines()]  # every line is one object
    assert [(r["level"], r["logger"]) for r in records] == [
        ("WARNING", "mqttbroker.x"), ("WARNING", "py.warnings"), ("CRITICAL", "mqttbroker")]
    assert all(r["worker"] == 2 for r in records)
    assert "old API" in records[1]["msg"]
    assert records[2]["msg"] == "uncaught exception, exiting"
    assert records[2]["exc"].endswith("RuntimeError: nobody caught this")


def test_configure_detects_the_journal_on_stderr(tmp_path: Path) -> None:
    out, err = _child(tmp_path, "text", journal=True)
    assert out == "machine"
    lines = err.splitlines()
    assert lines[0] == "<4>WARNING mqttbroker.x: careful"
    assert lines[1].startswith("<4>WARNING py.warnings: ") and "old API" in lines[1]
    assert lines[2] == "<2>CRITICAL mqttbroker: uncaught exception, exiting"
    assert all(line.startswith("<2>" + logs.CONTINUATION) for line in lines[3:]), err
    assert lines[-1] == "<2>  | RuntimeError: nobody caught this"
    # the same child with stderr not the journal: timestamps, no prefixes
    out, err = _child(tmp_path, "text", journal=False)
    assert out == "plain"
    assert TEXT_LINE.fullmatch(err.splitlines()[0]), err


# -- the log_format key and --log-format --------------------------------------------------------

def test_log_format_key_is_checked_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broker.yaml"
    path.write_text("log_level: INFO\nlog_format: JSON\n")
    assert load_config(path).log_format == "json"  # (any case, stored lower)
    assert load_config().log_format == "text"
    path.write_text("log_level: INFO\n\nlog_format: yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [(i.key, i.line, i.problem) for i in info.value.issues] == [
        ("log_format", 3, "must be one of text, json; got 'yaml'")]
    assert load_config().with_overrides(log_format="Json").log_format == "json"
    with pytest.raises(ConfigError) as info:
        load_config().with_overrides(log_format="xml")
    assert [(i.key, i.problem) for i in info.value.issues] == [
        ("log_format", "must be one of text, json; got 'xml'")]


def test_a_json_broker_that_cannot_start_says_why_in_a_json_record() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "mqttbroker", "serve", "--port", str(port),
                               "--log-format", "json"], cwd=ROOT, capture_output=True,
                              text=True, timeout=30, check=False)
    assert done.returncode == 1, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert records[-1]["level"] == "ERROR"
    assert records[-1]["msg"] == (f"cannot listen on 127.0.0.1:{port}: address already in use "
                                  "(is another broker running? try --port)")
