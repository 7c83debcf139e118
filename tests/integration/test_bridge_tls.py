"""Bridges over TLS with client certificates, against a real Mosquitto (issue 16, point 5).

(a) Our broker as the edge, bridging over TLS (``bridges.<name>.tls``) to a Mosquitto whose TLS
    listener has ``require_certificate true`` and ``use_identity_as_username true``, in MQTT
    3.1.1 and 5.0: out and in with prefixes at QoS 1; the certificate's CN is the user name
    Mosquitto's ACL applies; without a client certificate, with one from another CA, or when
    our edge does not trust Mosquitto's certificate, the bridge never comes up (and says why);
    ``tls.insecure`` skips the host name check and nothing else.
(b) Mosquitto as the edge, bridging into our broker's TLS listener (``require_certificate``,
    ``use_identity_as_username``) with ``bridge_cafile``/``bridge_certfile``/``bridge_keyfile``,
    3.1.1 and 5.0, both directions with prefixes; without a valid client certificate our broker
    refuses the handshake and Mosquitto's bridge stays down.

Certificates are made at test time by :mod:`tests.integration.tlscerts` (the ``openssl``
command): one CA signing the server certificate (for 127.0.0.1 and localhost) and the client
certificates, and a rogue CA signing a client certificate with the same CN. Mosquitto runs as
its own process with a config written here; its log (stderr, to a file) is what the tests read
of its side. Everything listens on 127.0.0.1, on ports from a bind-to-0 helper.
"""

from __future__ import annotations

import logging
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BrokerThread, base_config

from .brokerproc import free_port
from .conftest import MOSQUITTO
from .helpers import V311, Paho, unique_id, wait_until
from .tlscerts import HAVE_OPENSSL, CertFactory, CertPair

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not HAVE_OPENSSL, reason="needs the openssl command")]

MakeBroker = Callable[[dict[str, Any]], BrokerThread]
HOST = "127.0.0.1"
EDGE_CN = "edge-7"  # our edge's client certificate (the user name at Mosquitto)
MOSQ_CN = "mosq-edge"  # Mosquitto's bridge certificate (the user name at ours)


# -- certificates -----------------------------------------------------------------------------

class PKI:
    """A CA with a server certificate (127.0.0.1, localhost) and the two bridges' client
    certificates; a rogue CA whose client certificate has our edge's CN; a server certificate
    for another host name (signed by the trusted CA)."""

    def __init__(self, folder: Path) -> None:
        self.ca = CertFactory(folder / "ca", "ca")
        self.server = self.ca.server("server")
        self.edge = self.ca.client(EDGE_CN)
        self.mosq_edge = self.ca.client(MOSQ_CN)
        self.rogue_ca = CertFactory(folder / "rogue", "rogue")
        self.rogue_edge = self.rogue_ca.client(EDGE_CN)  # same CN, untrusted issuer
        # a server certificate from the trusted CA for a name that is not 127.0.0.1
        self.elsewhere = self.ca._sign(  # (CertFactory.server is for 127.0.0.1 only)
            "elsewhere", "/CN=elsewhere.invalid",
            "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:elsewhere.invalid\n", None)

    @property
    def cafile(self) -> Path:
        return self.ca.ca.cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("bridge-pki"))


# -- Mosquitto --------------------------------------------------------------------------------

class Mosquitto:
    """A Mosquitto process with the given config text; its log goes to ``log_path``."""

    def __init__(self, folder: Path, name: str, conf: str, ports: list[int]) -> None:
        if not Path(MOSQUITTO).exists():
            pytest.fail(f"{MOSQUITTO} missing: `make test` installs Debian's mosquitto package")
        self.conf_path = folder / f"{name}.conf"
        self.log_path = folder / f"{name}.log"
        # run as whoever we are (root: no drop to the mosquitto user, which could not read
        # the bridge's key under tmp_path); the log to stderr, which goes to log_path
        self.conf_path.write_text("user root\nper_listener_settings false\npersistence false\n"
                                  "log_dest stderr\nlog_timestamp false\n"
                                  "log_type error\nlog_type warning\nlog_type notice\n"
                                  "log_type information\nlog_type subscribe\n" + conf)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf_path)],
                                         stdout=log, stderr=log)
        try:  # (a TLS port is not probed: Mosquitto would log a failed handshake)
            for port in ports:
                wait_until(lambda p=port: self._listening(p), 10, 0.05,  # type: ignore[misc]
                           f"mosquitto {name} listening on {port}")
            wait_until(lambda: " running" in self.log(), 10, 0.05, f"mosquitto {name} running")
        except AssertionError:
            self.stop()
            raise AssertionError(f"mosquitto {name} did not start:\n{self.log()}") from None

    def _listening(self, port: int) -> bool:
        assert self.proc.poll() is None, f"mosquitto exited:\n{self.log()}"
        try:
            socket.create_connection((HOST, port), 0.2).close()
            return True
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, count: int = 1, timeout: float = 10.0) -> str:
        """Wait until ``text`` occurs ``count`` times in the log; return the log."""
        try:
            wait_until(lambda: self.log().count(text) >= count, timeout, 0.05,
                       f"{text!r} x{count} in Mosquitto's log")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the log:\n{self.log()}") from None
        return self.log()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def run_mosquitto(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """``run_mosquitto(name, conf, ports)``: a started Mosquitto; all stopped at the end."""
    started: list[Mosquitto] = []

    def run(name: str, conf: str, ports: list[int]) -> Mosquitto:
        m = Mosquitto(tmp_path, name, conf, ports)
        started.append(m)
        return m

    yield run
    for m in started:
        m.stop()


class Cloud:
    """Mosquitto as the remote of our edge: a plain listener for the test's own clients and a
    TLS listener that requires a client certificate and takes its CN for the user name. The
    ACL lets anonymous clients (the test's) use every topic and user ``edge-7`` only
    ``edge-7/#``: had Mosquitto not taken the certificate's CN for the user name, the bridge
    would be anonymous and could publish anywhere."""

    def __init__(self, run: Callable[..., Mosquitto], pki: PKI, folder: Path) -> None:
        self.port, self.tls_port, self.elsewhere_port = free_port(), free_port(), free_port()
        acl = folder / "cloud.acl"
        acl.write_text(f"topic readwrite #\n\nuser {EDGE_CN}\ntopic readwrite {EDGE_CN}/#\n")
        tls = (f"cafile {pki.cafile}\nrequire_certificate true\n"
               "use_identity_as_username true\n")
        self.mosq = run("cloud", (
            f"allow_anonymous true\nacl_file {acl}\n"
            f"listener {self.port} {HOST}\n"
            f"listener {self.tls_port} {HOST}\n{tls}"
            f"certfile {pki.server.cert}\nkeyfile {pki.server.key}\n"
            f"listener {self.elsewhere_port} {HOST}\n{tls}"  # serves another host's name
            f"certfile {pki.elsewhere.cert}\nkeyfile {pki.elsewhere.key}\n"),
            [self.port])

    def attempts(self) -> int:
        """TCP connections Mosquitto accepted on its TLS listener so far (all our bridge's:
        the TLS port is not probed)."""
        return self.mosq.log().count(f"on port {self.tls_port}.")


@pytest.fixture
def cloud(run_mosquitto: Callable[..., Mosquitto], pki: PKI, tmp_path: Path) -> Cloud:
    return Cloud(run_mosquitto, pki, tmp_path)


# -- our broker -------------------------------------------------------------------------------

def tls_section(pki: PKI, cert: CertPair | None, cafile: Path | None = None,
                **extra: Any) -> dict[str, Any]:
    tls: dict[str, Any] = {"cafile": str(cafile or pki.cafile), **extra}
    if cert is not None:
        tls.update(certfile=str(cert.cert), keyfile=str(cert.key))
    return tls


def edge_config(remote_port: int, topics: list[dict[str, Any]], tls: dict[str, Any],
                protocol: str, client_id: str) -> dict[str, Any]:
    cfg = base_config()
    cfg["bridges"] = {"cloud": {"addresses": [f"{HOST}:{remote_port}"], "protocol": protocol,
                                "client_id": client_id, "topics": topics, "tls": tls,
                                "restart_timeout": [0.2, 0.5]}}
    return cfg


def link_stats(bt: BrokerThread) -> tuple[bool, int]:
    """The edge's one bridge: (connected, connections made so far)."""
    def read() -> tuple[bool, int]:
        assert bt.broker is not None
        stats = bt.broker.bridges.links[0].stats
        return stats.connected, stats.connects

    return bt.call(read)


def last_error(bt: BrokerThread) -> str:
    """The edge's one bridge: BridgeStats.last_error ('' for none)."""
    return bt.call(lambda: bt.broker.bridges.links[0].stats.last_error) or ""  # type: ignore[union-attr]


def subscriber(port: int, *filters: tuple[str, int]) -> Paho:
    p = Paho(unique_id("sub-"), V311)
    p.connect(port)
    assert all(code < 0x80 for code in p.subscribe(*filters))
    return p


def publisher(port: int) -> Paho:
    p = Paho(unique_id("pub-"), V311)
    p.connect(port)
    return p


STATE = "$SYS/broker/connection/cloud/state"


# -- (a) our broker bridged to Mosquitto over TLS ---------------------------------------------

@pytest.mark.parametrize("protocol", ["mqttv311", "mqttv5"])
def test_ours_bridged_to_mosquitto_over_tls_with_a_client_certificate(
        make_broker_thread: MakeBroker, cloud: Cloud, pki: PKI, protocol: str) -> None:
    """Mosquitto requires a client certificate and takes its CN (edge-7) for the user name:
    our edge presents edge-7's certificate and checks Mosquitto's against the CA. Out: ten
    QoS 1 messages, under remote prefix ``edge-7/``, arrive at QoS 1 in order; a message on
    ``forbidden/...`` is dropped by Mosquitto's ACL for user edge-7 (the CN was the user
    name). In: ``edge-7/down/cmd`` at Mosquitto reaches the edge as ``site/down/cmd``, QoS 1.
    The edge's retained state topic says 1."""
    client_id = unique_id("edge-")
    edge = make_broker_thread(edge_config(cloud.tls_port, [
        {"pattern": "up/#", "direction": "out", "qos": 1, "remote_prefix": f"{EDGE_CN}/"},
        {"pattern": "forbidden/#", "direction": "out", "qos": 1},
        {"pattern": "down/#", "direction": "in", "qos": 1, "local_prefix": "site/",
         "remote_prefix": f"{EDGE_CN}/"}],
        tls_section(pki, pki.edge), protocol, client_id))
    # Mosquitto has the bridge, as user edge-7, and its subscription for the "in" rule
    log = cloud.mosq.wait_log(f"{client_id} 1 {EDGE_CN}/down/#")
    [connected] = [line for line in log.splitlines() if f" as {client_id} (" in line]
    assert connected.endswith(f", u'{EDGE_CN}')."), connected
    wait_until(lambda: link_stats(edge)[0], what="the bridge up at the edge")
    at_cloud = subscriber(cloud.port, ("#", 1))
    at_edge = subscriber(edge.port, ("site/#", 1), (STATE, 1))
    pub_edge, pub_cloud = publisher(edge.port), publisher(cloud.port)
    try:
        assert at_edge.messages.wait_topic(STATE).payload == b"1"
        pub_edge.publish("forbidden/x", b"denied by the ACL", qos=1)
        for i in range(10):
            pub_edge.publish(f"up/{i}", str(i).encode(), qos=1)
        pub_cloud.publish(f"{EDGE_CN}/down/cmd", b"open", qos=1)
        got = at_cloud.messages.wait_until(
            lambda ms: sum(m.topic.startswith(f"{EDGE_CN}/up/") for m in ms) >= 10,
            what="the ten messages from the edge")
        # one connection, in order: "forbidden/x" would have come first had it passed
        assert [(m.topic, m.payload, m.qos) for m in got if m.topic != f"{EDGE_CN}/down/cmd"] \
            == [(f"{EDGE_CN}/up/{i}", str(i).encode(), 1) for i in range(10)]
        cmd = at_edge.messages.wait_topic("site/down/cmd")
        assert (cmd.payload, cmd.qos) == (b"open", 1)
        assert link_stats(edge) == (True, 1)
    finally:
        for c in (at_cloud, at_edge, pub_edge, pub_cloud):
            c.close()


NO_CERT, ROGUE_CERT = "no client certificate", "certificate from another CA"
#: why each side fails the handshake: (Mosquitto's log, the TLS alert our edge receives)
REASONS = {NO_CERT: ("peer did not return a certificate", "certificate required"),
           ROGUE_CERT: ("certificate verify failed", "unknown ca")}


def bridge_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("mqttbroker.bridge")]


@pytest.mark.parametrize("case", [NO_CERT, ROGUE_CERT])
@pytest.mark.parametrize("protocol", ["mqttv311", "mqttv5"])
def test_mosquitto_refuses_our_bridge_without_a_valid_client_certificate(
        make_broker_thread: MakeBroker, cloud: Cloud, pki: PKI, protocol: str, case: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """Mosquitto fails the handshake of our bridge when it presents no certificate, or one
    with the right CN from an untrusted CA. The bridge keeps trying (Mosquitto sees three
    connections, each refused for that reason) and never comes up: BridgeStats.connected
    stays false throughout with no connection made, the edge's state topic never says 1 and
    Mosquitto never has the client. The edge says why: BridgeStats.last_error and its log
    carry the TLS alert Mosquitto sent.

    (TLS 1.3, which Mosquitto 2.0 and Python negotiate: the server checks the client's
    certificate after the client has finished its side of the handshake, so the refusal
    reaches the bridge as an error on the established connection, not from connecting.)"""
    caplog.set_level(logging.INFO, logger="mqttbroker.bridge")
    mosquitto_says, alert = REASONS[case]
    client_id = unique_id("edge-")
    cert = None if case == NO_CERT else pki.rogue_edge
    edge = make_broker_thread(edge_config(cloud.tls_port, [
        {"pattern": "up/#", "direction": "out", "qos": 1, "remote_prefix": f"{EDGE_CN}/"}],
        tls_section(pki, cert), protocol, client_id))
    at_edge = subscriber(edge.port, (STATE, 1))
    try:
        def tried_three_times() -> bool:
            assert link_stats(edge) == (False, 0), "the bridge came up"
            return cloud.attempts() >= 3

        wait_until(tried_three_times, 10, 0.05, "three attempts at Mosquitto")
        # each refused for that reason (Mosquitto's "OpenSSL Error[0]: ...::<reason>" lines)
        log = cloud.mosq.wait_log(f"SSL routines::{mosquitto_says}\n", 3)
        assert f"as {client_id} " not in log, log  # Mosquitto never had the client
        assert link_stats(edge) == (False, 0)
        assert all(m.payload == b"0" for m in at_edge.messages.topic(STATE)), \
            at_edge.messages.messages
        why = last_error(edge)
        assert alert in why.lower(), why
        assert any(alert in line.lower() for line in bridge_log(caplog)), \
            f"the edge did not log why it failed (last_error: {why!r}): {bridge_log(caplog)}"
    finally:
        at_edge.close()


def test_our_bridge_refuses_a_mosquitto_it_does_not_trust(
        make_broker_thread: MakeBroker, cloud: Cloud, pki: PKI,
        caplog: pytest.LogCaptureFixture) -> None:
    """The other side of the handshake: our edge checks Mosquitto's certificate against its
    ``cafile``; with the rogue CA there it refuses Mosquitto (certificate verify failed,
    logged and in BridgeStats.last_error), so Mosquitto, which sees the connections, never
    gets a CONNECT, and the bridge stays down."""
    caplog.set_level(logging.INFO, logger="mqttbroker.bridge")
    client_id = unique_id("edge-")
    edge = make_broker_thread(edge_config(cloud.tls_port, [{"pattern": "up/#"}],
                                          tls_section(pki, pki.edge, pki.rogue_ca.ca.cert),
                                          "mqttv311", client_id))
    wait_until(lambda: any("certificate verify failed" in line for line in bridge_log(caplog)),
               what="the edge's log of the failed verification")
    assert link_stats(edge) == (False, 0)
    assert "certificate verify failed" in last_error(edge), last_error(edge)
    wait_until(lambda: cloud.attempts() >= 2, what="Mosquitto seeing the attempts")
    log = cloud.mosq.log()
    assert f"as {client_id} " not in log, log


def test_insecure_skips_the_host_name_check_only(
        make_broker_thread: MakeBroker, cloud: Cloud, pki: PKI,
        caplog: pytest.LogCaptureFixture) -> None:
    """``tls.insecure`` (Mosquitto's ``bridge_insecure``): Mosquitto serves a certificate from
    the trusted CA for ``elsewhere.invalid`` on a listener the bridges reach as 127.0.0.1.
    Without ``insecure`` the edge refuses it (host name mismatch, logged); with it the bridge
    connects and messages pass; ``insecure`` with a CA that did not sign the certificate is
    still refused (the chain is still checked)."""
    caplog.set_level(logging.INFO, logger="mqttbroker.bridge")
    rule = [{"pattern": "up/#", "direction": "out", "qos": 1, "remote_prefix": f"{EDGE_CN}/"}]

    def edge(cafile: Path, insecure: bool) -> BrokerThread:
        return make_broker_thread(edge_config(
            cloud.elsewhere_port, rule, tls_section(pki, pki.edge, cafile, insecure=insecure),
            "mqttv311", unique_id("edge-")))

    strict, insecure, untrusted = (edge(pki.cafile, False), edge(pki.cafile, True),
                                   edge(pki.rogue_ca.ca.cert, True))
    wait_until(lambda: link_stats(insecure)[0], what="the insecure bridge up")

    # (the untrusted chain: OpenSSL names the first problem it meets, here the rogue root
    # Mosquitto sends along; "IP address mismatch" only once the chain is good)
    for bt, why in ((strict, "IP address mismatch"), (untrusted, "certificate verify failed")):
        wait_until(lambda b=bt: "certificate verify failed" in last_error(b),  # type: ignore[misc]
                   what="the refusal in BridgeStats.last_error")
        assert why in last_error(bt), last_error(bt)
        assert link_stats(bt) == (False, 0)
    assert "mismatch" not in last_error(untrusted), last_error(untrusted)
    assert any("IP address mismatch" in line for line in bridge_log(caplog)), bridge_log(caplog)
    at_cloud = subscriber(cloud.port, (f"{EDGE_CN}/#", 1))
    pub = publisher(insecure.port)
    try:
        pub.publish("up/1", b"over an unchecked name", qos=1)
        m = at_cloud.messages.wait_topic(f"{EDGE_CN}/up/1")
        assert (m.payload, m.qos) == (b"over an unchecked name", 1)
    finally:
        at_cloud.close()
        pub.close()


# -- (b) Mosquitto bridged into ours over TLS -------------------------------------------------

def ours_with_tls(pki: PKI) -> dict[str, Any]:
    """Our broker: a plain listener for the test's clients and a TLS listener that requires
    a client certificate and takes its CN for the user name."""
    cfg = base_config()
    cfg["listeners"]["tls"] = {
        "type": "tcp", "bind": f"{HOST}:0", "ssl": True, "certfile": str(pki.server.cert),
        "keyfile": str(pki.server.key), "cafile": str(pki.cafile),
        "require_certificate": True, "use_identity_as_username": True}
    return cfg


def listener_port(bt: BrokerThread, listener: str) -> int:
    assert bt.broker is not None
    return next(p for name, _, p in bt.broker.addresses if name == listener)


def mosquitto_edge_conf(port: int, ours_tls: int, client_id: str, protocol: str, pki: PKI,
                        cert: CertPair | None) -> str:
    """Mosquitto's bridge into ours: out ``up/#`` under remote prefix ``site-9/``, in
    ``cmd/#`` from ``site-9/`` to local ``local/``; its state on its own side only."""
    conf = (f"allow_anonymous true\nlistener {port} {HOST}\n"
            f"connection ours\naddress {HOST}:{ours_tls}\n"
            f"bridge_protocol_version {protocol}\nremote_clientid {client_id}\n"
            f"bridge_cafile {pki.cafile}\n")
    if cert is not None:
        conf += f"bridge_certfile {cert.cert}\nbridge_keyfile {cert.key}\n"
    return conf + ('topic up/# out 1 "" site-9/\ntopic cmd/# in 1 local/ site-9/\n'
                   "notifications true\nnotifications_local_only true\nrestart_timeout 1\n")


def bridge_connection(ours: BrokerThread, client_id: str) -> Any:
    assert ours.broker is not None
    return ours.call(lambda: ours.broker.connections.get(client_id))  # type: ignore[union-attr]


@pytest.mark.parametrize("protocol", ["mqttv311", "mqttv50"])
def test_mosquitto_bridged_into_ours_over_tls_with_a_client_certificate(
        make_broker_thread: MakeBroker, run_mosquitto: Callable[..., Mosquitto], pki: PKI,
        protocol: str) -> None:
    """Mosquitto connects its bridge to our TLS listener with its client certificate (and
    checks ours against the CA). Ours takes the certificate's CN for the user name. Out of
    Mosquitto: five QoS 1 messages on ``up/...`` reach ours as ``site-9/up/...`` at QoS 1 in
    order; into Mosquitto: ``site-9/cmd/open`` at ours reaches Mosquitto as
    ``local/cmd/open`` at QoS 1. Mosquitto's own state topic for the bridge says 1."""
    ours = make_broker_thread(ours_with_tls(pki))
    port, client_id = free_port(), unique_id("mosq-edge-")
    mosq = run_mosquitto("edge", mosquitto_edge_conf(
        port, listener_port(ours, "tls"), client_id, protocol, pki, pki.mosq_edge), [port])
    try:
        wait_until(lambda: bridge_connection(ours, client_id) is not None, 10,
                   what="Mosquitto's bridge connected to ours")
    except AssertionError:
        raise AssertionError(f"Mosquitto's bridge did not connect:\n{mosq.log()}") from None
    conn = bridge_connection(ours, client_id)
    assert ours.call(lambda: (conn.listener, conn.username, conn.bridge)) == (
        "tls", MOSQ_CN, protocol == "mqttv311")  # try_private: a 3.x bridge marks itself
    # its SUBSCRIBE for the "in" rule, at ours
    wait_until(lambda: ours.call(lambda: "site-9/cmd/#" in conn.session.subscriptions),
               what="the bridge's subscription at ours")
    at_ours = subscriber(ours.port, ("site-9/#", 1))
    at_mosq = subscriber(port, ("local/#", 1), (f"$SYS/broker/connection/{client_id}/state", 1))
    pub_mosq, pub_ours = publisher(port), publisher(ours.port)
    try:
        assert at_mosq.messages.wait_topic(
            f"$SYS/broker/connection/{client_id}/state").payload == b"1"
        for i in range(5):
            pub_mosq.publish(f"up/{i}", str(i).encode(), qos=1)
        pub_ours.publish("site-9/cmd/open", b"go", qos=1)
        got = at_ours.messages.wait_until(
            lambda ms: sum(m.topic.startswith("site-9/up/") for m in ms) >= 5,
            what="the five messages from Mosquitto")
        assert [(m.topic, m.payload, m.qos) for m in got if m.topic.startswith("site-9/up/")] \
            == [(f"site-9/up/{i}", str(i).encode(), 1) for i in range(5)]
        cmd = at_mosq.messages.wait_topic("local/cmd/open")
        assert (cmd.payload, cmd.qos) == (b"go", 1)
    finally:
        for c in (at_ours, at_mosq, pub_mosq, pub_ours):
            c.close()


@pytest.mark.parametrize("case", [NO_CERT, ROGUE_CERT])
def test_ours_refuses_mosquittos_bridge_without_a_valid_client_certificate(
        make_broker_thread: MakeBroker, run_mosquitto: Callable[..., Mosquitto], pki: PKI,
        case: str) -> None:
    """Our TLS listener with ``require_certificate`` fails the handshake of Mosquitto's bridge
    when it presents no certificate, or one with a trusted-looking CN from an untrusted CA:
    Mosquitto's bridge gets through its TCP connect and TLS attempt (steps 1 and 2) and is
    closed; it never has a session at ours, and its own state topic for the bridge says 0.
    (Mosquitto retries only every few seconds whatever ``restart_timeout`` says, so one
    refused attempt is watched here; our own bridge's retries are watched above.)"""
    ours = make_broker_thread(ours_with_tls(pki))
    port, client_id = free_port(), unique_id("mosq-edge-")
    cert = None if case == NO_CERT else pki.rogue_edge
    mosq = run_mosquitto("edge", mosquitto_edge_conf(
        port, listener_port(ours, "tls"), client_id, "mqttv311", pki, cert), [port])
    state = f"$SYS/broker/connection/{client_id}/state"
    at_mosq = subscriber(port, (state, 1))
    try:
        log = mosq.wait_log(f"Client local.{client_id} closed its connection.")
        assert "Connecting bridge (step 2) ours" in log, log  # it got as far as TLS
        assert bridge_connection(ours, client_id) is None
        assert ours.call(lambda: not ours.broker.connections)  # type: ignore[union-attr]
        states = at_mosq.messages.wait_for(1)  # (Mosquitto says 0 again at each failure)
        assert all(m.payload == b"0" for m in states), (states, mosq.log())
    finally:
        at_mosq.close()
