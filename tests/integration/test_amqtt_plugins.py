"""amqtt's plugin classes run unchanged in our broker (issue 15, point 7;
mqttbroker/plugins/amqtt.py): amqtt's own packaged plugins, configured as amqtt 0.11+
configures them, against our real broker over real sockets with real clients.

* ``AnonymousAuthPlugin`` / ``FileAuthPlugin`` (an amqtt password file: ``user:argon2 hash``),
  deciding together as amqtt's ``Broker._authenticate`` does;
* ``TopicAccessControlListPlugin`` / ``TopicTabooPlugin``: refusals as the broker answers any
  plugin's (MQTT 5 PUBACK/SUBACK 0x87, 3.1.1 SUBACK 0x80);
* ``amqtt.contrib.http``'s user and topic plugins against a real aiohttp server (127.0.0.1,
  port 0) that the test runs in a thread;
* ``amqtt.contrib.jwt``'s user and topic plugins with tokens minted by PyJWT (HS256; an RS256
  token is refused, as amqtt 0.12.1's plugins verify HS256 only, whatever ``algorithm``);
* amqtt's default broker YAML (EventLoggerPlugin, PacketLoggerPlugin, AnonymousAuthPlugin,
  BrokerSysPlugin) loads and starts unchanged; BrokerSysPlugin publishes ``$SYS``;
* events with amqtt's kwargs and one Session per client (a small amqtt plugin of this module),
  amqtt's strict option check with the plugin's line, a failing constructor.

Every wait is bounded; every broker listens on port 0.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest
import yaml

from mqttbroker.broker import Broker
from mqttbroker.config import load_config
from mqttbroker.errors import ConfigError
from mqttbroker.protocol.packets import Publish
from tests.conftest import BrokerThread, base_config

from .helpers import TIMEOUT, RawClient, unique_id, wait_until
from .v5helpers import Env, RawV5

amqtt = pytest.importorskip("amqtt", reason="amqtt is not installed: pip install -e '.[amqtt]'")
from amqtt.plugins.base import BasePlugin  # type: ignore[import-untyped]

ANON = "amqtt.plugins.authentication.AnonymousAuthPlugin"
FILE = "amqtt.plugins.authentication.FileAuthPlugin"
ACL = "amqtt.plugins.topic_checking.TopicAccessControlListPlugin"
TABOO = "amqtt.plugins.topic_checking.TopicTabooPlugin"
HTTP_USER = "amqtt.contrib.http.UserAuthHttpPlugin"
HTTP_TOPIC = "amqtt.contrib.http.TopicAuthHttpPlugin"
JWT_USER = "amqtt.contrib.jwt.UserAuthJwtPlugin"
JWT_TOPIC = "amqtt.contrib.jwt.TopicAuthJwtPlugin"
RECORDER = f"{__name__}.Recorder"

REFUSED_311 = 5  # CONNACK "not authorized" (3.1.1)
REFUSED_5 = 0x87  # Not authorized (MQTT 5 CONNACK, PUBACK, SUBACK)
SUBACK_FAILURE = 0x80  # 3.1.1


def config(plugins: dict[str, Any], **top: Any) -> dict[str, Any]:
    """Our test broker (port 0, anonymous allowed by our own auth: a refusal is the
    plugins') with amqtt's ``plugins`` section."""
    cfg = base_config(auth_failure_delay=0)
    cfg["plugins"] = plugins
    cfg.update(top)
    return cfg


def raw3(env: Env, username: str | None = None, password: bytes | None = None,
         expect: int | None = 0) -> tuple[RawClient, int]:
    """A 3.1.1 client that sent CONNECT; with its CONNACK code."""
    r = env.raw3()
    code = r.connect(unique_id("a3"), username=username, password=password).return_code
    if expect is not None:
        assert code == expect, f"CONNACK {code:#x}, expected {expect:#x}"
    return r, code


def connect5(env: Env, username: str | None = None, password: bytes | None = None,
             expect: int | None = 0) -> tuple[RawV5, int]:
    r, ack = env.raw_connect(unique_id("a5"), expect=expect, username=username,
                             password=password)
    return r, ack.return_code


def puback(r: RawV5, topic: str, payload: bytes = b"x") -> int:
    ack = r.publish5(topic, payload, qos=1)
    assert ack is not None
    return ack.reason_code


def topics_received(r: RawV5, within: float = 0.3) -> list[str]:
    """The topics of the PUBLISH packets that arrive within ``within`` seconds (acknowledged)."""
    got = []
    for p in r.drain(within):
        got.append(getattr(p, "topic", repr(p)))
        if getattr(p, "qos", 0):
            r.ack(p)  # type: ignore[arg-type]
    return got


# -- authentication --------------------------------------------------------------------------------

@pytest.mark.parametrize("allow", [False, True], ids=["refused", "allowed"])
def test_anonymous_auth_plugin(env: Env, allow: bool) -> None:
    env.start(config({ANON: {"allow_anonymous": allow}}))
    # no user name: refused when allow_anonymous is false (our own auth would let it in)
    raw3(env, expect=0 if allow else REFUSED_311)
    connect5(env, expect=0 if allow else REFUSED_5)
    # a user name is all AnonymousAuthPlugin asks for
    raw3(env, username="someone", password=b"anything")
    connect5(env, username="someone")


def _amqtt_password_file(path: Path, users: dict[str, str]) -> Path:
    """A password file as amqtt's FileAuthPlugin reads it: ``user:hash`` lines (Argon2, what
    its pwdlib hasher makes), comments allowed."""
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    hasher = PasswordHash((Argon2Hasher(),))
    lines = ["# amqtt password file"] + [f"{u}:{hasher.hash(p)}" for u, p in users.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_file_auth_plugin_with_anonymous_refused(env: Env, tmp_path: Path) -> None:
    """The issue's configuration: both plugins are asked, and as in amqtt every definite
    answer must be yes (AnonymousAuthPlugin says yes to any user name; FileAuthPlugin says
    no to a wrong password, which therefore refuses)."""
    passwd = _amqtt_password_file(tmp_path / "passwd", {"alice": "wonderland"})
    env.start(config({ANON: {"allow_anonymous": False},
                      FILE: {"password_file": str(passwd)}}))
    raw3(env, "alice", b"wonderland")
    connect5(env, "alice", b"wonderland")
    raw3(env, "alice", b"looking-glass", expect=REFUSED_311)
    connect5(env, "alice", b"looking-glass", expect=REFUSED_5)
    connect5(env, "mallory", b"wonderland", expect=REFUSED_5)  # not in the file
    raw3(env, expect=REFUSED_311)  # no user name


def test_file_auth_plugin_alone_refuses_whom_it_cannot_judge(env: Env, tmp_path: Path) -> None:
    """FileAuthPlugin has no answer (None) for a client without user name; amqtt refuses a
    client no auth plugin vouched for, and so do we (our own allow-anonymous is true)."""
    passwd = _amqtt_password_file(tmp_path / "passwd", {"alice": "wonderland"})
    env.start(config({FILE: {"password_file": str(passwd)}}))
    connect5(env, expect=REFUSED_5)
    connect5(env, "alice", b"wonderland")


# -- topic plugins ---------------------------------------------------------------------------------

def test_topic_access_control_list_plugin(env: Env) -> None:
    """amqtt 0.12.1's TopicAccessControlListPlugin: ``acl`` governs subscriptions and
    ``publish_acl`` publications, by user name ("anonymous" without one)."""
    env.start(config({
        ANON: {"allow_anonymous": True},
        ACL: {"acl": {"alice": ["sensors/#"], "anonymous": ["public/+"]},
              "publish_acl": {"alice": ["sensors/alice/#"]}},
    }))
    alice, _ = connect5(env, "alice", b"pw")
    assert alice.subscribe5(("sensors/#", 1), ("private/#", 1)).return_codes == [1, REFUSED_5]
    assert puback(alice, "private/x") == REFUSED_5
    # allowed: delivered to alice's own subscription
    assert puback(alice, "sensors/alice/t") == 0
    assert alice.next_publish().topic == "sensors/alice/t"
    # 3.1.1: SUBACK 0x80
    anon3, _ = raw3(env)
    assert anon3.subscribe(("public/a", 0), ("sensors/#", 0)) == [0, SUBACK_FAILURE]
    # a 3.1.1 PUBLISH refused is acknowledged and dropped (as amqtt does): alice gets the
    # next allowed one only
    anon3.publish("sensors/alice/dropped", b"x", qos=1)
    assert puback(alice, "sensors/alice/after") == 0
    assert alice.next_publish().topic == "sensors/alice/after"


def test_topic_taboo_plugin(env: Env) -> None:
    """TopicTabooPlugin: prohibited, top-secret and data/classified are for "admin" only."""
    env.start(config({ANON: {"allow_anonymous": True}, TABOO: {}}))
    user, _ = connect5(env, "user", b"pw")
    admin, _ = connect5(env, "admin", b"pw")
    assert user.subscribe5(("top-secret", 1), ("news", 1)).return_codes == [REFUSED_5, 1]
    assert admin.subscribe5(("top-secret", 1), ("#", 1)).return_codes == [1, 1]
    assert puback(user, "prohibited") == REFUSED_5
    reader, _ = raw3(env, "reader", b"pw")  # 3.1.1
    assert reader.subscribe(("#", 0), ("data/classified", 0)) == [0, SUBACK_FAILURE]
    # admin may publish a taboo topic; the reader, subscribed to '#', may not receive it
    assert puback(admin, "data/classified", b"secret") == 0
    assert admin.next_publish().topic == "data/classified"
    assert puback(admin, "news", b"hello") == 0
    assert admin.next_publish().topic == "news"
    assert user.next_publish().topic == "news"
    first = reader.expect(Publish)
    assert (first.topic, first.payload) == ("news", b"hello")


# -- amqtt.contrib.http ----------------------------------------------------------------------------

class HttpAuthServer:
    """A real aiohttp server on 127.0.0.1 (port 0), in its own thread and loop, answering
    amqtt.contrib.http's plugins: GET /user {username, password, client_id} and GET /acl
    {username, client_id, topic, acc (1 receive, 2 publish, 4 subscribe)} -> {"ok": bool}."""

    def __init__(self, users: dict[str, str], acl: dict[str, dict[int, list[str]]]) -> None:
        self.users = users
        self.acl = acl
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="http-auth")
        self._runner: Any = None

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(TIMEOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(TIMEOUT)
        self.loop.close()

    async def _start(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/user", self._user)
        app.router.add_get("/acl", self._topic)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _user(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        self.requests.append(("user", body))
        ok = body["username"] in self.users and self.users[body["username"]] == body["password"]
        return web.json_response({"ok": ok})

    async def _topic(self, request: Any) -> Any:
        from aiohttp import web
        from amqtt.plugins import TopicMatcher

        body = await request.json()
        self.requests.append(("acl", body))
        filters = self.acl.get(body["username"], {}).get(body["acc"], [])
        ok = any(TopicMatcher.is_topic_allowed(body["topic"], f) for f in filters)
        return web.json_response({"Ok": ok})  # the plugin reads keys in any case

    def asked(self, kind: str, **fields: Any) -> bool:
        return any(k == kind and all(b.get(n) == v for n, v in fields.items())
                   for k, b in list(self.requests))


def test_http_user_and_topic_plugins(env: Env) -> None:
    pytest.importorskip("sqlalchemy", reason="amqtt.contrib imports sqlalchemy: "
                        "pip install -e '.[amqtt]'")
    acl = {"alice": {2: ["alice/out/#"], 4: ["alice/#"], 1: ["alice/in/#", "alice/out/#"]},
           "carol": {2: ["#"]}}
    with HttpAuthServer({"alice": "a-pw", "carol": "c-pw"}, acl) as http:
        http_options = {"host": "127.0.0.1", "port": http.port, "timeout": 5}
        bt = env.start(config({HTTP_USER: {**http_options, "user_uri": "/user"},
                               HTTP_TOPIC: {**http_options, "topic_uri": "/acl"}}))
        connect5(env, "alice", b"wrong", expect=REFUSED_5)
        assert http.asked("user", username="alice", password="wrong")
        connect5(env, expect=REFUSED_5)  # the server does not know a client without a name
        alice, _ = connect5(env, "alice", b"a-pw")
        carol, _ = connect5(env, "carol", b"c-pw")
        assert alice.subscribe5(("alice/#", 1), ("carol/#", 1)).return_codes == [1, REFUSED_5]
        assert http.asked("acl", username="alice", topic="carol/#", acc=4)
        assert puback(alice, "elsewhere") == REFUSED_5
        assert puback(alice, "alice/out/1") == 0
        assert alice.next_publish().topic == "alice/out/1"
        # receive (acc 1): alice may not be delivered alice/secret, though subscribed to it
        assert puback(carol, "alice/secret") in (0, 0x10)  # 0x10: nobody got it
        wait_until(lambda: http.asked("acl", username="alice", topic="alice/secret", acc=1))
        assert puback(carol, "alice/in/1") == 0
        assert alice.next_publish().topic == "alice/in/1"
        assert topics_received(alice) == []
        # the plugins' aiohttp sessions close with the broker (on_broker_pre_shutdown)
        bt.stop()
        assert bt.broker is not None
        assert all(p.plugin.http.closed for p in bt.broker.plugins.plugins)


# -- amqtt.contrib.jwt -----------------------------------------------------------------------------

SECRET = "an HS256 secret for the tests, 32+ bytes long"


def _jwt_plugins(secret: str, algorithm: str = "HS256") -> dict[str, Any]:
    return {
        JWT_USER: {"secret_key": secret, "user_claim": "sub", "algorithm": algorithm},
        JWT_TOPIC: {"secret_key": secret, "publish_claim": "pub", "subscribe_claim": "sub_acl",
                    "receive_claim": "recv", "algorithm": algorithm},
    }


def test_jwt_user_and_topic_plugins_hs256(env: Env) -> None:
    jwt = pytest.importorskip("jwt", reason="PyJWT is not installed: pip install -e '.[amqtt]'")
    pytest.importorskip("sqlalchemy", reason="amqtt.contrib imports sqlalchemy")
    env.start(config(_jwt_plugins(SECRET)))

    def token(user: str, **claims: Any) -> bytes:
        return str(jwt.encode({"sub": user, **claims}, SECRET, algorithm="HS256")).encode()

    bob_token = token("bob", pub=["bob/out/#"], sub_acl=["bob/#"],
                      recv=["bob/in/#", "bob/out/#"])
    connect5(env, "bob", token("eve"), expect=REFUSED_5)  # a token for someone else
    connect5(env, "bob", b"not a token", expect=REFUSED_5)
    forged = str(jwt.encode({"sub": "bob"}, "another secret, also 32+ bytes long!",
                            algorithm="HS256")).encode()
    connect5(env, "bob", forged, expect=REFUSED_5)
    expired = str(jwt.encode({"sub": "bob", "exp": int(time.time()) - 60}, SECRET,
                             algorithm="HS256")).encode()
    connect5(env, "bob", expired, expect=REFUSED_5)
    bob, _ = connect5(env, "bob", bob_token)
    admin, _ = connect5(env, "admin", token("admin", pub=["#"], sub_acl=["#"], recv=["#"]))
    assert bob.subscribe5(("bob/#", 1), ("admin/#", 1)).return_codes == [1, REFUSED_5]
    assert puback(bob, "admin/x") == REFUSED_5
    assert puback(bob, "bob/out/1") == 0
    assert bob.next_publish().topic == "bob/out/1"
    # bob is subscribed to bob/#, and may not receive bob/secret (0x10: nobody got it)
    assert puback(admin, "bob/secret") in (0, 0x10)
    assert puback(admin, "bob/in/1") == 0
    assert bob.next_publish().topic == "bob/in/1"
    assert topics_received(bob) == []


def test_jwt_rs256_token_refused_as_amqtt_does(env: Env) -> None:
    """amqtt 0.12.1's JWT plugins verify with ``algorithms=["HS256"]`` whatever their
    ``algorithm`` option says: an RS256 token is refused (InvalidAlgorithmError), under amqtt
    and here alike; the same plugin class asked directly, as amqtt's broker asks it, agrees."""
    jwt = pytest.importorskip("jwt", reason="PyJWT is not installed: pip install -e '.[amqtt]'")
    pytest.importorskip("sqlalchemy", reason="amqtt.contrib imports sqlalchemy")
    pytest.importorskip("cryptography", reason="RS256 needs cryptography to make an RSA key "
                        "(pip install -e '.[amqtt]': pyjwt[crypto])")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    token = str(jwt.encode({"sub": "rita"}, key, algorithm="RS256"))
    assert jwt.decode(token, public_pem, algorithms=["RS256"])["sub"] == "rita"  # a good token

    env.start(config(_jwt_plugins(public_pem, "RS256")))
    connect5(env, "rita", token.encode(), expect=REFUSED_5)

    # amqtt's own answer for the same session
    from amqtt.contexts import BaseContext  # type: ignore[import-untyped]
    from amqtt.contrib.jwt import UserAuthJwtPlugin  # type: ignore[import-untyped]
    from amqtt.session import Session  # type: ignore[import-untyped]

    context = BaseContext()
    context.config = UserAuthJwtPlugin.Config(secret_key=public_pem, user_claim="sub",
                                              algorithm="RS256")
    session = Session()
    session.username, session.password = "rita", token
    assert asyncio.run(UserAuthJwtPlugin(context).authenticate(session=session)) is False


# -- amqtt's default broker configuration ----------------------------------------------------------

def _amqtt_default_yaml() -> Path:
    return Path(amqtt.__file__).parent / "scripts" / "default_broker.yaml"


def test_amqtt_default_broker_yaml_loads_and_starts(env: Env) -> None:
    """amqtt's own default_broker.yaml, unchanged, loads (its plugins' options checked); and
    with its plugins section unchanged (listener on port 0 instead of 0.0.0.0:1883, our own
    $SYS off so that amqtt's is seen) the broker starts and serves."""
    path = _amqtt_default_yaml()
    loaded = load_config(str(path))
    assert [s.path for s in loaded.plugins] == [
        "amqtt.plugins.logging_amqtt.EventLoggerPlugin",
        "amqtt.plugins.logging_amqtt.PacketLoggerPlugin", ANON,
        "amqtt.plugins.sys.broker.BrokerSysPlugin"]
    Broker(loaded)  # imports the classes and checks their options; not started (port 1883)

    raw = yaml.safe_load(path.read_text())
    bt = env.start(config(raw["plugins"], sys_interval=0))
    names = [type(p.plugin).__name__ for p in bt.call(lambda: list(bt.broker.plugins.plugins))]
    assert names == ["EventLoggerPlugin", "PacketLoggerPlugin", "AnonymousAuthPlugin",
                     "BrokerSysPlugin"]
    sub, _ = connect5(env)  # AnonymousAuthPlugin allow_anonymous: true
    assert sub.subscribe5(("$SYS/broker/version", 0), ("t/#", 1)).return_codes == [0, 1]
    version = sub.next_publish()  # retained by BrokerSysPlugin at post_start
    assert (version.topic, version.payload) == (
        "$SYS/broker/version", f"aMQTT version {amqtt.__version__}".encode())
    pub, _ = raw3(env)
    pub.publish("t/1", b"hello", qos=1)
    assert sub.next_publish().payload == b"hello"


def test_broker_sys_plugin_publishes_sys_topics(env: Env) -> None:
    env.start(config({ANON: {"allow_anonymous": True},
                      "amqtt.plugins.sys.broker.BrokerSysPlugin": {"sys_interval": 1}}))
    sub, _ = connect5(env)
    wanted = {"$SYS/broker/clients/connected", "$SYS/broker/uptime"}
    sub.subscribe5(*((t, 0) for t in sorted(wanted)))
    got: dict[str, bytes] = {}
    deadline = time.monotonic() + TIMEOUT  # sys_interval 1: the first round within ~1 s
    while set(got) != wanted:
        p = sub.next_publish(max(deadline - time.monotonic(), 0.01))
        got[p.topic] = p.payload
    # counted from on_broker_client_connected: this client
    assert got["$SYS/broker/clients/connected"] == b"1"
    assert int(got["$SYS/broker/uptime"]) >= 0


# -- events, sessions, context ---------------------------------------------------------------------

RECORDS: dict[str, list[tuple[Any, ...]]] = {}


class Recorder(BasePlugin):  # type: ignore[misc]
    """An amqtt plugin as a user would write one: records what amqtt's events pass it; on a
    subscription to ``rec/#`` it broadcasts ``rec/welcome`` through its context."""

    @dataclass
    class Config:
        key: str

    def _add(self, *what: Any) -> None:
        RECORDS.setdefault(self.config.key, []).append(what)

    async def on_broker_pre_start(self) -> None:
        self._add("pre_start", self.context.loop is asyncio.get_running_loop())

    async def on_broker_post_start(self) -> None:
        self._add("post_start")

    async def on_broker_pre_shutdown(self) -> None:
        self._add("pre_shutdown")

    async def on_broker_post_shutdown(self) -> None:
        self._add("post_shutdown")

    async def close(self) -> None:
        self._add("close")

    async def on_broker_client_connected(self, *, client_id: str, client_session: Any) -> None:
        s = client_session
        self._add("connected", client_id, s.client_id, s.username, s.password,
                  s.remote_address, s.remote_port, s.is_anonymous, s.transitions.state,
                  self.context.get_session(client_id) is s)

    async def on_broker_client_disconnected(self, *, client_id: str,
                                            client_session: Any) -> None:
        self._add("disconnected", client_id, client_session.transitions.state)

    async def on_broker_client_subscribed(self, *, client_id: str, topic: str,
                                          qos: int) -> None:
        self._add("subscribed", client_id, topic, qos)
        if topic == "rec/#":
            await self.context.broadcast_message("rec/welcome", b"hi", qos=1)

    async def on_broker_client_unsubscribed(self, *, client_id: str, topic: str) -> None:
        self._add("unsubscribed", client_id, topic)

    async def on_broker_message_received(self, *, client_id: str, message: Any) -> None:
        self._add("received", client_id, message.topic, bytes(message.data), message.qos,
                  message.retain)

    async def on_broker_message_broadcast(self, *, client_id: str, message: Any) -> None:
        self._add("broadcast", client_id, message.topic)

    async def on_broker_retained_message(self, *, client_id: str | None,
                                         retained_message: Any) -> None:
        self._add("retained", client_id, retained_message.topic, bytes(retained_message.data))


def test_events_sessions_and_context(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    key = unique_id("rec")
    caplog.set_level(logging.DEBUG, logger="amqtt.broker.plugins.EventLoggerPlugin")
    bt = env.start(config({ANON: {"allow_anonymous": True}, RECORDER: {"key": key},
                           "amqtt.plugins.logging_amqtt.EventLoggerPlugin": {}}))
    records = RECORDS.setdefault(key, [])
    assert records[:2] == [("pre_start", True), ("post_start",)]

    def seen(kind: str) -> list[tuple[Any, ...]]:
        wait_until(lambda: any(r[0] == kind for r in list(records)))
        return [r for r in list(records) if r[0] == kind]

    r = env.raw()
    cid = unique_id("ev")
    assert r.connect5(cid, username="u1", password=b"p1").return_code == 0
    local_port = r.sock.getsockname()[1]
    # the Session AnonymousAuthPlugin saw at CONNECT (it set is_anonymous) is the one the
    # other plugins get, and the context's
    assert seen("connected") == [("connected", cid, cid, "u1", "p1", "127.0.0.1", local_port,
                                  True, "connected", True)]
    assert r.subscribe5(("rec/#", 1)).return_codes == [1]
    assert seen("subscribed") == [("subscribed", cid, "rec/#", 1)]
    welcome = r.next_publish()  # broadcast by the plugin through its context
    assert (welcome.topic, welcome.payload) == ("rec/welcome", b"hi")
    assert puback(r, "rec/data", b"42") == 0
    assert r.next_publish().payload == b"42"
    assert seen("received") == [("received", cid, "rec/data", b"42", 1, False)]
    assert seen("broadcast") == [("broadcast", cid, "rec/data")]
    r.publish5("keep/me", b"v", qos=1, retain=True)
    assert seen("retained") == [("retained", None, "keep/me", b"v")]
    r.unsubscribe5("rec/#")
    assert seen("unsubscribed") == [("unsubscribed", cid, "rec/#")]
    r.disconnect5()
    assert seen("disconnected") == [("disconnected", cid, "disconnected")]
    # amqtt's EventLoggerPlugin (events through its __getattr__) logged them too
    for event in ("connected", "subscribed", "message_received", "retained_message",
                  "unsubscribed", "disconnected"):
        name = f"on_broker_{event}" if "message" in event else f"on_broker_client_{event}"
        wait_until(lambda name=name: any(name in m for m in list(caplog.messages)))
    bt.stop()
    assert [r[0] for r in records[-3:]] == ["pre_shutdown", "post_shutdown", "close"]


# -- loading ---------------------------------------------------------------------------------------

def test_amqtt_option_check_names_plugin_and_line(tmp_path: Path) -> None:
    """amqtt checks options with dacite, strictly: an unknown option (hyphens are not
    underscores to amqtt), a wrong type, a missing one are ConfigErrors with the line."""
    path = tmp_path / "broker.yaml"
    path.write_text(
        "listeners:\n"
        "  default:\n"
        "    type: tcp\n"
        "    bind: 127.0.0.1:0\n"
        "plugins:\n"
        f"  {ANON}:\n"                                   # line 6
        "    allow-anonymous: false\n"
        f"  {TABOO}:\n"                                  # line 8
        f"  {ACL}:\n"                                    # line 9
        "    acl: yes\n"
        f"  {JWT_USER}:\n"                               # line 11
        "    user_claim: sub\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        Broker(load_config(str(path)))
    issues = {i.key: i for i in err.value.issues}
    assert set(issues) == {f"plugins.{ANON}", f"plugins.{ACL}", f"plugins.{JWT_USER}"}
    assert issues[f"plugins.{ANON}"].line == 6
    assert "allow-anonymous" in issues[f"plugins.{ANON}"].problem
    assert "'allow_anonymous'" in issues[f"plugins.{ANON}"].problem
    assert issues[f"plugins.{ACL}"].line == 9 and "acl" in issues[f"plugins.{ACL}"].problem
    assert issues[f"plugins.{JWT_USER}"].line == 11
    assert "secret_key" in issues[f"plugins.{JWT_USER}"].problem


def test_amqtt_plugin_that_fails_to_start_stops_the_broker(
        make_broker_thread: Callable[[dict[str, Any]], BrokerThread], tmp_path: Path) -> None:
    """amqtt's PluginInitError: FileAuthPlugin without its password file."""
    missing = tmp_path / "no-such-passwd"
    with pytest.raises(ConfigError) as err:
        make_broker_thread(config({FILE: {"password_file": str(missing)}}))
    assert err.value.key == f"plugins.{FILE}"
    assert "not found" in str(err.value)


@pytest.fixture(autouse=True)
def _forget_records() -> Iterator[None]:
    yield
    RECORDS.clear()
