"""One error root: everything the protocol layer raises is an MQTTBrokerError.

The layer above catches ``MQTTBrokerError`` (a ProtocolError closes that one connection with
its reason code); a bare ValueError/RuntimeError/TypeError from the codec would instead be
taken for a bug of the broker. The encoding errors stay ValueError/RuntimeError subclasses
for callers that check values that way.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest

from mqttbroker.errors import EncodeError, MQTTBrokerError, PacketIdsExhausted, ProtocolError
from mqttbroker.protocol.codec import encode
from mqttbroker.protocol.flows import PacketIdAllocator
from mqttbroker.protocol.packets import Publish
from mqttbroker.protocol.primitives import encode_binary, encode_string

PROTOCOL = Path(__file__).resolve().parents[2] / "mqttbroker" / "protocol"
BUILTIN_ERRORS = {name for name, value in vars(builtins).items()
                  if isinstance(value, type) and issubclass(value, BaseException)}


def test_no_builtin_exception_is_raised_in_the_protocol_layer() -> None:
    found = []
    for path in sorted(PROTOCOL.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(target, ast.Name) and target.id in BUILTIN_ERRORS:
                    found.append(f"{path.name}:{node.lineno}: raise {target.id}")
    assert found == []


def test_a_string_over_65535_bytes_is_an_encode_error() -> None:
    with pytest.raises(EncodeError) as err:
        encode_string("x" * 65536)
    assert isinstance(err.value, MQTTBrokerError) and isinstance(err.value, ValueError)
    with pytest.raises(EncodeError):
        encode_binary(b"x" * 65536)
    with pytest.raises(EncodeError):  # a topic that long cannot be put in a PUBLISH
        encode(Publish("t" * 65536, b"", 0, False), 4)


def test_what_is_not_a_packet_is_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="cannot encode"):
        encode(object(), 4)  # type: ignore[arg-type]


def test_exhausted_packet_ids_are_in_the_family() -> None:
    with pytest.raises(PacketIdsExhausted) as err:
        PacketIdAllocator().allocate(range(1, 65536))
    assert isinstance(err.value, MQTTBrokerError) and isinstance(err.value, RuntimeError)
    assert not isinstance(err.value, ProtocolError)  # not the peer's fault
