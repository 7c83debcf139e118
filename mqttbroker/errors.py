"""One root error for the project, and the two kinds every layer raises.

A :class:`ProtocolError` carries the MQTT 5 reason code that describes it; the one place that
turns it into a packet (a CONNACK return code or a DISCONNECT) is ``protocol/connection.py``. A
:class:`ConfigError` names the key path and the YAML line so an operator can fix the file.
"""

from __future__ import annotations


class MQTTBrokerError(Exception):
    """Root of every error raised by mqttbroker."""


class ProtocolError(MQTTBrokerError):
    """The peer broke the MQTT specification; the connection must be closed.

    ``code`` is the MQTT 5 reason code (0x81 malformed packet, 0x82 protocol error, ...):
    a ``protocol.constants.ReasonCode`` where one is raised (the error root sits below the
    protocol layer, so it knows the code as an int).
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        name = getattr(self.code, "name", None)
        return f"{self.message} (reason 0x{int(self.code):02X}{' ' + name if name else ''})"


class MqttsnError(MQTTBrokerError):
    """An MQTT-SN datagram the codec cannot accept (``protocol/mqttsn``); the message names the
    field. UDP has no connection to close: the gateway drops the datagram and logs why.
    ``msg_type`` is the MsgType byte when it could be read (a gateway may answer a CONNECT it
    could not decode with a CONNACK), else None."""

    def __init__(self, message: str, msg_type: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.msg_type = msg_type


class EncodeError(MQTTBrokerError, ValueError):
    """The broker asked the codec for bytes MQTT cannot carry (a string or binary value over
    65535 bytes, an object that is not a packet): a bug of the caller, never the peer's. A
    ValueError too, for callers that check values that way."""


class PacketIdsExhausted(MQTTBrokerError, RuntimeError):
    """All 65535 packet identifiers of a session are in flight [MQTT-2.3.1-2] (the in-flight
    window is capped below that, so this is a bug of the caller)."""


class ConfigIssue:
    """One problem in a config file: where it is and what is wrong."""

    __slots__ = ("key", "line", "problem")

    def __init__(self, key: str, line: int | None, problem: str) -> None:
        self.key = key
        self.line = line
        self.problem = problem

    def format(self, filename: str | None = None) -> str:
        """Render as ``FILE:LINE: key.path: problem`` (parts that are unknown are left out)."""
        where = ""
        if filename is not None:
            where = f"{filename}:{self.line}: " if self.line is not None else f"{filename}: "
        elif self.line is not None:
            where = f"line {self.line}: "
        return f"{where}{self.key or '<root>'}: {self.problem}"

    def __repr__(self) -> str:
        return f"ConfigIssue({self.key!r}, {self.line!r}, {self.problem!r})"


class ConfigError(MQTTBrokerError):
    """A config file or dict is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue], filename: str | None = None) -> None:
        self.issues = issues
        self.filename = filename
        super().__init__("\n".join(i.format(filename) for i in issues))

    @property
    def key(self) -> str:
        """The key path of the first problem."""
        return self.issues[0].key if self.issues else ""

    @property
    def line(self) -> int | None:
        """The line of the first problem (1-based), when it came from a file."""
        return self.issues[0].line if self.issues else None


def read_text_file(path: str, key: str) -> str:
    """A file named by config key ``key`` (a password or ACL file), as UTF-8 text; a
    :class:`ConfigError` naming the file (and the line of bad UTF-8) otherwise."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError([ConfigIssue(key, None, f"cannot read: {exc.strerror or exc}")],
                          path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigIssue(key, line, "not valid UTF-8 text")], path) from None
