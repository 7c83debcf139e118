"""Authentication and authorisation against a real broker over real sockets: password files
made by the real ``mosquitto_passwd`` (and by ``mqttbroker passwd``, read by the real Mosquitto
too), hbmqtt's sha512-crypt lines, anonymous access per listener, the CONNACK codes of 3.1,
3.1.1 and 5.0, and a Mosquitto ACL file: SUBACK/PUBACK codes, deliveries checked per topic,
deny precedence, patterns, the anonymous section, ``$SYS``, retained messages, wills, resumed
sessions and reload."""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mqttbroker.broker import Broker
from mqttbroker.cli import cli
from mqttbroker.config import load_config
from mqttbroker.errors import ConfigError
from mqttbroker.passwd import sha512_crypt
from mqttbroker.protocol.packets import Publish, Will
from tests.conftest import BrokerThread, base_config

from .brokerproc import broker_procs
from .helpers import Paho, RawClient, protocols, unique_id
from .v5helpers import RawV5

ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MQTTBROKER = str(Path(sys.executable).with_name("mqttbroker"))
USERS = ("admin", "alice", "bob", "carol")
FAILURE = 0x80

ACL = """
# anonymous clients
topic read public/#
topic deny public/secret
topic write anon/in

user admin
topic readwrite #
topic read $SYS/#

user alice
topic readwrite alice/#
topic read public/#
topic write inbox/+

user bob
topic read #
topic deny bob/private/#

user carol
topic read carol/#

pattern readwrite devices/%c/#
pattern read users/%u/#
"""

MakeBroker = Callable[[Any], BrokerThread]


def pw(user: str) -> str:
    return f"{user}-pw"


def run_mosquitto_passwd(*args: str) -> None:
    """The real mosquitto_passwd; missing, the test fails (it is never skipped)."""
    if not Path(MOSQUITTO_PASSWD).exists():
        pytest.fail(f"{MOSQUITTO_PASSWD} missing: it comes with Debian's mosquitto package, "
                    "which `make test` (or `make peers`) installs")
    subprocess.run([MOSQUITTO_PASSWD, *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def passwd_file(tmp_path: Path) -> Path:
    """admin, alice, bob, carol with password '<user>-pw', written by mosquitto_passwd."""
    path = tmp_path / "passwd"
    run_mosquitto_passwd("-c", "-b", str(path), USERS[0], pw(USERS[0]))
    for user in USERS[1:]:
        run_mosquitto_passwd("-b", str(path), user, pw(user))
    return path


@pytest.fixture
def acl_file(tmp_path: Path) -> Path:
    path = tmp_path / "acl"
    path.write_text(ACL)
    return path


def auth_config(passwd: Path | None = None, acl: Path | None = None, *,
                anonymous: bool | None = None, **auth: Any) -> dict[str, Any]:
    cfg = base_config()
    section: dict[str, Any] = dict(auth)
    if anonymous is not None:
        section["allow-anonymous"] = anonymous
    if passwd is not None:
        section["password-file"] = str(passwd)
    if acl is not None:
        section["acl-file"] = str(acl)
    cfg["auth"] = section
    return cfg


@pytest.fixture
def acl_broker(make_broker_thread: MakeBroker, passwd_file: Path,
               acl_file: Path) -> BrokerThread:
    return make_broker_thread(auth_config(passwd_file, acl_file, anonymous=True))


@pytest.fixture
def raws() -> Iterator[list[RawClient]]:
    made: list[RawClient] = []
    yield made
    for r in made:
        r.close()


def raw3(port: int, made: list[RawClient], user: str | None = None, *,
         cid: str | None = None, clean: bool = True, will: Will | None = None) -> RawClient:
    """A connected 3.1.1 raw client (user's password is '<user>-pw')."""
    r = RawClient(port, 4)
    made.append(r)
    ack = r.connect(cid or unique_id(user or "anon"), clean, 60, will, user,
                    pw(user).encode() if user else None)
    assert ack.return_code == 0, ack
    return r


def raw5(port: int, made: list[RawClient], user: str | None = None, *,
         cid: str | None = None) -> RawV5:
    r = RawV5(port)
    made.append(r)
    ack = r.connect5(cid or unique_id(user or "anon"), username=user,
                     password=pw(user).encode() if user else None)
    assert ack.return_code == 0, ack
    return r


def topics_until(r: RawClient, last: str, timeout: float = 5.0) -> list[str]:
    """Topics of the PUBLISH packets received (acknowledged) up to one on ``last``."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while not got or got[-1] != last:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no message on {last!r} within {timeout}s; got {got}")
        p = r.recv(left)
        if isinstance(p, Publish):
            r.ack(p)
            got.append(p.topic)
    return got


# -- authentication ---------------------------------------------------------------------------

@protocols
def test_connack_codes_3x(make_broker_thread: MakeBroker, passwd_file: Path,
                          protocol: int) -> None:
    """Password file from mosquitto_passwd: the right password gets in (0), a wrong one or an
    unknown user gets 0x04, no user name where anonymous clients are refused 0x05; a refused
    client is disconnected [MQTT-3.2.2-5]."""
    bt = make_broker_thread(auth_config(passwd_file, anonymous=False))
    cases = [("alice", "alice-pw", 0), ("alice", "bob-pw", 4), ("mallory", "x", 4),
             ("bob", "", 4), (None, None, 5)]
    for user, password, code in cases:
        c = Paho(unique_id("c"), protocol, username=user, password=password)
        try:
            c.connect(bt.port, expect=code)
            if code:
                assert c.disconnected.wait(5), "the broker kept a refused connection open"
        finally:
            c.close()


def test_connack_codes_5(make_broker_thread: MakeBroker, passwd_file: Path,
                         raws: list[RawClient]) -> None:
    """MQTT 5: 0x86 Bad User Name or Password, 0x87 Not authorized; then the connection is
    closed [MQTT-3.2.2-7]."""
    bt = make_broker_thread(auth_config(passwd_file, anonymous=False))
    for user, password, code in [("carol", b"carol-pw", 0x00), ("carol", b"nope", 0x86),
                                 ("nobody", b"carol-pw", 0x86), (None, None, 0x87)]:
        r = RawV5(bt.port)
        raws.append(r)
        ack = r.connect5(unique_id("v5"), username=user, password=password)
        assert ack.return_code == code, (user, ack)
        if code:
            assert r.wait_closed() == []


def test_hbmqtt_and_mosquitto_1x_lines(make_broker_thread: MakeBroker, passwd_file: Path,
                                       raws: list[RawClient]) -> None:
    """One file mixing mosquitto_passwd 2.x lines, an hbmqtt line (passlib's sha512_crypt
    default: 656,000 rounds) and a Mosquitto 1.x $6$ line."""
    import base64
    import hashlib

    salt = b"0123456789ab"
    old = base64.b64encode(salt).decode(), base64.b64encode(
        hashlib.sha512(b"old-pw" + salt).digest()).decode()
    with passwd_file.open("a") as fh:
        fh.write(f"# hbmqtt\nhb:{sha512_crypt(b'hb-pw', '$6$rounds=656000$kD3f8x0Lq9Zr')}\n")
        fh.write(f"old:$6${old[0]}${old[1]}\n")
    bt = make_broker_thread(auth_config(passwd_file, anonymous=False))
    for user, password, code in [("hb", b"hb-pw", 0), ("hb", b"hb-px", 4), ("old", b"old-pw", 0),
                                 ("old", b"old-p", 4), ("admin", b"admin-pw", 0)]:
        r = RawClient(bt.port, 4)
        raws.append(r)
        assert r.connect(unique_id(user), username=user, password=password).return_code == code


def test_anonymous_per_listener(make_broker_thread: MakeBroker, raws: list[RawClient]) -> None:
    """auth.allow-anonymous not given: anonymous clients on loopback listeners only, like
    Mosquitto 2; a listener's own allow-anonymous wins."""
    cfg = base_config()
    cfg["listeners"] = {"local": {"bind": "127.0.0.1:0"}, "public": {"bind": "0.0.0.0:0"},
                        "open": {"bind": "0.0.0.0:0", "allow-anonymous": True},
                        "closed": {"bind": "127.0.0.1:0", "allow-anonymous": False}}
    del cfg["auth"]
    bt = make_broker_thread(cfg)
    assert bt.broker is not None
    ports = {name: port for name, _, port in bt.broker.addresses}
    for name, code in [("local", 0), ("public", 5), ("open", 0), ("closed", 5)]:
        r = RawClient(ports[name], 4)
        raws.append(r)
        assert r.connect(unique_id(name)).return_code == code, name
        r5 = RawV5(ports[name])
        raws.append(r5)
        assert r5.connect5(unique_id(name)).return_code == (0x87 if code else 0), name


def test_default_yaml_lets_anonymous_clients_in_on_localhost_only(
        make_broker_thread: MakeBroker, raws: list[RawClient]) -> None:
    """configs/default.yaml: its listener is 127.0.0.1 and anonymous clients get in there;
    the same file served on every interface (serve --host 0.0.0.0) refuses them (0x05), and
    without a password file a user name does not help (0x04)."""
    memory = {"persistence": {"backend": "memory"}, "sys_interval": 0,
              "http": {"enabled": False}}
    config = load_config(ROOT / "configs" / "default.yaml", overrides=memory)
    assert [(lc.host, lc.allow_anonymous) for lc in config.listeners] == [
        ("127.0.0.1", None), ("127.0.0.1", None)]  # tcp and ws
    assert config.auth.allow_anonymous is None
    local = make_broker_thread(config.with_overrides(port=0))
    r = RawClient(local.port, 4)
    raws.append(r)
    assert r.connect(unique_id("local")).return_code == 0
    public = make_broker_thread(config.with_overrides(host="0.0.0.0", port=0))
    for user, code in [(None, 5), ("someone", 4)]:
        r = RawClient(public.port, 4)
        raws.append(r)
        password = b"x" if user else None  # (a password without a user name is malformed)
        assert r.connect(unique_id("pub"), username=user, password=password).return_code == code


def test_passwd_cli_file_works_here_and_in_mosquitto(make_broker_thread: MakeBroker,
                                                     tmp_path: Path,
                                                     raws: list[RawClient]) -> None:
    """`mqttbroker passwd` (the installed command) writes a file this broker and the real
    Mosquitto 2.0 both accept."""
    path = tmp_path / "passwd"
    for user, password in [("dev", "dev-pw"), ("ops", "ops-pw")]:
        done = subprocess.run([MQTTBROKER, "passwd", str(path), user, "--password", password],
                              check=False, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
    assert "dev-pw" not in path.read_text()
    bt = make_broker_thread(auth_config(path, anonymous=False))
    # Mosquitto 2.0 answers a wrong password with 5 (not authorised); we say 4, as the
    # issue and the spec's "bad user name or password" ask
    for port, wrong in ((bt.port, 4), (_mosquitto(tmp_path, path), 5)):
        for user, password, code in [("dev", b"dev-pw", 0), ("ops", b"ops-pw", 0),
                                     ("dev", b"ops-pw", wrong)]:
            r = RawClient(port, 4)
            raws.append(r)
            got = r.connect(unique_id(user), username=user, password=password).return_code
            assert got == code, (port, user, got)


_procs: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _stop_mosquittos() -> Iterator[None]:
    yield
    while _procs:
        proc = _procs.pop()
        proc.terminate()
        proc.wait(5)


def _mosquitto(tmp_path: Path, password_file: Path) -> int:
    """A real Mosquitto (Debian's, installed by `make test`) using ``password_file``."""
    if not Path(MOSQUITTO).exists():
        pytest.fail(f"{MOSQUITTO} missing: `make test` installs Debian's mosquitto package")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    conf = tmp_path / "mosquitto.conf"
    # run as ourselves (as root, Mosquitto would switch to user mosquitto, who cannot read
    # a 0600 password file)
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\n"
                    f"password_file {password_file}\npersistence false\n"
                    f"user {getpass.getuser()}\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _procs.append(proc)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return port
        except OSError:
            time.sleep(0.1)
    pytest.fail("mosquitto did not start")


# -- authorisation: the ACL file ----------------------------------------------------------------

def test_subscribe_refusals_3x_and_5(acl_broker: BrokerThread, raws: list[RawClient]) -> None:
    """A filter nothing lets the client read gets 0x80 in 3.1.1 [MQTT-3.9.3] and, by default,
    in 5.0 too; a filter wider than the grants is granted (its messages are checked)."""
    a3 = raw3(acl_broker.port, raws, "alice")
    assert a3.subscribe(("alice/#", 1), ("secret/#", 1), ("#", 1), ("inbox/x", 0)) == [
        1, FAILURE, 1, FAILURE]
    a5 = raw5(acl_broker.port, raws, "alice")
    assert a5.subscribe5(("alice/x", 2), ("secret/#", 1), ("$share/g/secret/x", 1),
                         ("$share/g/alice/x", 1)).return_codes == [2, 0x80, 0x80, 1]


def test_v5_subscribe_refusal_can_be_0x87(make_broker_thread: MakeBroker, passwd_file: Path,
                                          acl_file: Path, raws: list[RawClient]) -> None:
    bt = make_broker_thread(auth_config(passwd_file, acl_file, anonymous=True,
                                        **{"v5-subscribe-refusal": 0x87}))
    a5 = raw5(bt.port, raws, "alice")
    assert a5.subscribe5(("secret/#", 1), ("alice/#", 1)).return_codes == [0x87, 1]
    a3 = raw3(bt.port, raws, "alice")
    assert a3.subscribe(("secret/#", 1)) == [FAILURE]  # 3.1.1 has only 0x80


def test_refused_publish_is_dropped_and_v5_told_0x87(acl_broker: BrokerThread,
                                                     raws: list[RawClient]) -> None:
    """alice may only read public/#: her PUBLISH there is acknowledged as usual in 3.1.1 and
    with 0x87 in 5.0 (PUBACK, and PUBREC that ends the QoS 2 flow), and nobody gets it."""
    port = acl_broker.port
    watcher = raw3(port, raws, "admin")
    assert watcher.subscribe(("#", 1)) == [1]
    a3 = raw3(port, raws, "alice")
    for qos in (0, 1, 2):
        a3.publish("public/from-alice", b"x", qos)  # flows complete normally
    a5 = raw5(port, raws, "alice")
    assert a5.publish5("public/from-alice", b"x", 1).reason_code == 0x87  # type: ignore[union-attr]
    assert a5.publish5("public/from-alice", b"x", 2).reason_code == 0x87  # type: ignore[union-attr]
    a5.publish5("public/from-alice", b"x", 0)
    a5.publish5("alice/ok", b"y", 1)
    assert topics_until(watcher, "alice/ok") == ["alice/ok"]


def test_wide_subscription_receives_only_what_may_be_read(acl_broker: BrokerThread,
                                                          raws: list[RawClient]) -> None:
    """alice subscribes '#' but may read only alice/# and public/#: each message is checked
    (Mosquitto checks read access at delivery)."""
    port = acl_broker.port
    alice = raw3(port, raws, "alice")
    assert alice.subscribe(("#", 1)) == [1]
    admin = raw3(port, raws, "admin")
    for topic in ("public/a", "secret/x", "alice/x", "inbox/alice", "bob/private/y",
                  "public/secret", "alice/end"):
        admin.publish(topic, b"m", 1)
    assert topics_until(alice, "alice/end") == ["public/a", "alice/x", "public/secret",
                                                "alice/end"]


def test_deny_wins(acl_broker: BrokerThread, raws: list[RawClient]) -> None:
    """bob reads '#' except bob/private/#: subscribing inside the deny is refused, and a
    wider subscription never brings denied topics."""
    port = acl_broker.port
    bob = raw3(port, raws, "bob")
    assert bob.subscribe(("bob/private/x", 1), ("bob/private/#", 0), ("bob/#", 1)) == [
        FAILURE, FAILURE, 1]
    admin = raw3(port, raws, "admin")
    for topic in ("bob/private/x", "bob/private", "bob/public", "bob/done"):
        admin.publish(topic, b"m", 1)
    # "bob/private/#" matches "bob/private" too [MQTT-4.7.1-2]
    assert topics_until(bob, "bob/done") == ["bob/public", "bob/done"]


def test_patterns_substitute_client_id_and_user_name(acl_broker: BrokerThread,
                                                     raws: list[RawClient]) -> None:
    port = acl_broker.port
    watcher, admin = raw3(port, raws, "admin"), raw3(port, raws, "admin")
    assert watcher.subscribe(("devices/#", 1)) == [1]
    a5 = raw5(port, raws, "alice", cid="dev1")
    assert a5.publish5("devices/dev1/t", b"1", 1).reason_code == 0  # type: ignore[union-attr]
    assert a5.publish5("devices/dev2/t", b"2", 1).reason_code == 0x87  # type: ignore[union-attr]
    assert a5.subscribe5(("users/alice/#", 1), ("users/bob/#", 1)).return_codes == [1, 0x80]
    assert a5.subscribe5(("devices/dev1/cmd", 1)).return_codes == [1]
    admin.publish("devices/dev1/cmd", b"go", 1)
    assert a5.next_publish().topic == "devices/dev1/cmd"
    assert topics_until(watcher, "devices/dev1/cmd") == ["devices/dev1/t", "devices/dev1/cmd"]


def test_anonymous_section(acl_broker: BrokerThread, raws: list[RawClient]) -> None:
    """The lines before any `user` are the anonymous clients' (plus the %c patterns)."""
    port = acl_broker.port
    anon = raw3(port, raws)
    assert anon.subscribe(("public/#", 1), ("alice/#", 1), ("public/secret", 1)) == [
        1, FAILURE, FAILURE]
    watcher, admin = raw3(port, raws, "admin"), raw3(port, raws, "admin")
    assert watcher.subscribe(("anon/#", 1), ("public/#", 1)) == [1, 1]
    anon.publish("public/from-anon", b"no", 1)  # read-only there: dropped
    anon.publish("anon/in", b"yes", 1)
    assert topics_until(watcher, "anon/in") == ["anon/in"]
    for topic in ("public/secret", "public/a"):
        admin.publish(topic, b"m", 1)
    assert topics_until(anon, "public/a") == ["public/a"]


def test_sys_is_readable_only_where_granted(make_broker_thread: MakeBroker, passwd_file: Path,
                                            acl_file: Path, raws: list[RawClient]) -> None:
    cfg = auth_config(passwd_file, acl_file, anonymous=True)
    cfg["sys_interval"] = 0.2
    bt = make_broker_thread(cfg)
    admin = raw3(bt.port, raws, "admin")
    assert admin.subscribe(("$SYS/broker/uptime", 0)) == [0]
    assert admin.expect(Publish).topic == "$SYS/broker/uptime"
    for user in (None, "bob", "alice"):  # bob reads '#', which never covers $SYS
        c = raw3(bt.port, raws, user)
        assert c.subscribe(("$SYS/#", 0), ("$SYS/broker/uptime", 0)) == [FAILURE, FAILURE]


def test_retained_messages_on_subscribe_are_checked(acl_broker: BrokerThread,
                                                    raws: list[RawClient]) -> None:
    port = acl_broker.port
    admin = raw3(port, raws, "admin")
    for topic in ("public/r", "secret/r", "alice/r"):
        admin.publish(topic, b"kept", 1, retain=True)
    alice = raw3(port, raws, "alice")
    assert alice.subscribe(("#", 1)) == [1]
    admin.publish("alice/marker", b"m", 1)
    got = topics_until(alice, "alice/marker")
    assert sorted(got[:-1]) == ["alice/r", "public/r"]


def test_will_to_a_topic_the_client_may_not_publish_is_never_sent(
        acl_broker: BrokerThread, raws: list[RawClient]) -> None:
    port = acl_broker.port
    watcher = raw3(port, raws, "admin")
    assert watcher.subscribe(("#", 1)) == [1]
    bad = raw3(port, raws, "alice", will=Will("public/will", b"gone", 1, False))
    good = raw3(port, raws, "alice", will=Will("alice/will", b"gone", 1, False))
    bad.abort()
    time.sleep(0.2)  # (the bad one's will, if it went, would come first)
    good.abort()
    assert topics_until(watcher, "alice/will") == ["alice/will"]


def test_session_resumed_by_another_user_keeps_nothing_it_may_not_read(
        acl_broker: BrokerThread, raws: list[RawClient]) -> None:
    """Mosquitto drops queued messages the new user may not read when a session is resumed,
    and checks its deliveries from then on."""
    port = acl_broker.port
    alice = raw3(port, raws, "alice", cid="shared-id", clean=False)
    assert alice.subscribe(("alice/#", 1)) == [1]
    alice.disconnect()
    admin = raw3(port, raws, "admin")
    admin.publish("alice/queued", b"for alice", 1)
    carol = RawClient(port, 4)
    raws.append(carol)
    ack = carol.connect("shared-id", False, 60, None, "carol", b"carol-pw")
    assert ack.return_code == 0 and ack.session_present
    assert carol.subscribe(("carol/#", 1)) == [1]
    admin.publish("alice/live", b"for alice", 1)
    admin.publish("carol/x", b"for carol", 1)
    assert topics_until(carol, "carol/x") == ["carol/x"]


def test_hbmqtt_topic_check_in_yaml(make_broker_thread: MakeBroker,
                                    raws: list[RawClient]) -> None:
    """hbmqtt's topic-check keeps working beside the ACL file: subscribe (acl) and publish
    (publish-acl) lists per user, 'anonymous' for clients without one; v5 gets 0x80 / 0x87."""
    cfg = base_config()
    cfg["topic-check"] = {"enabled": True, "acl": {"anonymous": ["sensors/#"]},
                          "publish-acl": {"anonymous": ["sensors/+/temp"]}}
    bt = make_broker_thread(cfg)
    c = raw5(bt.port, raws)
    assert c.subscribe5(("sensors/#", 1), ("other/#", 1)).return_codes == [1, 0x80]
    assert c.publish5("sensors/a/temp", b"1", 1).reason_code == 0  # type: ignore[union-attr]
    assert c.publish5("sensors/a/hum", b"1", 1).reason_code == 0x87  # type: ignore[union-attr]
    assert c.next_publish().topic == "sensors/a/temp"


def test_reload_applies_new_files_and_keeps_old_ones_on_error(
        acl_broker: BrokerThread, acl_file: Path, passwd_file: Path,
        raws: list[RawClient]) -> None:
    """Authorizer.reload() (SIGHUP): connected clients stay; the new ACL rules their next
    deliveries; a broken file is reported and the previous ones stay in use."""
    port = acl_broker.port
    alice = raw3(port, raws, "alice")
    assert alice.subscribe(("alice/#", 1)) == [1]
    acl_file.write_text(ACL.replace("topic readwrite alice/#", "topic readwrite alice/new/#"))
    run_mosquitto_passwd("-b", str(passwd_file), "dave", "dave-pw")
    broker = acl_broker.broker
    assert broker is not None
    assert acl_broker.call(broker.authorizer.reload) is True
    admin = raw3(port, raws, "admin")
    for topic in ("alice/old", "alice/new/x"):
        admin.publish(topic, b"m", 1)
    assert topics_until(alice, "alice/new/x") == ["alice/new/x"]
    r = RawClient(port, 4)
    raws.append(r)
    assert r.connect(unique_id("dave"), username="dave", password=b"dave-pw").return_code == 0
    acl_file.write_text("user alice\ntopic maybe alice/#\n")
    assert acl_broker.call(broker.authorizer.reload) is False
    admin.publish("alice/new/y", b"m", 1)
    assert topics_until(alice, "alice/new/y") == ["alice/new/y"]


def test_sighup_reloads_password_and_acl_files(tmp_path: Path, passwd_file: Path,
                                               acl_file: Path, raws: list[RawClient]) -> None:
    """`mqttbroker serve` on SIGHUP: a user added with `mqttbroker passwd` and an ACL line
    added take effect, connected clients stay connected; a broken file is logged and the
    previous ones stay in use."""
    with broker_procs(tmp_path) as make:
        b = make(persist={"backend": "memory"})
        cfg = yaml.safe_load(b.config_path.read_text())
        cfg["auth"] = {"allow-anonymous": True, "password-file": str(passwd_file),
                       "acl-file": str(acl_file)}
        b.config_path.write_text(yaml.safe_dump(cfg))
        b.start()
        alice = raw3(b.port, raws, "alice")
        r = RawClient(b.port, 4)
        raws.append(r)
        assert r.connect(unique_id("d"), username="dave", password=b"dave-pw").return_code == 4

        def hup(times: int) -> None:
            b.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            deadline = time.monotonic() + 10
            while b.log_text().count("received SIGHUP") < times:
                assert time.monotonic() < deadline, b.log_tail()
                time.sleep(0.05)
            time.sleep(0.2)  # (the reload runs right after that line, on the same loop turn)

        done = subprocess.run([MQTTBROKER, "passwd", str(passwd_file), "dave", "--password",
                               "dave-pw"], check=False, capture_output=True, timeout=30)
        assert done.returncode == 0
        acl_file.write_text(ACL + "\nuser dave\ntopic readwrite dave/#\n")
        hup(1)
        dave = raw3(b.port, raws, "dave")
        assert dave.subscribe(("dave/#", 1), ("alice/#", 1)) == [1, FAILURE]
        alice.ping()  # still connected
        acl_file.write_text("user dave\ntopic readwrite\tdave/#\ntopic rw x\n")
        hup(2)
        assert "unknown access 'rw'" in b.log_text()
        assert b.running
        assert raw3(b.port, raws, "dave").subscribe(("dave/x", 0)) == [0]
        assert b.terminate() == 0


# -- configuration ------------------------------------------------------------------------------

def test_bad_files_are_config_errors_naming_file_and_line(tmp_path: Path,
                                                          passwd_file: Path) -> None:
    acl = tmp_path / "bad.acl"
    acl.write_text("user alice\ntopic read alice/#\ntopic reed other\n")
    bad_pw = tmp_path / "bad.passwd"
    bad_pw.write_text("# users\nalice:secret\n")
    conf = tmp_path / "broker.yaml"
    conf.write_text(textwrap.dedent(f"""\
        auth:
          password-file: {bad_pw.name}
          acl-file: {acl.name}
        """))
    result = CliRunner().invoke(cli, ["check-config", str(conf)])
    assert result.exit_code == 1
    assert (f"{conf}:2: auth.password-file: {bad_pw}:2: user 'alice': not a password hash"
            in result.output), result.output
    assert (f"{conf}:3: auth.acl-file: {acl}:3: unknown access 'reed'" in result.output)
    with pytest.raises(ConfigError) as ei:
        Broker({"auth": {"password-file": str(passwd_file), "acl-file": str(acl)}})
    assert f"{acl}:3: unknown access 'reed'" in str(ei.value)


def test_without_acl_nothing_is_checked_per_delivery(make_broker_thread: MakeBroker,
                                                     raws: list[RawClient]) -> None:
    bt = make_broker_thread(base_config())
    c, p = raw3(bt.port, raws), raw3(bt.port, raws)
    assert c.subscribe(("#", 1)) == [1]
    p.publish("a/b", b"x", 1)
    assert topics_until(c, "a/b") == ["a/b"]
    broker = bt.broker
    assert broker is not None
    assert broker.authorizer.readers == {} and broker.authorizer.publish_checked is False
