"""The telemetry payload: one small map per reading, MessagePack on the wire by default.

The schema (documented, with measured sizes, in ``docs/payload.md``) is deliberately flat and
uses one- to three-letter keys, because a constrained sensor pays for every byte it radios:

====  =========================  ==============================================================
key   type                       meaning
====  =========================  ==============================================================
v     int                        schema version, :data:`SCHEMA_VERSION`
id    str                        device id, e.g. ``"sensor-000123"``
k     str                        sensor kind, e.g. ``"temp_humidity"`` (see ``devices.sensors``)
seq   int >= 0                   sequence number per device and QoS stream, starting at 0
ts    float                      creation time, seconds since the Unix epoch (``time.time()``)
r     map str -> scalar | list   the readings: int, float, bool, str or a list of numbers
====  =========================  ==============================================================

MQTT itself treats the PUBLISH payload as opaque application bytes ([MQTT-3.3.3], "The Payload
contains the Application Message that is being published. The content and format of the data is
application specific"), so this schema is ours to define. MessagePack is the spec at
https://github.com/msgpack/msgpack/blob/master/spec.md; strings are UTF-8 ``str`` types and
binary data uses the ``bin`` types (``use_bin_type=True``). JSON (RFC 8259) is the readable
alternative; :func:`decode` tells them apart by the first byte, because a JSON document here is
always an object (``{``, 0x7B) and a MessagePack map always starts with 0x80-0x8F, 0xDE or 0xDF.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

import msgpack  # type: ignore[import-untyped]

__all__ = [
    "FORMATS",
    "REQUIRED_KEYS",
    "SCHEMA_VERSION",
    "PayloadError",
    "decode",
    "decode_raw",
    "encode",
    "make_doc",
    "validate",
]

SCHEMA_VERSION: Final = 1
"""Bumped whenever a key changes meaning; decoders reject versions they do not know."""

FORMATS: Final = ("msgpack", "json")
"""Wire formats :func:`encode` accepts; the first is the default."""

REQUIRED_KEYS: Final = ("v", "id", "k", "seq", "ts", "r")
"""Every document carries exactly these keys (unknown extra keys are tolerated on decode)."""

_JSON_WS: Final = b" \t\r\n"


class PayloadError(ValueError):
    """A payload that cannot be encoded or decoded, or a document that breaks the schema."""


def make_doc(device_id: str, kind: str, seq: int, ts: float,
             readings: Mapping[str, Any]) -> dict[str, Any]:
    """Build one telemetry document (validated; raises :class:`PayloadError`).

    ``seq`` counts per device and per QoS stream from 0, so a subscriber can spot loss,
    duplicates and reordering; ``ts`` is ``time.time()`` when the reading was taken, so the
    subscriber can compute end-to-end latency. ``readings`` is copied.
    """
    doc: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "id": device_id,
        "k": kind,
        "seq": seq,
        "ts": float(ts) if isinstance(ts, int) and not isinstance(ts, bool) else ts,
        "r": dict(readings),
    }
    validate(doc)
    return doc


def encode(doc: Mapping[str, Any], fmt: str = "msgpack") -> bytes:
    """Serialise a document as ``"msgpack"`` (default) or compact ``"json"``.

    The document is validated first, so nothing that :func:`decode` would refuse goes on the
    wire. Raises :class:`PayloadError` for a bad document or an unknown format.
    """
    validate(doc)
    if fmt == "msgpack":
        try:
            data: bytes = msgpack.packb(doc, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:  # pragma: no cover - validated
            raise PayloadError(f"cannot encode as msgpack: {exc}") from exc
        return data
    if fmt == "json":
        try:
            text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:  # pragma: no cover - validated
            raise PayloadError(f"cannot encode as JSON: {exc}") from exc
        return text.encode("utf-8")
    raise PayloadError(f"unknown payload format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _reject_constant(name: str) -> float:
    """``json.loads`` hook: NaN and Infinity are not JSON (RFC 8259 section 6)."""
    raise PayloadError(f"JSON payload contains {name}, which is not valid JSON")


def decode_raw(data: bytes | bytearray | memoryview) -> Any:
    """Parse JSON or MessagePack bytes without checking the telemetry schema.

    Useful for other small messages sent in the same formats (commands, for instance).
    Raises :class:`PayloadError` when the bytes are neither.
    """
    raw = bytes(data)
    if not raw:
        raise PayloadError("empty payload")
    if raw.lstrip(_JSON_WS)[:1] == b"{":
        try:
            return json.loads(raw, parse_constant=_reject_constant)
        except PayloadError:
            raise
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise PayloadError(f"payload starts with '{{' but is not valid JSON: {exc}") from exc
    try:
        return msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # ExtraData, FormatError, StackError and invalid UTF-8 are ValueErrors; truncated input
        # is "Unpack failed: incomplete input"; non-string map keys are a ValueError as well.
        raise PayloadError(
            f"payload is neither JSON nor valid MessagePack ({len(raw)} bytes, "
            f"starting {raw[:8].hex()}): {exc}"
        ) from exc


def decode(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Parse a telemetry payload (JSON if it starts with ``{``, else MessagePack) and validate it.

    Returns the document as a plain dict. Raises :class:`PayloadError` with a message saying
    what is wrong: not JSON/MessagePack, not a map, a missing key or a value of the wrong type.
    """
    doc = decode_raw(data)
    validate(doc)
    assert isinstance(doc, dict)
    return doc


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """A finite int or float (not a bool)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _check_reading(name: object, value: object) -> None:
    if not isinstance(name, str) or not name:
        raise PayloadError(f"reading names must be non-empty strings, got {name!r}")
    if isinstance(value, (bool, str)) or _is_number(value):
        return
    if isinstance(value, float):
        raise PayloadError(f"reading {name!r} is {value!r}; readings must be finite numbers")
    if isinstance(value, list):
        for item in value:
            if not _is_number(item):
                raise PayloadError(
                    f"reading {name!r} is a list with {item!r}; lists hold finite numbers only"
                )
        return
    raise PayloadError(
        f"reading {name!r} has type {type(value).__name__}; "
        "expected int, float, bool, str or a list of numbers"
    )


def validate(doc: object) -> None:
    """Check a document against the schema; raise :class:`PayloadError` naming the problem.

    Extra top-level keys are allowed (a newer minor producer may add some); a wrong ``v`` is not.
    """
    if not isinstance(doc, Mapping):
        raise PayloadError(f"payload must be a map/object, got {type(doc).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in doc]
    if missing:
        raise PayloadError(f"payload is missing required key(s): {', '.join(missing)}")
    version = doc["v"]
    if not _is_int(version) or version != SCHEMA_VERSION:
        raise PayloadError(
            f"unsupported schema version 'v'={version!r}; this decoder knows {SCHEMA_VERSION}"
        )
    device_id = doc["id"]
    if not isinstance(device_id, str) or not device_id:
        raise PayloadError(f"'id' must be a non-empty string, got {device_id!r}")
    kind = doc["k"]
    if not isinstance(kind, str) or not kind:
        raise PayloadError(f"'k' must be a non-empty string, got {kind!r}")
    seq = doc["seq"]
    if not _is_int(seq) or seq < 0:
        raise PayloadError(f"'seq' must be an integer >= 0, got {seq!r}")
    ts = doc["ts"]
    if not _is_number(ts) or ts < 0:
        raise PayloadError(
            f"'ts' must be a finite number of seconds since the epoch (>= 0), got {ts!r}"
        )
    readings = doc["r"]
    if not isinstance(readings, Mapping):
        raise PayloadError(f"'r' must be a map of readings, got {type(readings).__name__}")
    for name, value in readings.items():
        _check_reading(name, value)
