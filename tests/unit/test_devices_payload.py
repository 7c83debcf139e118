"""devices.payload: the telemetry schema, MessagePack by default, JSON optional."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.payload import (
    FORMATS,
    SCHEMA_VERSION,
    PayloadError,
    decode,
    decode_raw,
    encode,
    make_doc,
    validate,
)
from devices.sensors import KINDS, make_sensor

TS = 1_717_372_800.25
DEVICE = "sensor-000123"


def good_doc(**changes: Any) -> dict[str, Any]:
    doc = make_doc(DEVICE, "temp_humidity", 42, TS,
                   {"temp_c": 21.37, "rh_pct": 48.2, "battery_v": 3.912})
    doc.update(changes)
    return doc


def sensor_readings(kind: str) -> dict[str, Any]:
    sensor = make_sensor(kind, random.Random(3))
    now = TS
    while True:
        reading = sensor.reading(now)
        if reading is not None:
            return reading
        now += sensor.interval


def test_make_doc_shape() -> None:
    doc = make_doc(DEVICE, "power_meter", 0, 1_700_000_000, {"power_w": 12.5})
    assert doc == {"v": SCHEMA_VERSION, "id": DEVICE, "k": "power_meter", "seq": 0,
                   "ts": 1_700_000_000.0, "r": {"power_w": 12.5}}
    assert isinstance(doc["ts"], float)  # an int time is stored as seconds, as a float


def test_make_doc_copies_readings() -> None:
    readings = {"door": "open"}
    doc = make_doc(DEVICE, "door_motion", 1, TS, readings)
    readings["door"] = "closed"
    assert doc["r"] == {"door": "open"}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_every_kind(kind: str, fmt: str) -> None:
    doc = make_doc(DEVICE, kind, 7, TS, sensor_readings(kind))
    assert decode(encode(doc, fmt)) == doc


def test_msgpack_is_the_default() -> None:
    data = encode(good_doc())
    assert data[0] & 0xF0 == 0x80  # a fixmap of six keys
    assert msgpack.unpackb(data) == good_doc()


def test_json_is_compact() -> None:
    data = encode(good_doc(), "json")
    assert data.startswith(b'{"v":1,"id":"sensor-000123"')
    assert b" " not in data
    assert json.loads(data) == good_doc()


@pytest.mark.parametrize("kind", KINDS)
def test_msgpack_smaller_than_json(kind: str) -> None:
    doc = make_doc(DEVICE, kind, 123_456, TS, sensor_readings(kind))
    assert len(encode(doc, "msgpack")) < len(encode(doc, "json"))


def test_decode_accepts_json_with_leading_whitespace_and_bytearray() -> None:
    data = b" \n" + encode(good_doc(), "json")
    assert decode(bytearray(data)) == good_doc()
    assert decode(memoryview(encode(good_doc()))) == good_doc()


readings_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=20),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=5),
)
docs = st.builds(
    make_doc,
    device_id=st.text(min_size=1, max_size=30),
    kind=st.sampled_from(KINDS) | st.text(min_size=1, max_size=10),
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    ts=st.floats(min_value=0.0, max_value=4e9),
    readings=st.dictionaries(st.text(min_size=1, max_size=12), readings_values, max_size=8),
)


@settings(max_examples=150, deadline=None)
@given(doc=docs, fmt=st.sampled_from(FORMATS))
def test_round_trip_property(doc: dict[str, Any], fmt: str) -> None:
    assert decode(encode(doc, fmt)) == doc


# -- errors -----------------------------------------------------------------------------------


def test_payload_error_is_a_value_error() -> None:
    assert issubclass(PayloadError, ValueError)


@pytest.mark.parametrize("key", ["v", "id", "k", "seq", "ts", "r"])
def test_missing_key_is_named(key: str) -> None:
    doc = good_doc()
    del doc[key]
    with pytest.raises(PayloadError, match=f"missing required key\\(s\\): {key}"):
        validate(doc)
    with pytest.raises(PayloadError, match="missing"):
        decode(msgpack.packb(doc))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"v": 2}, "schema version"),
        ({"v": True}, "schema version"),
        ({"id": ""}, "'id'"),
        ({"id": 123}, "'id'"),
        ({"k": None}, "'k'"),
        ({"seq": -1}, "'seq'"),
        ({"seq": 1.0}, "'seq'"),
        ({"seq": True}, "'seq'"),
        ({"ts": "now"}, "'ts'"),
        ({"ts": math.nan}, "'ts'"),
        ({"ts": -5.0}, "'ts'"),
        ({"r": [1, 2]}, "'r'"),
        ({"r": {"x": None}}, "reading 'x'"),
        ({"r": {"x": {"nested": 1}}}, "reading 'x'"),
        ({"r": {"x": math.inf}}, "finite"),
        ({"r": {"x": [1.0, "a"]}}, "list"),
        ({"r": {"": 1}}, "non-empty"),
    ],
)
def test_wrong_types_are_explained(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        validate(good_doc(**changes))
    with pytest.raises(PayloadError, match=message):
        encode(good_doc(**changes))  # nothing invalid goes on the wire


def test_make_doc_validates() -> None:
    with pytest.raises(PayloadError, match="'seq'"):
        make_doc(DEVICE, "temp_humidity", -1, TS, {})


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used in MessagePack
        b"\x86\xa1v",  # truncated map
        encode(good_doc())[:-3],  # truncated document
        encode(good_doc()) + b"\x00",  # trailing bytes
        b"hello world",
        b"{not json",
        b'{"v":1,"id":"a","k":"b","seq":0,"ts":NaN,"r":{}}',  # RFC 8259: no NaN in JSON
        b'{"v":1,"id":"\xff"}',  # not UTF-8
        b"\x93\x01\x02\x03",  # a MessagePack array, not a map
        b"\x81\x01\x02",  # a map with an integer key
        b"[1,2,3]",
    ],
)
def test_garbage_raises_payload_error(data: bytes) -> None:
    with pytest.raises(PayloadError):
        decode(data)


def test_garbage_message_is_clear() -> None:
    with pytest.raises(PayloadError, match="neither JSON nor valid MessagePack"):
        decode(b"\xc1\xc1\xc1")
    with pytest.raises(PayloadError, match="not valid JSON"):
        decode(b"{oops")
    with pytest.raises(PayloadError, match="must be a map"):
        decode(msgpack.packb([1, 2]))


def test_unknown_format() -> None:
    with pytest.raises(PayloadError, match="unknown payload format 'xml'"):
        encode(good_doc(), "xml")


def test_extra_keys_are_tolerated() -> None:
    doc = good_doc(extra="future field")
    assert decode(encode(doc))["extra"] == "future field"


def test_decode_raw_skips_the_schema() -> None:
    assert decode_raw(msgpack.packb({"interval": 30})) == {"interval": 30}
    assert decode_raw(b'{"interval":30}') == {"interval": 30}
    with pytest.raises(PayloadError):
        decode_raw(b"\xc1")
