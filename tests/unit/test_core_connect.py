"""core.connect: the CONNECT decision without a socket or an event loop.

The step functions are tested with a packet and a config; :class:`Connector` with its real
collaborators (Admission, Registry, Authorizer, a PluginHost without plugins) and a fake
connection that records what it was told. The clock is a parameter (``now=lambda: 100.0``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mqttbroker.auth import Authorizer
from mqttbroker.config import Config, MqttConfig, load_config
from mqttbroker.core.admission import Admission
from mqttbroker.core.connect import (
    PUBLISH_OVERHEAD,
    Connector,
    Refusal,
    Terms,
    check_will,
    client_identifier,
    connack_properties,
    keep_alive,
    negotiate,
    send_window,
    session_expiry,
)
from mqttbroker.core.registry import Registry
from mqttbroker.errors import ProtocolError
from mqttbroker.message import Message
from mqttbroker.metrics import Metrics
from mqttbroker.passwd import hash_password
from mqttbroker.plugins.host import PluginHost
from mqttbroker.protocol.codec import encode
from mqttbroker.protocol.constants import MAX_PACKET_SIZE, ReasonCode
from mqttbroker.protocol.packets import Connect, Packet, Will
from mqttbroker.protocol.properties import PropertyId as Prop
from mqttbroker.router import Router
from mqttbroker.session import Session

V31, V311, V5 = 3, 4, 5
NOW = 100.0


def mqtt(**settings: Any) -> MqttConfig:
    """The ``mqtt`` section with ``settings`` over the defaults."""
    return load_config({"mqtt": settings}).mqtt


def connect(level: int = V311, client_id: str = "c1", clean: bool = True,
            keep: int = 60, **kw: Any) -> Connect:
    name = "MQIsdp" if level == V31 else "MQTT"
    return Connect(name, level, client_id, clean, keep, **kw)


def ids(*made: str) -> Callable[[], str]:
    """A ``new_id`` that hands out ``made`` in order (deterministic, unlike uuid4)."""
    it = iter(made)
    return lambda: next(it)


def refused(result: object) -> Refusal:
    assert isinstance(result, Refusal), result
    return result


def settled(result: object) -> Terms:
    assert isinstance(result, Terms), result
    return result


# -- client identifier [MQTT 3.1.3.1] -----------------------------------------------------------


def test_empty_id_with_clean_session_311_is_assigned_mqtt_3_1_3_6() -> None:
    terms = settled(client_identifier(connect(V311, ""), mqtt(), ids("auto-1")))
    assert terms.client_id == "auto-1"
    assert terms.keep_alive == 60


def test_empty_id_v5_is_assigned_and_told_in_connack_mqtt_3_1_3_6_and_7() -> None:
    # v5 needs no Clean Start for it: an assigned id with a session that may persist
    terms = settled(client_identifier(connect(V5, "", clean=False), mqtt(), ids("auto-2")))
    assert terms.client_id == "auto-2"
    assert terms.props == {Prop.ASSIGNED_CLIENT_IDENTIFIER: "auto-2"}


def test_empty_id_without_clean_session_311_is_refused_0x02_mqtt_3_1_3_8() -> None:
    r = refused(client_identifier(connect(V311, "", clean=False), mqtt(), ids()))
    assert r.code == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID  # 3.1.1: 0x02 Identifier rejected


def test_empty_id_mqtt_31_is_refused_even_with_clean_session() -> None:
    # MQTT 3.1 requires a client id of 1 to 23 characters
    r = refused(client_identifier(connect(V31, "", clean=True), mqtt(), ids()))
    assert r.code == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID


@pytest.mark.parametrize("level", [V311, V5])
def test_empty_id_refused_when_zero_length_ids_are_not_allowed(level: int) -> None:
    cfg = mqtt(allow_zero_length_clientid=False)
    r = refused(client_identifier(connect(level, ""), cfg, ids()))
    assert r.code == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID


def test_client_id_over_max_client_id_length_is_refused_mqtt_3_1_3_5() -> None:
    cfg = mqtt(max_client_id_length=8)
    assert settled(client_identifier(connect(client_id="x" * 8), cfg, ids())).client_id == "x" * 8
    r = refused(client_identifier(connect(client_id="x" * 9), cfg, ids()))
    assert r.code == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
    assert "longer than 8" in r.why


def test_a_client_id_given_is_kept_and_nothing_is_assigned() -> None:
    terms = settled(client_identifier(connect(V5, "sensor-7"), mqtt(), ids()))
    assert (terms.client_id, terms.props) == ("sensor-7", {})


# -- keep-alive [MQTT 3.1.2.10, 3.2.2.3.14] ------------------------------------------------------


@pytest.mark.parametrize("requested", [61, 65535, 0])
def test_v5_keep_alive_over_max_or_zero_gets_server_keep_alive_mqtt_3_2_2_21(
        requested: int) -> None:
    terms = Terms("c1", requested)
    assert keep_alive(connect(V5, keep=requested), mqtt(max_keepalive=60), terms) is None
    assert terms.keep_alive == 60
    assert terms.props == {Prop.SERVER_KEEP_ALIVE: 60}


def test_v5_keep_alive_within_max_is_kept_and_not_told() -> None:
    terms = Terms("c1", 60)
    assert keep_alive(connect(V5, keep=60), mqtt(max_keepalive=60), terms) is None
    assert (terms.keep_alive, terms.props) == (60, {})


@pytest.mark.parametrize("level", [V31, V311])
def test_3x_keep_alive_over_max_is_refused_0x02(level: int) -> None:
    # 3.1/3.1.1 have no Server Keep Alive to tell a shorter one with
    r = refused(keep_alive(connect(level, keep=61), mqtt(max_keepalive=60), Terms("c1", 61)))
    assert r.code == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
    assert keep_alive(connect(level, keep=60), mqtt(max_keepalive=60), Terms("c1", 60)) is None


def test_no_max_keepalive_leaves_every_keep_alive_alone() -> None:
    for level, keep in [(V5, 0), (V5, 65535), (V311, 65535)]:
        terms = Terms("c1", keep)
        assert keep_alive(connect(level, keep=keep), mqtt(), terms) is None
        assert (terms.keep_alive, terms.props) == (keep, {})


def test_negotiate_runs_id_then_keep_alive_then_will() -> None:
    cfg = mqtt(max_keepalive=30, message_size_limit=4)
    terms = settled(negotiate(connect(V5, "", keep=0), cfg, ids("auto-3")))
    assert terms.client_id == "auto-3" and terms.keep_alive == 30
    assert terms.props == {Prop.ASSIGNED_CLIENT_IDENTIFIER: "auto-3", Prop.SERVER_KEEP_ALIVE: 30}
    # the first refusal wins: a bad id is refused before the will is looked at
    big_will = Will("w", b"12345")
    r = refused(negotiate(connect(V311, "", clean=False, will=big_will), cfg, ids()))
    assert r.code == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
    r = refused(negotiate(connect(V311, "c1", keep=10, will=big_will), cfg, ids()))
    assert r.code == ReasonCode.NOT_AUTHORIZED


# -- the will [MQTT 3.1.3.2] ---------------------------------------------------------------------


def test_will_payload_at_message_size_limit_is_accepted() -> None:
    assert check_will(connect(V5, will=Will("w/t", b"x" * 10)), mqtt(message_size_limit=10)) \
        is None


def test_will_over_message_size_limit_v5_is_refused_0x95() -> None:
    r = refused(check_will(connect(V5, will=Will("w/t", b"x" * 11)), mqtt(message_size_limit=10)))
    assert r.code == ReasonCode.PACKET_TOO_LARGE


@pytest.mark.parametrize("level", [V31, V311])
def test_will_over_message_size_limit_3x_is_refused_not_authorized(level: int) -> None:
    # 3.x has no "packet too large": 0x05 Not authorized, as Mosquitto answers
    r = refused(check_will(connect(level, will=Will("w/t", b"x" * 11)),
                           mqtt(message_size_limit=10)))
    assert r.code == ReasonCode.NOT_AUTHORIZED


def test_will_qos_over_maximum_qos_v5_is_refused_0x9b_mqtt_3_2_2_12() -> None:
    cfg = mqtt(max_qos=1)
    assert check_will(connect(V5, will=Will("w/t", b"", qos=1)), cfg) is None
    r = refused(check_will(connect(V5, will=Will("w/t", b"", qos=2)), cfg))
    assert r.code == ReasonCode.QOS_NOT_SUPPORTED


def test_will_retain_without_retain_available_v5_is_refused_0x9a_mqtt_3_2_2_13() -> None:
    cfg = mqtt(retain_available=False)
    assert check_will(connect(V5, will=Will("w/t", b"", retain=False)), cfg) is None
    r = refused(check_will(connect(V5, will=Will("w/t", b"", retain=True)), cfg))
    assert r.code == ReasonCode.RETAIN_NOT_SUPPORTED


@pytest.mark.parametrize("topic", ["w/+", "w/#", ""])
def test_invalid_will_topic_raises_protocol_error_mqtt_3_1_3_11(topic: str) -> None:
    # not a refusal: the connection is closed without CONNACK
    with pytest.raises(ProtocolError):
        check_will(connect(V5, will=Will(topic, b"")), mqtt())


def test_will_topic_deeper_than_max_topic_levels_raises() -> None:
    cfg = mqtt(max_topic_levels=3)
    assert check_will(connect(V311, will=Will("a/b/c", b"")), cfg) is None
    with pytest.raises(ProtocolError) as info:
        check_will(connect(V311, will=Will("a/b/c/d", b"")), cfg)
    assert info.value.code == ReasonCode.TOPIC_NAME_INVALID


def test_no_will_nothing_to_check() -> None:
    assert check_will(connect(V5), mqtt(max_qos=0, retain_available=False,
                                        message_size_limit=1)) is None


# -- session expiry [MQTT 3.1.2.11.2] --------------------------------------------------------------


def cap_at(limit: int) -> Callable[[int], int]:
    return lambda requested: min(requested, limit)


def no_cap(requested: int) -> int:
    return requested


def test_v5_session_expiry_capped_is_told_in_connack() -> None:
    props: dict[int, Any] = {}
    p = connect(V5, properties={Prop.SESSION_EXPIRY_INTERVAL: 3600})
    assert session_expiry(p, cap_at(60), props) == 60
    assert props == {Prop.SESSION_EXPIRY_INTERVAL: 60}


def test_v5_session_expiry_within_cap_is_granted_silently() -> None:
    props: dict[int, Any] = {}
    p = connect(V5, properties={Prop.SESSION_EXPIRY_INTERVAL: 30})
    assert session_expiry(p, cap_at(60), props) == 30
    assert session_expiry(connect(V5), cap_at(60), props) == 0  # absent: 0
    assert props == {}


def test_311_clean_session_0_never_expires_unless_capped() -> None:
    props: dict[int, Any] = {}
    assert session_expiry(connect(V311, clean=False), no_cap, props) == Session.NEVER
    assert session_expiry(connect(V311, clean=False), cap_at(604_800), props) == 604_800
    assert session_expiry(connect(V311, clean=True), cap_at(604_800), props) == 0
    assert props == {}  # 3.1.1 CONNACK has no properties to tell it in


# -- CONNACK properties [MQTT 3.2.2.3] ------------------------------------------------------------


def test_connack_properties_at_their_defaults_are_left_out() -> None:
    cfg = mqtt(receive_maximum=65535, topic_alias_maximum=0)
    assert connack_properties(cfg, "c1", connect(V5)) == {}


def test_connack_properties_with_the_shipped_defaults() -> None:
    assert connack_properties(mqtt(), "c1", connect(V5)) == {
        Prop.RECEIVE_MAXIMUM: 100, Prop.TOPIC_ALIAS_MAXIMUM: 10}


def test_connack_tells_what_the_broker_enforces() -> None:
    cfg = mqtt(receive_maximum=5, max_qos=1, retain_available=False, topic_alias_maximum=7,
               max_packet_size=4096)
    assert connack_properties(cfg, "c1", connect(V5)) == {
        Prop.RECEIVE_MAXIMUM: 5, Prop.MAXIMUM_QOS: 1, Prop.RETAIN_AVAILABLE: 0,
        Prop.TOPIC_ALIAS_MAXIMUM: 7, Prop.MAXIMUM_PACKET_SIZE: 4096}


def test_maximum_qos_0_is_told() -> None:
    props = connack_properties(mqtt(max_qos=0), "c1", connect(V5))
    assert props[Prop.MAXIMUM_QOS] == 0


def test_maximum_packet_size_from_message_size_limit_plus_publish_overhead() -> None:
    assert PUBLISH_OVERHEAD == 65548  # header, longest topic, packet id, property length
    props = connack_properties(mqtt(message_size_limit=1000), "c1", connect(V5))
    assert props[Prop.MAXIMUM_PACKET_SIZE] == 1000 + PUBLISH_OVERHEAD == 66548
    # max_packet_size is smaller still: it is the one told
    props = connack_properties(mqtt(message_size_limit=1000, max_packet_size=5000), "c1",
                               connect(V5))
    assert props[Prop.MAXIMUM_PACKET_SIZE] == 5000


def test_maximum_packet_size_left_out_when_it_is_the_protocol_maximum() -> None:
    cfg = mqtt(max_packet_size=MAX_PACKET_SIZE, message_size_limit=MAX_PACKET_SIZE)
    assert Prop.MAXIMUM_PACKET_SIZE not in connack_properties(cfg, "c1", connect(V5))


def test_response_information_only_when_requested_and_configured() -> None:
    asked = connect(V5, properties={Prop.REQUEST_RESPONSE_INFORMATION: 1})
    assert connack_properties(mqtt(), "dev-1", asked)[Prop.RESPONSE_INFORMATION] \
        == "response/dev-1"
    not_asked = connect(V5, properties={Prop.REQUEST_RESPONSE_INFORMATION: 0})
    assert Prop.RESPONSE_INFORMATION not in connack_properties(mqtt(), "dev-1", not_asked)
    assert Prop.RESPONSE_INFORMATION not in connack_properties(
        mqtt(response_information=""), "dev-1", asked)


# -- the send window [MQTT 3.3.4] -------------------------------------------------------------------


def test_v5_receive_maximum_bounds_the_send_window_mqtt_3_3_4_9() -> None:
    cfg = mqtt(max_inflight_messages=20)
    assert send_window(connect(V5, properties={Prop.RECEIVE_MAXIMUM: 5}), cfg) == 5
    assert send_window(connect(V5, properties={Prop.RECEIVE_MAXIMUM: 500}), cfg) == 20
    assert send_window(connect(V5), cfg) == 20  # absent: 65535


def test_311_send_window_is_the_configured_one() -> None:
    assert send_window(connect(V311), mqtt(max_inflight_messages=7)) == 7


# -- Connector: the steps run for a connection ------------------------------------------------------


class FakeConn:
    """A connection as the Connector sees it (core.connect.Connecting), recording calls."""

    def __init__(self, peer: str = "10.0.0.1:5000", listener: str = "default") -> None:
        self.peer = peer
        self.listener = listener
        self.admitted: bool | None = None
        self.keep_alive = 0
        self.max_out_packet = MAX_PACKET_SIZE
        self.refused: list[tuple[ReasonCode, str]] = []
        self.closes: list[bool] = []
        self.disconnects: list[tuple[ReasonCode, str, bool]] = []
        self.accepted: list[tuple[str, Session, bool, dict[int, Any]]] = []

    @property
    def closed(self) -> bool:
        return bool(self.refused or self.closes or self.disconnects)

    def refuse(self, code: ReasonCode, why: str, quiet: bool = False) -> None:
        self.refused.append((code, why))

    def close(self, publish_will: bool) -> None:
        self.closes.append(publish_will)

    def disconnect(self, code: ReasonCode, why: str, publish_will: bool) -> None:
        self.disconnects.append((code, why, publish_will))

    def suspend_connect(self) -> None:
        raise AssertionError("nothing here should hold a CONNECT")

    def resume_connect(self, finish: Callable[[], None]) -> None:
        raise AssertionError("nothing here should hold a CONNECT")

    def accept(self, client_id: str, session: Session, present: bool, p: Connect,
               props: dict[int, Any]) -> None:
        self.accepted.append((client_id, session, present, dict(props)))

    def encode_fitting(self, packet: Packet) -> bytes | None:
        data = encode(packet, V5)
        return data if len(data) <= self.max_out_packet else None


class Setup:
    """A Connector built as Broker.__init__ builds it, without a broker."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.published: list[Message] = []
        self.admission: Admission[FakeConn] = Admission(config, self.metrics)
        self.registry: Registry[FakeConn] = Registry(
            config, self.metrics, Router(), self.published.append,
            lambda session, expired: None, lambda: None)
        self.access = Authorizer(config.auth, config.topic_check, config.listeners)
        plugins = PluginHost(config.plugins, self.metrics)
        assert not plugins  # no plugin: the password file decides
        self.connector: Connector[FakeConn] = Connector(
            config, self.metrics, self.admission, self.registry, self.access, plugins, {},
            certificate=lambda conn: (False, None), now=lambda: NOW)

    def conn(self, peer: str = "10.0.0.1:5000") -> FakeConn:
        c = FakeConn(peer)
        c.admitted = self.admission.admit(c, NOW)
        return c


def setup(auth: dict[str, Any] | None = None, listener: dict[str, Any] | None = None,
          **settings: Any) -> Setup:
    return Setup(load_config({
        "listeners": {"default": {"bind": "127.0.0.1:0", **(listener or {})}},
        "auth": auth if auth is not None else {"allow-anonymous": True},
        "mqtt": {"max_connection_rate_per_address": 0, **settings},
    }))


def test_connector_refuses_a_connection_over_the_limit_quota_exceeded() -> None:
    s = setup(listener={"max-connections": 1})
    first, second = s.conn(), s.conn("10.0.0.2:5000")
    assert first.admitted is True and second.admitted is False
    s.connector.connect(second, connect(V5, "c2"))
    assert second.refused == [(ReasonCode.QUOTA_EXCEEDED,
                               "listener default is at max-connections 1")]
    assert second.refused[0][1] == s.admission.over_limit(second)
    assert s.registry.sessions == {} and not second.accepted


def test_connector_refusal_from_a_step_is_a_connack() -> None:
    s = setup()
    c = s.conn()
    s.connector.connect(c, connect(V311, "", clean=False))
    assert c.refused == [(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "empty client identifier")]
    assert s.registry.sessions == {}


@pytest.fixture
def passwd(tmp_path: Path) -> str:
    path = tmp_path / "passwd"
    path.write_text(f"alice:{hash_password('s3cret')}\n", encoding="utf-8")
    return str(path)


def test_connector_bad_password_is_refused_and_counts_a_login_failure(passwd: str) -> None:
    s = setup(auth={"allow-anonymous": False, "password-file": passwd})
    c = s.conn()
    s.connector.connect(c, connect(V311, "c1", username="alice", password=b"guess"))
    assert c.refused == [(ReasonCode.BAD_USER_NAME_OR_PASSWORD, "bad user name or password")]
    assert s.metrics.auth_failures == 1
    guard = s.admission.login_failures
    assert guard is not None and guard.failures("10.0.0.1") == 1
    assert s.registry.sessions == {}


def test_connector_anonymous_where_not_allowed_is_not_authorized(passwd: str) -> None:
    s = setup(auth={"allow-anonymous": False, "password-file": passwd})
    c = s.conn()
    s.connector.connect(c, connect(V311, "c1"))
    assert c.refused == [(ReasonCode.NOT_AUTHORIZED, "not authorised")]
    assert s.metrics.auth_failures == 1


def test_connector_good_password_is_accepted_and_forgives_failures(passwd: str) -> None:
    s = setup(auth={"allow-anonymous": False, "password-file": passwd})
    bad = s.conn()
    s.connector.connect(bad, connect(V311, "c1", username="alice", password=b"guess"))
    good = s.conn()
    s.connector.connect(good, connect(V311, "c1", username="alice", password=b"s3cret"))
    assert good.refused == [] and good.accepted[0][0] == "c1"
    guard = s.admission.login_failures
    assert guard is not None and guard.failures("10.0.0.1") == 0


def test_connector_accepts_with_props_and_registers_the_connection() -> None:
    s = setup(max_keepalive=30)
    c = s.conn()
    p = connect(V5, "c1", keep=120, properties={Prop.SESSION_EXPIRY_INTERVAL: 60,
                                                Prop.RECEIVE_MAXIMUM: 3})
    s.connector.connect(c, p)
    assert c.refused == [] and len(c.accepted) == 1
    client_id, session, present, props = c.accepted[0]
    assert (client_id, present) == ("c1", False)
    assert props == {Prop.SERVER_KEEP_ALIVE: 30,
                     **connack_properties(s.config.mqtt, "c1", p)}
    assert s.registry.connections["c1"] is c and s.registry.sessions["c1"] is session
    assert session.expiry_interval == 60
    assert session.max_inflight == 3  # the client's Receive Maximum [MQTT-3.3.4-9]
    assert c.keep_alive == 30
    assert s.metrics.clients_connected == 1


def test_connector_assigns_an_id_to_a_v5_client_that_sent_none_mqtt_3_1_3_6() -> None:
    s = setup()
    c = s.conn()
    s.connector.connect(c, connect(V5, ""))
    client_id, _, _, props = c.accepted[0]
    assert client_id.startswith("auto-") and len(client_id) > len("auto-")
    assert props[Prop.ASSIGNED_CLIENT_IDENTIFIER] == client_id
    assert s.registry.connections[client_id] is c


def test_connector_capped_session_expiry_is_told() -> None:
    s = setup(max_session_expiry_interval=60)
    c = s.conn()
    s.connector.connect(c, connect(V5, "c1", properties={Prop.SESSION_EXPIRY_INTERVAL: 3600}))
    _, session, _, props = c.accepted[0]
    assert session.expiry_interval == 60 and props[Prop.SESSION_EXPIRY_INTERVAL] == 60


def test_connector_takeover_disconnects_the_first_with_session_taken_over_mqtt_3_1_4_3() -> None:
    s = setup()
    first, second = s.conn("10.0.0.1:5000"), s.conn("10.0.0.2:6000")
    s.connector.connect(first, connect(V311, "dup", clean=False))
    s.connector.connect(second, connect(V311, "dup", clean=False))
    assert len(first.disconnects) == 1
    code, why, publish_will = first.disconnects[0]
    assert code == ReasonCode.SESSION_TAKEN_OVER and "10.0.0.2:6000" in why and publish_will
    assert s.registry.connections["dup"] is second
    # clean session 0: the same session goes on, and CONNACK says so [MQTT-3.2.2-2]
    assert second.accepted[0][1] is first.accepted[0][1] and second.accepted[0][2] is True


def test_connector_closes_without_connack_when_none_fits_mqtt_3_1_2_24() -> None:
    s = setup()
    c = s.conn()
    c.max_out_packet = 4  # no CONNACK with properties is this small
    s.connector.connect(c, connect(V5, "c1", properties={Prop.MAXIMUM_PACKET_SIZE: 4}))
    assert c.closes == [False] and not c.accepted and not c.refused
    assert s.registry.sessions == {}  # nothing of the session touched


def test_connector_max_sessions_all_connected_is_quota_exceeded() -> None:
    s = setup(max_sessions=1)
    first, second = s.conn(), s.conn("10.0.0.2:5000")
    s.connector.connect(first, connect(V311, "a"))
    s.connector.connect(second, connect(V311, "b"))
    assert second.refused and second.refused[0][0] == ReasonCode.QUOTA_EXCEEDED
    assert list(s.registry.sessions) == ["a"]


def test_bridge_client_ids_are_reserved() -> None:
    """``$bridge/<name>`` is how the broker's own bridges are known locally: no client may
    take it (it would take a bridge's place)."""
    refusal = client_identifier(Connect("MQTT", 4, "$bridge/cloud", True, 60), load_config(None).mqtt,
                                lambda: "auto-x")
    assert isinstance(refusal, Refusal) and refusal.code == 0x85
