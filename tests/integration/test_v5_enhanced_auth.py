"""Enhanced authentication [MQTT 4.12] with SCRAM-SHA-256 [RFC 5802, RFC 7677]: CONNECT carries
the client-first message, the broker answers AUTH 0x18 with server-first, the client sends
client-final in AUTH 0x18, and the CONNACK carries the server-final message (``v=``), which the
test's own SCRAM client verifies: the broker proved it holds the credential.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mqttbroker.protocol.packets import (
    Auth,
    Connack,
    Connect,
    Packet,
    Pingreq,
    Pingresp,
    Publish,
)
from tests.conftest import BrokerThread, base_config

from .helpers import unique_id
from .v5helpers import Env, P, RawV5, ScramClient, make_credential, scram_credential

METHOD = "SCRAM-SHA-256"


@pytest.fixture
def env(make_broker_thread: Callable[[dict[str, Any]], BrokerThread]) -> Iterator[Env]:
    e = Env(make_broker_thread)
    cfg = base_config()
    cfg["auth"] = {"allow-anonymous": True,
                   "scram-users": {"alice": make_credential("correct horse"),
                                   "bob": scram_credential("b0b-s3cret", iterations=4096)}}
    e.start(cfg)
    yield e
    e.close()


def auth_props(data: bytes, method: str = METHOD) -> dict[int, Any]:
    return {P.AUTHENTICATION_METHOD: method, P.AUTHENTICATION_DATA: data}


def start(env: Env, scram: ScramClient, cid: str | None = None) -> tuple[RawV5, Packet]:
    """Send CONNECT with the client-first message; return the client and the broker's answer."""
    r = env.raw()
    r.send(Connect("MQTT", 5, cid or unique_id("ea"), True, 60, None, None, None,
                   auth_props(scram.client_first())))
    return r, r.recv()


def full_exchange(env: Env, user: str, password: str,
                  cid: str | None = None) -> tuple[RawV5, Connack, ScramClient]:
    scram = ScramClient(user, password)
    r, first = start(env, scram, cid)
    assert isinstance(first, Auth), f"expected AUTH 0x18 with server-first, got {first!r}"
    # [MQTT-4.12.0-2] Continue authentication; [MQTT-4.12.0-5] the same method
    assert first.reason_code == 0x18, first
    assert first.properties.get(P.AUTHENTICATION_METHOD) == METHOD, first.properties
    server_first = first.properties.get(P.AUTHENTICATION_DATA)
    assert isinstance(server_first, bytes), first.properties
    # [MQTT-4.12.0-3] the client answers AUTH 0x18
    r.auth(0x18, auth_props(scram.client_final(server_first)))
    return r, r.expect(Connack), scram


def test_scram_success_mqtt_4_12(env: Env) -> None:
    """alice with the right password: AUTH 0x18 (server-first), then CONNACK 0x00 carrying the
    Authentication Method [MQTT-4.12.0-5] and server-final data that proves the server knew
    the credential; the connection then works."""
    cid = unique_id("eaok")
    r, ack, scram = full_exchange(env, "alice", "correct horse", cid)
    assert ack.return_code == 0x00, f"CONNACK 0x{ack.return_code:02X}"
    assert ack.properties.get(P.AUTHENTICATION_METHOD) == METHOD, ack.properties
    final = ack.properties.get(P.AUTHENTICATION_DATA)
    assert isinstance(final, bytes) and final.startswith(b"v="), ack.properties
    assert scram.verify_server_final(final), f"server signature does not verify: {final!r}"
    r.send(Pingreq())
    r.expect(Pingresp)
    assert env.connected(cid)


def test_scram_success_with_independently_made_credential(env: Env) -> None:
    """A credential computed by the test from RFC 5802 (not by the broker's helper) works: the
    stored format is the documented PostgreSQL one."""
    _, ack, scram = full_exchange(env, "bob", "b0b-s3cret")
    assert ack.return_code == 0x00
    assert scram.verify_server_final(ack.properties[P.AUTHENTICATION_DATA])


def test_scram_authenticated_client_can_publish_and_subscribe(env: Env) -> None:
    """After SCRAM the client is an ordinary client."""
    r, ack, _ = full_exchange(env, "alice", "correct horse")
    assert ack.return_code == 0
    assert r.subscribe5(("ea/x", 1)).return_codes == [1]
    r.publish5("ea/x", b"hello", 1)
    assert r.next_publish().payload == b"hello"


def test_scram_wrong_password_refused_mqtt_4_12_0_4(env: Env) -> None:
    """Wrong password: the server rejects the authentication with CONNACK 0x86 (Bad User Name or
    Password) or 0x87 (Not authorized), Session Present 0, and closes [MQTT-4.12.0-4]; it sends
    no server-final data."""
    r, ack, _ = full_exchange(env, "alice", "wrong horse")
    assert ack.return_code in (0x86, 0x87), f"CONNACK 0x{ack.return_code:02X}"
    assert not ack.session_present
    assert P.AUTHENTICATION_DATA not in ack.properties or not bytes(
        ack.properties[P.AUTHENTICATION_DATA]).startswith(b"v=")
    assert r.wait_closed() == []


def test_scram_unknown_user_refused(env: Env) -> None:
    """An unknown user is refused the same way (whether or not the broker plays along with a
    made-up salt first, which hides which users exist)."""
    scram = ScramClient("mallory", "anything")
    r, first = start(env, scram)
    if isinstance(first, Auth):
        assert first.reason_code == 0x18
        r.auth(0x18, auth_props(scram.client_final(first.properties[P.AUTHENTICATION_DATA])))
        first = r.expect(Connack)
    assert isinstance(first, Connack) and first.return_code in (0x86, 0x87), first
    assert r.wait_closed() == []


def test_scram_tampered_nonce_refused(env: Env) -> None:
    """A client-final whose nonce is not the combined nonce of this exchange is refused."""
    scram = ScramClient("alice", "correct horse")
    r, first = start(env, scram)
    assert isinstance(first, Auth)
    server_first = first.properties[P.AUTHENTICATION_DATA]
    final = scram.client_final(server_first).decode()
    head, rest = final.split(",r=", 1)
    nonce, proof = rest.split(",p=", 1)
    r.auth(0x18, auth_props(f"{head},r={nonce}x,p={proof}".encode()))
    ack = r.expect(Connack)
    assert ack.return_code >= 0x80, ack
    assert r.wait_closed() == []


def test_unknown_authentication_method_0x8c_mqtt_4_12_0_1(env: Env) -> None:
    """[MQTT-4.12.0-1] an Authentication Method the server does not support: CONNACK 0x8C (Bad
    authentication method), then close."""
    r = env.raw()
    ack = r.connect5(unique_id("eafoo"), properties=auth_props(b"whatever", method="FOO"))
    assert ack.return_code == 0x8C, f"CONNACK 0x{ack.return_code:02X}"
    assert r.wait_closed() == []


def test_no_auth_method_no_auth_exchange_mqtt_4_12_0_6(env: Env) -> None:
    """[MQTT-4.12.0-6] a client that sends no Authentication Method gets no AUTH and no
    Authentication Method in the CONNACK (anonymous access is allowed here)."""
    _, ack = env.raw_connect(unique_id("eanone"))
    assert ack.return_code == 0
    assert P.AUTHENTICATION_METHOD not in ack.properties
    assert P.AUTHENTICATION_DATA not in ack.properties


def test_auth_with_other_method_refused_mqtt_4_12_0_5(env: Env) -> None:
    """[MQTT-4.12.0-5] every AUTH carries the CONNECT's method: an AUTH naming another one ends
    the exchange with a refusal (reason >= 0x80) and a closed connection."""
    scram = ScramClient("alice", "correct horse")
    r, first = start(env, scram)
    assert isinstance(first, Auth)
    r.auth(0x18, auth_props(scram.client_final(first.properties[P.AUTHENTICATION_DATA]),
                            method="SCRAM-SHA-1"))
    got = r.wait_closed()
    assert got and isinstance(got[0], Connack) and got[0].return_code >= 0x80, got


def test_publish_before_connack_during_auth_refused(env: Env) -> None:
    """A client that set an Authentication Method may send only AUTH or DISCONNECT until the
    CONNACK [MQTT 3.1.2.11.9]: a PUBLISH in the middle of the exchange is refused (reason >=
    0x80) and the connection closed; the message is not delivered."""
    watcher, _ = env.raw_connect(unique_id("eaw"))
    watcher.subscribe5(("ea/early", 0))
    scram = ScramClient("alice", "correct horse")
    r, first = start(env, scram)
    assert isinstance(first, Auth)
    r.send(Publish("ea/early", b"too soon", 0))
    got = r.wait_closed()
    assert all(not isinstance(p, Connack) or p.return_code >= 0x80 for p in got), got
    assert watcher.no_packet(0.3)


def test_reauthentication_mqtt_4_12_1(env: Env) -> None:
    """Re-authentication [MQTT 4.12.1]: after a successful CONNACK the client sends AUTH 0x19
    (Re-authenticate) with a new client-first; the server answers AUTH 0x18, and after the
    client-final AUTH 0x00 (Success) with a server-final that verifies. The connection stays
    up."""
    r, ack, _ = full_exchange(env, "alice", "correct horse")
    assert ack.return_code == 0
    again = ScramClient("alice", "correct horse")
    r.auth(0x19, auth_props(again.client_first()))
    cont = r.expect(Auth)
    assert cont.reason_code == 0x18 and cont.properties.get(P.AUTHENTICATION_METHOD) == METHOD
    r.auth(0x18, auth_props(again.client_final(cont.properties[P.AUTHENTICATION_DATA])))
    done = r.expect(Auth)
    assert done.reason_code == 0x00, done
    assert again.verify_server_final(done.properties[P.AUTHENTICATION_DATA])
    r.send(Pingreq())
    r.expect(Pingresp)
