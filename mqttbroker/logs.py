"""Log records on stderr, in forms that a person, journald, ``docker logs`` and line-based
collectors all read correctly (docs/operations.md, "Logging").

* ``text`` (the default)::

    2026-12-07T11:47:35.123Z INFO mqttbroker: mqttbroker 1.0 starting (config: ...)

  a UTC ISO 8601 timestamp (so lines from containers in different time zones sort together),
  the level, the logger and the message.
* ``text`` when stderr *is* the journal (systemd sets ``JOURNAL_STREAM=<dev>:<inode>`` for the
  stream it connected; :func:`stderr_is_journal` compares it with ``fstat(2)``)::

    <6>INFO mqttbroker: mqttbroker 1.0 starting (config: ...)

  no timestamp (journald stamps each entry itself), and the sd-daemon(3) priority prefix, which
  journald strips and stores as the entry's PRIORITY (``journalctl -p warning`` works).
* ``json``: one object per line, ``{"ts", "level", "logger", "msg"}`` plus ``worker`` (the
  index, under ``serve --workers``) and ``exc`` / ``stack`` (traceback text) when present;
  written ASCII-only, so no character of a message can end the line early. Under journald the
  line carries the priority prefix too (journald strips it; the entry's MESSAGE is the object).

One record, one line -- with a single, deliberate exception. Every control character of a
message is written as a backslash escape (``\\n``, ``\\r``, ``\\x1b``, ``\\u2028``), so a client
id or topic name with a newline in it cannot forge a second record. A traceback, which a person
wants to read as lines, follows on *continuation* lines that start with ``"  | "``: a line that
begins with a space never begins a record, the rule multiline parsers (Fluent Bit, Promtail,
Vector) join on; under journald each continuation line carries the record's priority prefix so
``journalctl -p err`` shows the whole traceback. The json form keeps the traceback in one string.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Final, TextIO

CONTINUATION: Final = "  | "

# C0, DEL, C1 and the Unicode line/paragraph separators: anything a reader may take for a
# line end (str.splitlines does for \x1c-\x1e, \x85, \u2028, \u2029) or a terminal may act on
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(m: re.Match[str]) -> str:
    c = m.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def escape(text: str) -> str:
    """``text`` with every control character written as a backslash escape: one line."""
    if text.isprintable():  # the common case, in C: nothing to escape
        return text
    return _CONTROL.sub(_escape_char, text)


def priority(levelno: int) -> int:
    """The syslog priority (sd-daemon(3) ``<N>`` prefix) of a logging level."""
    if levelno >= logging.CRITICAL:
        return 2  # crit
    if levelno >= logging.ERROR:
        return 3  # err
    if levelno >= logging.WARNING:
        return 4  # warning
    if levelno >= logging.INFO:
        return 6  # info
    return 7  # debug


def iso_utc(created: float) -> str:
    """``2026-12-07T11:47:35.123Z``: ISO 8601, UTC, milliseconds."""
    # (to the microsecond first, as datetime.fromtimestamp does, then truncated)
    seconds, micros = divmod(round(created * 1_000_000), 1_000_000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{micros // 1000:03d}Z"


def stderr_is_journal(fd: int = 2, environ: Mapping[str, str] | None = None) -> bool:
    """Is ``fd`` the stream systemd connected to journald? It is when ``JOURNAL_STREAM``
    (``<device>:<inode>``, decimal) names that very file: the variable alone is not enough, a
    child whose stderr was redirected inherits it too (systemd.exec(5))."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


class _Formatter(logging.Formatter):
    """What both forms share: the journald flag, the worker index, the traceback text."""

    def __init__(self, *, journald: bool = False, worker: int | None = None) -> None:
        super().__init__()
        self.journald = journald
        self.worker = worker

    def details(self, record: logging.LogRecord) -> tuple[str, str]:
        """The record's exception traceback and stack (``""`` when it has none)."""
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)  # (cached, as logging does)
        stack = self.formatStack(record.stack_info) if record.stack_info else ""
        return record.exc_text or "", stack


class TextFormatter(_Formatter):
    """``TIMESTAMP LEVEL [wN ]LOGGER: MESSAGE`` (under journald ``<P>LEVEL ...`` instead),
    with a traceback on ``"  | "`` continuation lines."""

    def format(self, record: logging.LogRecord) -> str:
        worker = "" if self.worker is None else f"w{self.worker} "
        head = f"{record.levelname} {worker}{record.name}: {escape(record.getMessage())}"
        prefix = f"<{priority(record.levelno)}>" if self.journald else ""
        first = prefix + head if self.journald else f"{iso_utc(record.created)} {head}"
        if not (record.exc_info or record.exc_text or record.stack_info):
            return first  # (nearly every record: no traceback to add)
        lines = [first]
        for text in self.details(record):
            lines.extend(f"{prefix}{CONTINUATION}{escape(line)}" for line in text.splitlines())
        return "\n".join(lines)


class JsonFormatter(_Formatter):
    """One JSON object per record, on one line (ASCII-only: ``json.dumps`` escapes every
    control and non-ASCII character, so nothing in a message can split the line)."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {"ts": iso_utc(record.created), "level": record.levelname,
                                  "logger": record.name, "msg": record.getMessage()}
        if self.worker is not None:
            obj["worker"] = self.worker
        exc, stack = self.details(record)
        if exc:
            obj["exc"] = exc
        if stack:
            obj["stack"] = stack
        line = json.dumps(obj, ensure_ascii=True)
        return f"<{priority(record.levelno)}>{line}" if self.journald else line


def make_formatter(form: str, *, journald: bool = False,
                   worker: int | None = None) -> logging.Formatter:
    """The formatter for ``form``: ``"text"`` or ``"json"`` (config's ``LOG_FORMATS``)."""
    if form == "json":
        return JsonFormatter(journald=journald, worker=worker)
    if form == "text":
        return TextFormatter(journald=journald, worker=worker)
    raise ValueError(f"log format must be text or json, got {form!r}")


def configure(level: str, form: str, *, worker: int | None = None,
              stream: TextIO | None = None) -> bool:
    """Send every log record to ``stream`` (stderr) in ``form``; return True when the lines
    are plain text for a person (``text`` and not the journal), False when a machine parses
    them (``json``, or journald's priority prefixes).

    Python's own writes to stderr are routed through the same handler, so they come out in the
    same form: warnings (``logging.captureWarnings``) and exceptions nothing caught, in the
    main thread or another one. Like ``logging.basicConfig`` (which it calls), it leaves a
    root logger that already has handlers alone.
    """
    out = sys.stderr if stream is None else stream
    try:
        journald = stderr_is_journal(out.fileno())
    except (AttributeError, OSError, ValueError):  # not a real file (a test's StringIO)
        journald = False
    handler = logging.StreamHandler(out)
    handler.setFormatter(make_formatter(form, journald=journald, worker=worker))
    logging.basicConfig(level=level, handlers=[handler])
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught
    return form == "text" and not journald


_crash_log = logging.getLogger("mqttbroker")


def _log_uncaught(kind: type[BaseException], exc: BaseException,
                  tb: TracebackType | None) -> None:
    _crash_log.critical("uncaught exception, exiting", exc_info=(kind, exc, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return  # (what the default hook ignores too)
    name = args.thread.name if args.thread is not None else "?"
    _crash_log.critical("uncaught exception in thread %s", name,
                        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
