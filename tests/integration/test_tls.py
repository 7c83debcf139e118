"""TLS listeners: server certificates, TLS 1.2 minimum, client certificates, SIGHUP reload.

Certificates are made at test time by :mod:`tests.integration.tlscerts` (a throwaway CA, a
server certificate for 127.0.0.1, client certificates with a CN); nothing secret is stored.
Real clients: paho-mqtt (``tls_set``), amqtt (``mqtts://``) and a raw codec client over an
``ssl`` socket. The reload tests run the broker in-process (``Broker.reload()``) and as a
process sent SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mqttbroker.broker import Broker
from mqttbroker.config import load_config
from mqttbroker.errors import ConfigError
from mqttbroker.protocol.packets import Connack
from mqttbroker.transports.tls import ListenerTLS
from tests.conftest import BrokerThread

from .brokerproc import ROOT, BrokerProc, broker_procs
from .helpers import (
    HOST,
    TIMEOUT,
    ConnectionClosed,
    Paho,
    RawClient,
    amqtt_receive,
    unique_id,
    wait_until,
)
from .tlscerts import HAVE_OPENSSL, CertFactory, CertPair, client_context, peer_serial

pytestmark = pytest.mark.skipif(not HAVE_OPENSSL, reason="needs the openssl command")

#: what a client sees when the broker refuses its TLS handshake (TLS 1.3 reports a refused
#: client certificate only at the client's first read)
REFUSED = (ssl.SSLError, ConnectionClosed, ConnectionResetError, BrokenPipeError)


# -- certificates -----------------------------------------------------------------------------

class PKI:
    """A CA with a server certificate and client certificates, and a second, untrusted CA."""

    def __init__(self, folder: Path) -> None:
        self.ca = CertFactory(folder / "ca", "ca")
        self.server = self.ca.server("server", serial=101)
        self.alice = self.ca.client("alice")
        self.bob = self.ca.client("bob")
        self.rogue_ca = CertFactory(folder / "rogue", "rogue")
        self.mallory = self.rogue_ca.client("mallory")

    @property
    def cafile(self) -> Path:
        return self.ca.ca.cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


def tls_listener(pki: PKI, **extra: Any) -> dict[str, Any]:
    return {"type": "tcp", "bind": f"{HOST}:0", "ssl": True, "certfile": str(pki.server.cert),
            "keyfile": str(pki.server.key), "cafile": str(pki.cafile), **extra}


def config(*listeners: dict[str, Any], **top: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "listeners": {f"l{i}": lst for i, lst in enumerate(listeners)},
        "sys_interval": 0,
        "auth": {"allow-anonymous": True},
    }
    cfg.update(top)
    return cfg


def port_of(bt: BrokerThread, listener: str) -> int:
    assert bt.broker is not None
    return next(p for name, _, p in bt.broker.addresses if name == listener)


@pytest.fixture
def raw_clients() -> Iterator[Callable[..., RawClient]]:
    """``make(port, ctx)``: a raw MQTT client over TLS (handshake done); all closed at the end."""
    made: list[RawClient] = []

    def make(port: int, ctx: ssl.SSLContext, level: int = 4) -> RawClient:
        c = RawClient(port, level)
        made.append(c)
        c.sock = ctx.wrap_socket(c.sock, server_hostname=HOST)
        return c

    yield make
    for c in made:
        with contextlib.suppress(OSError):
            c.sock.close()


def tls_connect(make: Callable[..., RawClient], port: int, ctx: ssl.SSLContext,
                **kw: Any) -> tuple[RawClient, Connack]:
    c = make(port, ctx)
    return c, c.connect(unique_id("tls"), **kw)


def refused(make: Callable[..., RawClient], port: int, ctx: ssl.SSLContext) -> BaseException:
    """The error a client gets when the broker refuses its handshake (fails if it connects)."""
    try:
        _, ack = tls_connect(make, port, ctx)
    except REFUSED as exc:
        return exc
    raise AssertionError(f"the broker accepted the connection: {ack!r}")


def client_ctx(pki: PKI, cert: CertPair | None = None,
               max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = client_context(pki.cafile, cert)
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


TLS_VERSIONS = pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])


# -- serving TLS ------------------------------------------------------------------------------

def test_paho_over_tls_and_plain_tcp_side_by_side(
        pki: PKI, make_broker_thread: Callable[[dict[str, Any]], BrokerThread]) -> None:
    """paho-mqtt with ``tls_set(ca_certs=...)`` on the TLS listener and a plain client on the
    TCP listener of the same broker exchange messages both ways."""
    bt = make_broker_thread(config({"type": "tcp", "bind": f"{HOST}:0"}, tls_listener(pki)))
    tls_client, plain = Paho(unique_id("ptls")), Paho(unique_id("pplain"))
    try:
        tls_client.client.tls_set(ca_certs=str(pki.cafile))
        tls_client.connect(port_of(bt, "l1"))
        plain.connect(port_of(bt, "l0"))
        tls_client.subscribe(("to/tls", 1))
        plain.subscribe(("to/plain", 1))
        plain.publish("to/tls", b"over tcp", qos=1)
        tls_client.publish("to/plain", b"over tls", qos=1)
        assert [m.payload for m in tls_client.messages.wait_for(1)] == [b"over tcp"]
        assert [m.payload for m in plain.messages.wait_for(1)] == [b"over tls"]
        sock = tls_client.client.socket()
        assert isinstance(sock, ssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        tls_client.close()
        plain.close()


async def test_amqtt_over_mqtts(pki: PKI) -> None:
    """amqtt's MQTTClient over ``mqtts://`` with ``cafile``: subscribe, publish, receive."""
    from amqtt.client import MQTTClient  # type: ignore[import-untyped]

    broker = Broker(config(tls_listener(pki)))
    await broker.start()
    c = MQTTClient(client_id=unique_id("amqtts"),
                   config={"auto_reconnect": False, "keep_alive": 60})
    try:
        await asyncio.wait_for(
            c.connect(f"mqtts://{HOST}:{broker.port}/", cafile=str(pki.cafile)), TIMEOUT)
        assert await asyncio.wait_for(c.subscribe([("amqtt/tls", 1)]), TIMEOUT) == [1]
        await asyncio.wait_for(c.publish("amqtt/tls", b"secret", qos=1), TIMEOUT)
        msgs = await amqtt_receive(c, 1)
        assert [(m.topic, m.payload, m.qos) for m in msgs] == [("amqtt/tls", b"secret", 1)]
        conn = next(iter(broker.connections.values()))
        assert conn.transport is not None
        assert conn.transport.get_extra_info("ssl_object") is not None
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(c.disconnect(), TIMEOUT)
        await broker.shutdown()


def test_client_that_does_not_trust_the_server_fails(
        pki: PKI, make_broker_thread: Callable[[dict[str, Any]], BrokerThread],
        raw_clients: Callable[..., RawClient]) -> None:
    """A client trusting another CA refuses the server certificate: verification is real."""
    bt = make_broker_thread(config(tls_listener(pki)))
    ctx = client_context(pki.rogue_ca.ca.cert)
    with pytest.raises(ssl.SSLCertVerificationError):
        raw_clients(bt.port, ctx)


def test_handshake_timeout_is_the_connect_timeout(
        pki: PKI, make_broker_thread: Callable[[dict[str, Any]], BrokerThread]) -> None:
    """A socket that never starts its TLS handshake is closed after mqtt.connect_timeout
    (it never reaches the MQTT layer, whose CONNECT timer would otherwise close it)."""
    bt = make_broker_thread(config(tls_listener(pki), mqtt={"connect_timeout": 0.5}))
    with socket.create_connection((HOST, bt.port), timeout=TIMEOUT) as s:
        t0 = time.monotonic()
        s.settimeout(TIMEOUT)
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(1) == b""
        assert time.monotonic() - t0 < 3.0


# -- TLS versions -----------------------------------------------------------------------------

def _tls11_client(pki: PKI) -> ssl.SSLContext:
    ctx = client_ctx(pki)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 allows TLS < 1.2 only at level 0
    return ctx


def _tls11_possible(pki: PKI) -> bool:
    """Can this machine's OpenSSL still speak TLS 1.1 at all? (A one-shot local server that
    allows it answers a TLS 1.1 client.) Without that, a refusal would prove nothing."""
    try:
        client = _tls11_client(pki)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.minimum_version = ssl.TLSVersion.TLSv1_1
        server.set_ciphers("DEFAULT:@SECLEVEL=0")
        server.load_cert_chain(str(pki.server.cert), str(pki.server.key))
    except (ssl.SSLError, ValueError):
        return False
    with socket.create_server((HOST, 0)) as listener:
        listener.settimeout(TIMEOUT)

        def serve() -> None:
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                with server.wrap_socket(conn, server_side=True):
                    pass

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=TIMEOUT) as raw, \
                    client.wrap_socket(raw, server_hostname=HOST) as tls:
                return tls.version() == "TLSv1.1"
        except OSError:
            return False
        finally:
            t.join(TIMEOUT)


def test_tls_1_2_is_the_minimum(
        pki: PKI, make_broker_thread: Callable[[dict[str, Any]], BrokerThread],
        raw_clients: Callable[..., RawClient]) -> None:
    """Every TLS listener's context refuses anything below TLS 1.2, and a real TLS 1.1 client
    (when this OpenSSL can still make one) fails its handshake."""
    bt = make_broker_thread(config(tls_listener(pki)))
    tls = bt.call(lambda: bt.broker._tls["l0"])  # type: ignore[union-attr]
    assert tls.context.minimum_version == ssl.TLSVersion.TLSv1_2
    ok, ack = tls_connect(raw_clients, bt.port, client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2))
    assert ack.return_code == 0 and ok.sock.version() == "TLSv1.2"  # type: ignore[attr-defined]
    if not _tls11_possible(pki):
        pytest.skip("this OpenSSL cannot make a TLS 1.1 client; the minimum is checked above")
    refused(raw_clients, bt.port, _tls11_client(pki))


def test_tls_version_raises_the_minimum_to_1_3(
        pki: PKI, make_broker_thread: Callable[[dict[str, Any]], BrokerThread],
        raw_clients: Callable[..., RawClient]) -> None:
    bt = make_broker_thread(config(tls_listener(pki, **{"tls-version": "tlsv1.3"})))
    refused(raw_clients, bt.port, client_ctx(pki, max_version=ssl.TLSVersion.TLSv1_2))
    c, ack = tls_connect(raw_clients, bt.port, client_ctx(pki))
    assert ack.return_code == 0 and c.sock.version() == "TLSv1.3"  # type: ignore[attr-defined]


# -- client certificates ----------------------------------------------------------------------

@TLS_VERSIONS
def test_require_certificate(
        pki: PKI, make_broker_thread: Callable[[dict[str, Any]], BrokerThread],
        raw_clients: Callable[..., RawClient], version: ssl.TLSVersion) -> None:
    """``require-certificate: true``: no certificate, or one from another CA, fails the
    handshake; a certificate signed by ``cafile`` connects."""
    bt = make_broker_thread(config(tls_listener(pki, **{"require-certificate": True})))
    refused(raw_clients, bt.port, client_ctx(pki, max_version=version))
    refused(raw_clients, bt.port, client_ctx(pki, pki.mallory, max_version=version))
    c, ack = tls_connect(raw_clients, bt.port, client_ctx(pki, pki.alice, max_version=version))
    assert ack.return_code == 0
    c.ping()
    assert bt.call(lambda: len(bt.broker.connections)) == 1  # type: ignore[union-attr]


def test_optional_certificate_is_verified_when_presented(
        pki: PKI, make_broker_thread: Callable[[dict[str, Any]], BrokerThread],
        raw_clients: Callable[..., RawClient]) -> None:
    """Without require-certificate (amqtt's behaviour with a CA): no certificate is fine, a
    valid one is fine, one from an untrusted CA fails the handshake."""
    bt = make_broker_thread(config(tls_listener(pki)))
    assert tls_connect(raw_clients, bt.port, client_ctx(pki))[1].return_code == 0
    assert tls_connect(raw_clients, bt.port, client_ctx(pki, pki.bob))[1].return_code == 0
    refused(raw_clients, bt.port, client_ctx(pki, pki.mallory))


def test_use_identity_as_username(
        pki: PKI, make_broker_thread: Callable[[dict[str, Any]], BrokerThread],
        raw_clients: Callable[..., RawClient]) -> None:
    """The certificate's CN is the user name: it replaces the CONNECT's (and needs no
    password, even with anonymous clients refused), and the ACLs apply to it."""
    bt = make_broker_thread(config(
        tls_listener(pki, **{"require-certificate": True, "use-identity-as-username": True}),
        auth={"allow-anonymous": False},
        **{"topic-check": {"enabled": True, "acl": {"alice": ["alice/#"], "bob": ["bob/#"]}}}))
    c, ack = tls_connect(raw_clients, bt.port, client_ctx(pki, pki.alice),
                         username="bob", password=b"whatever")
    assert ack.return_code == 0
    users = bt.call(lambda: [conn.username for conn in bt.broker.connections.values()])  # type: ignore[union-attr]
    assert users == ["alice"]
    assert c.subscribe(("alice/x", 0), ("bob/x", 0)) == [0, 0x80]
    c2, ack2 = tls_connect(raw_clients, bt.port, client_ctx(pki, pki.bob))  # no user name
    assert ack2.return_code == 0
    assert c2.subscribe(("bob/#", 0)) == [0]


def test_use_identity_as_username_without_a_certificate_is_refused(
        pki: PKI, make_broker_thread: Callable[[dict[str, Any]], BrokerThread],
        raw_clients: Callable[..., RawClient]) -> None:
    """With certificates optional, a client that presents none cannot be identified: CONNACK
    4 (bad user name or password), as Mosquitto answers; its CONNECT user name is not used."""
    bt = make_broker_thread(config(tls_listener(pki, **{"use-identity-as-username": True})))
    c, ack = tls_connect(raw_clients, bt.port, client_ctx(pki), username="alice",
                         password=b"x")
    assert ack.return_code == 4
    c.wait_closed()
    _, ack3 = tls_connect(raw_clients, bt.port, client_ctx(pki, pki.alice))
    assert ack3.return_code == 0


# -- reload -----------------------------------------------------------------------------------

def _install(src: CertPair, dst: CertPair) -> None:
    """Replace dst's files with src's the way an operator should: write aside, then rename."""
    for a, b in ((src.cert, dst.cert), (src.key, dst.key)):
        tmp = b.with_suffix(".new")
        shutil.copyfile(a, tmp)
        os.replace(tmp, b)


@pytest.fixture
def live(pki: PKI, tmp_path: Path) -> CertPair:
    """The files a broker is configured with (a copy of the server certificate, serial 101),
    for a test to replace."""
    live = CertPair(tmp_path / "live.crt", tmp_path / "live.key", pki.server.serial)
    _install(pki.server, live)
    return live


def test_reload_swaps_certificates_and_keeps_clients(
        pki: PKI, live: CertPair, make_broker_thread: Callable[[dict[str, Any]], BrokerThread],
        raw_clients: Callable[..., RawClient]) -> None:
    """``Broker.reload()``: new handshakes get the new certificate, the connected client keeps
    its connection; files that do not load leave the previous certificate serving."""
    bt = make_broker_thread(config(tls_listener(pki, certfile=str(live.cert),
                                                keyfile=str(live.key))))
    old, ack = tls_connect(raw_clients, bt.port, client_ctx(pki))
    assert ack.return_code == 0
    assert peer_serial(bt.port, pki.cafile) == 101
    _install(pki.ca.server("server-202", serial=202), live)
    assert bt.call(bt.broker.reload) is True  # type: ignore[union-attr]
    assert peer_serial(bt.port, pki.cafile) == 202
    old.ping()
    # a certificate whose key is another one's: refused, the last good one keeps serving
    shutil.copyfile(pki.ca.server("server-303", serial=303).cert, live.cert)
    assert bt.call(bt.broker.reload) is False  # type: ignore[union-attr]
    assert peer_serial(bt.port, pki.cafile) == 202
    old.ping()
    _, ack = tls_connect(raw_clients, bt.port, client_ctx(pki))
    assert ack.return_code == 0


def test_reload_replaces_the_client_ca(
        pki: PKI, tmp_path: Path, make_broker_thread: Callable[[dict[str, Any]], BrokerThread],
        raw_clients: Callable[..., RawClient]) -> None:
    """A new ``cafile`` replaces the old one (not added to it): after the reload, clients of
    the old CA are refused and clients of the new one accepted; connected ones stay."""
    cafile = tmp_path / "clients-ca.crt"
    shutil.copyfile(pki.cafile, cafile)
    bt = make_broker_thread(config(tls_listener(pki, cafile=str(cafile),
                                                **{"require-certificate": True})))
    alice, ack = tls_connect(raw_clients, bt.port, client_ctx(pki, pki.alice))
    assert ack.return_code == 0
    refused(raw_clients, bt.port, client_ctx(pki, pki.mallory))
    shutil.copyfile(pki.rogue_ca.ca.cert, cafile)
    assert bt.call(bt.broker.reload) is True  # type: ignore[union-attr]
    refused(raw_clients, bt.port, client_ctx(pki, pki.bob))
    assert tls_connect(raw_clients, bt.port, client_ctx(pki, pki.mallory))[1].return_code == 0
    alice.ping()


class _Authorizer:
    """Stands in for the authorizer, to see that reload() calls its reload()."""

    def __init__(self, real: Any, outcome: str) -> None:
        self.real, self.outcome, self.reloads = real, outcome, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def reload(self) -> bool:
        self.reloads += 1
        if self.outcome == "raises":
            raise ConfigError([], None)
        return self.outcome == "ok"


@pytest.mark.parametrize("outcome", ["ok", "refuses", "raises"])
async def test_reload_reloads_the_authorizer(outcome: str) -> None:
    """reload() calls ``authorizer.reload()`` (password and ACL files); one that returns
    False or raises makes it report False, and is never raised further."""
    broker = Broker(config({"type": "tcp", "bind": f"{HOST}:0"}))
    await broker.start()
    try:
        assert broker.reload() is True  # no TLS listener, no password or ACL file
        stub = _Authorizer(broker.authorizer, outcome)
        broker.authorizer = stub  # type: ignore[assignment]
        assert broker.reload() is (outcome == "ok")
        assert stub.reloads == 1
    finally:
        await broker.shutdown()


def _tls_broker_proc(make: Callable[..., BrokerProc], pki: PKI, live: CertPair) -> BrokerProc:
    b = make()
    b.config_path.write_text(yaml.safe_dump(config(
        tls_listener(pki, bind=f"{HOST}:{b.port}", certfile=str(live.cert),
                     keyfile=str(live.key))), sort_keys=False))
    return b


def test_sighup_reloads_certificates_in_a_running_broker(
        pki: PKI, live: CertPair, tmp_path: Path,
        raw_clients: Callable[..., RawClient]) -> None:
    """``mqttbroker serve``: replace the certificate files, SIGHUP. The broker keeps running,
    the connected client keeps its connection (PINGREQ answered, and its messages still reach
    a client of the new certificate), new connections get the new certificate. A SIGHUP with
    broken files keeps the last good certificate; SIGTERM still exits 0."""
    with broker_procs(tmp_path) as make:
        b = _tls_broker_proc(make, pki, live).start()
        old, ack = tls_connect(raw_clients, b.port, client_ctx(pki))
        assert ack.return_code == 0
        assert peer_serial(b.port, pki.cafile) == 101

        _install(pki.ca.server("server-404", serial=404), live)
        b.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        wait_until(lambda: "reload: listener l0: certificates loaded" in b.log_text(),
                   timeout=10)
        assert b.running
        assert peer_serial(b.port, pki.cafile) == 404
        old.ping()
        new, ack = tls_connect(raw_clients, b.port, client_ctx(pki))
        assert ack.return_code == 0
        assert new.subscribe(("hup/#", 1)) == [1]
        old.publish("hup/x", b"still here", qos=1)
        got = new.recv()
        assert getattr(got, "payload", None) == b"still here"

        live.key.write_text("not a key\n")
        b.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        wait_until(lambda: "keeps its previous certificates" in b.log_text(), timeout=10)
        assert b.running
        assert peer_serial(b.port, pki.cafile) == 404
        old.ping()
        assert b.terminate() == 0, b.log_tail()
        log = b.log_text()
        assert "received SIGHUP, reloading" in log
        assert "listeners.l0.keyfile" in log


def test_sighup_reloads_password_and_acl_files(
        pki: PKI, tmp_path: Path, raw_clients: Callable[..., RawClient]) -> None:
    """``mqttbroker serve`` on TLS with a password file and an ACL file: a user added with
    ``mqttbroker passwd`` gets in only after SIGHUP, and a widened ACL applies to the client
    that stayed connected through it."""
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"

    def add_user(user: str, password: str) -> None:
        subprocess.run([sys.executable, "-m", "mqttbroker", "passwd", "--password", password,
                        str(passwd), user], cwd=ROOT, check=True, capture_output=True,
                       timeout=30)

    add_user("alice", "alice-pw")
    acl.write_text("user alice\ntopic readwrite alice/#\n")
    with broker_procs(tmp_path) as make:
        b = make()
        b.config_path.write_text(yaml.safe_dump(config(
            tls_listener(pki, bind=f"{HOST}:{b.port}"),
            auth={"allow-anonymous": False, "password-file": str(passwd),
                  "acl-file": str(acl)}), sort_keys=False))
        b.start()
        ctx = client_ctx(pki)
        alice, ack = tls_connect(raw_clients, b.port, ctx, username="alice",
                                 password=b"alice-pw")
        assert ack.return_code == 0
        assert alice.subscribe(("alice/x", 0), ("shared/x", 0)) == [0, 0x80]
        add_user("bob", "bob-pw")
        acl.write_text("user alice\ntopic readwrite alice/#\ntopic read shared/#\n")
        assert tls_connect(raw_clients, b.port, ctx, username="bob",
                           password=b"bob-pw")[1].return_code == 4  # not yet
        b.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        wait_until(lambda: "received SIGHUP" in b.log_text(), timeout=10)

        def bob_gets_in() -> bool:
            _, ack = tls_connect(raw_clients, b.port, ctx, username="bob", password=b"bob-pw")
            return ack.return_code == 0

        wait_until(bob_gets_in, timeout=10)
        alice.ping()
        assert alice.subscribe(("shared/x", 0)) == [0]
        assert b.terminate() == 0, b.log_tail()


# -- configuration errors ---------------------------------------------------------------------

def _listener_error(pki: PKI, **over: Any) -> ConfigError:
    cfg = load_config(config(tls_listener(pki, **over)))
    with pytest.raises(ConfigError) as info:
        ListenerTLS(cfg.listeners[0])
    return info.value


def test_key_that_is_not_the_certificates_is_named(pki: PKI) -> None:
    err = _listener_error(pki, keyfile=str(pki.alice.key))
    assert err.key == "listeners.l0.keyfile"
    assert "is not the private key of the certificate" in str(err)


def test_file_that_is_not_a_certificate_is_named(pki: PKI, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    assert _listener_error(pki, certfile=str(junk)).key == "listeners.l0.certfile"
    assert _listener_error(pki, certfile=str(pki.server.key)).key == "listeners.l0.certfile"
    assert _listener_error(pki, keyfile=str(pki.server.cert)).key == "listeners.l0.keyfile"
    assert _listener_error(pki, cafile=str(junk)).key == "listeners.l0.cafile"


def test_encrypted_key_is_refused_without_prompting(pki: PKI, tmp_path: Path) -> None:
    enc = tmp_path / "enc.key"
    subprocess.run(["openssl", "pkey", "-in", str(pki.server.key), "-aes256", "-passout",
                    "pass:secret", "-out", str(enc)], check=True, capture_output=True,
                   timeout=30)
    err = _listener_error(pki, keyfile=str(enc))
    assert err.key == "listeners.l0.keyfile" and "encrypted" in str(err)


def test_key_gone_since_validation_is_named(pki: PKI, tmp_path: Path) -> None:
    """A file removed after the config was checked (at start, or before a reload)."""
    key = tmp_path / "gone.key"
    shutil.copyfile(pki.server.key, key)
    lc = load_config(config(tls_listener(pki, keyfile=str(key)))).listeners[0]
    key.unlink()
    with pytest.raises(ConfigError) as info:
        ListenerTLS(lc)
    assert info.value.key == "listeners.l0.keyfile" and "cannot read" in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_key_is_named(pki: PKI, tmp_path: Path) -> None:
    key = tmp_path / "locked.key"
    shutil.copyfile(pki.server.key, key)
    key.chmod(0)
    err = _listener_error(pki, keyfile=str(key))
    assert err.key == "listeners.l0.keyfile" and "cannot read" in str(err)


@pytest.mark.parametrize("extra,key,text", [
    ({"require-certificate": True, "cafile": None}, "require-certificate", "needs cafile"),
    ({"use-identity-as-username": True, "ssl": False}, "use-identity-as-username",
     "needs ssl: true"),
    ({"tls-version": "tlsv1.1"}, "tls-version", "must be one of tlsv1.2, tlsv1.3"),
])
def test_client_certificate_keys_are_checked(pki: PKI, extra: dict[str, Any], key: str,
                                              text: str) -> None:
    listener = {k: v for k, v in tls_listener(pki, **extra).items() if v is not None}
    with pytest.raises(ConfigError) as info:
        load_config(config(listener))
    assert info.value.key == f"listeners.l0.{key}" and text in str(info.value)


def test_tls_keys_hbmqtt_and_mosquitto_spellings(pki: PKI, tmp_path: Path) -> None:
    """An hbmqtt-style file (``ssl: on``, file names relative to the config file, ``capath``)
    with Mosquitto's underscore names and ``TLSv1.3`` loads and serves."""
    shutil.copytree(pki.ca.folder, tmp_path / "certs")
    path = tmp_path / "broker.yaml"
    path.write_text(
        "listeners:\n"
        "  default:\n"
        "    type: tcp\n"
        "    max-connections: 10\n"
        "  secure:\n"
        "    bind: 127.0.0.1:0\n"
        "    ssl: on\n"
        "    certfile: certs/server.crt\n"
        "    keyfile: certs/server.key\n"
        "    capath: certs\n"
        "    require_certificate: true\n"
        "    use_identity_as_username: true\n"
        "    tls_version: TLSv1.3\n")
    lc = load_config(path).listeners[0]
    assert (lc.name, lc.ssl, lc.require_certificate, lc.use_identity_as_username,
            lc.tls_version) == ("secure", True, True, True, "tlsv1.3")
    assert lc.certfile == str(tmp_path / "certs" / "server.crt")
    assert lc.capath == str(tmp_path / "certs")
    assert ListenerTLS(lc).context.minimum_version == ssl.TLSVersion.TLSv1_3


def test_serve_reports_a_bad_key_naming_the_listener_key(pki: PKI, tmp_path: Path) -> None:
    """``mqttbroker serve`` with a key that is not the certificate's: exit 2 and one line
    naming ``listeners.NAME.keyfile``; ``check-config`` finds it too."""
    path = tmp_path / "bad.yaml"
    listener = tls_listener(pki, keyfile=str(pki.bob.key))
    path.write_text(yaml.safe_dump({"listeners": {"secure": listener}, "sys_interval": 0}))
    result = subprocess.run([sys.executable, "-m", "mqttbroker", "serve", "-c", str(path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 2, result.stderr
    assert "listeners.secure.keyfile: " in result.stderr
    assert "is not the private key of the certificate" in result.stderr
    check = subprocess.run([sys.executable, "-m", "mqttbroker", "check-config", str(path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert check.returncode == 1
    assert check.stdout.startswith(f"{path}: listeners.secure.keyfile: "), check.stdout
