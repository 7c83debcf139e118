"""Mosquitto ACL files (mqttbroker/acl.py) and the Authorizer (mqttbroker/auth.py) that
combines them with password files, anonymous access per listener and hbmqtt's topic-check.
No sockets: the broker-level behaviour is in tests/integration/test_auth.py."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from mqttbroker.acl import AclFile, filter_covers, filters_meet, load_acl_file
from mqttbroker.auth import Authorizer, anonymous_allowed, is_loopback
from mqttbroker.config import AuthConfig, ListenerConfig, TopicCheckConfig
from mqttbroker.errors import ConfigError
from mqttbroker.passwd import hash_password
from mqttbroker.protocol.constants import ReasonCode


def lv(f: str) -> tuple[str, ...]:
    return tuple(f.split("/"))


def write_acl(tmp_path: Path, text: str, name: str = "acl") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


# -- filter algebra ----------------------------------------------------------------------------

@pytest.mark.parametrize(("grant", "f", "covered"), [
    ("#", "#", True),
    ("#", "a/+/c", True),
    ("#", "$SYS/#", False),  # [MQTT-4.7.2-1] '#' never reaches $ topics
    ("+/#", "$SYS/x", False),
    ("$SYS/#", "$SYS/broker/+", True),
    ("a/#", "a", True),  # "a/#" matches its parent "a" [MQTT-4.7.1-2]
    ("a/#", "a/#", True),
    ("a/#", "a/b/#", True),
    ("a/+", "a/#", False),
    ("a/+", "a/b", True),
    ("a/+", "a/+", True),
    ("a/b", "a/+", False),
    ("a/+/c", "a/b/c", True),
    ("a/+/c", "a/b", False),
    ("+/+", "a/b/c", False),
    ("a", "a/#", False),
])
def test_filter_covers(grant: str, f: str, covered: bool) -> None:
    assert filter_covers(lv(grant), lv(f)) is covered


@pytest.mark.parametrize(("a", "b", "meet"), [
    ("#", "a/b", "a/b"),
    ("#", "$SYS/#", None),
    ("+/x", "$SYS/x", None),
    ("$SYS/#", "$SYS/+", "$SYS/+"),
    ("a/#", "a", "a"),
    ("a/#", "+/b/#", "a/b/#"),
    ("a/+", "+/b", "a/b"),
    ("a/+", "a/b/c", None),
    ("a/b", "a/c", None),
    ("#", "#", "#"),
    ("test/#", "test/nosubscribe", "test/nosubscribe"),
])
def test_filters_meet(a: str, b: str, meet: str | None) -> None:
    expected = None if meet is None else lv(meet)
    assert filters_meet(lv(a), lv(b)) == expected
    assert filters_meet(lv(b), lv(a)) == expected


# -- parsing -----------------------------------------------------------------------------------

SAMPLE = """
    # anonymous clients: the lines before any user
    topic read public/#
    topic deny public/secret
      # an indented comment
    user alice
    topic alice/#
    topic write inbox/+
    topic read with spaces/in it
    pattern readwrite devices/%c/#
    user bob smith
    topic read #
    topic deny bob/private/#
    pattern read users/%u/#
    user alice
    topic read more/#
    """


def test_parse_sections_patterns_and_defaults(tmp_path: Path) -> None:
    acl = load_acl_file(write_acl(tmp_path, SAMPLE))
    assert [(e.access, e.topic) for e in acl.anonymous] == [(1, "public/#"), (0, "public/secret")]
    alice = [(e.access, e.topic) for e in acl.users["alice"]]
    # no access word: readwrite; a filter may hold spaces; a repeated section adds to the first
    assert alice == [(3, "alice/#"), (2, "inbox/+"), (1, "with spaces/in it"), (1, "more/#")]
    assert [(e.access, e.topic) for e in acl.users["bob smith"]] == [(1, "#"),
                                                                    (0, "bob/private/#")]
    # as in Mosquitto, one word after the keyword is the filter ("topic read": a topic "read")
    assert load_acl_file(write_acl(tmp_path, "topic read\n", "acl2")).anonymous[0].topic == "read"
    # patterns apply to everyone, wherever they stand
    assert [(e.access, e.topic, e.line) for e in acl.patterns] == [
        (3, "devices/%c/#", 9), (1, "users/%u/#", 13)]


def test_bad_lines_are_all_reported_with_file_and_line(tmp_path: Path) -> None:
    path = write_acl(tmp_path, """
        topic read ok/#
        topic rw a/b
        topci read a
        topic read a/#/b
        user
        topic
        """)
    with pytest.raises(ConfigError) as ei:
        load_acl_file(path)
    exc = ei.value
    assert exc.filename == path
    assert [(i.line, i.problem.split(" (")[0]) for i in exc.issues] == [
        (2, "unknown access 'rw'"),
        (3, "unknown line 'topci'"),
        (4, "invalid topic filter 'a/#/b': '#' must be the whole last level [MQTT-4.7.1-2]"),
        (5, "'user' needs a user name"),
        (6, "'topic' needs a topic filter"),
    ]
    assert f"{path}:2: auth.acl-file: unknown access 'rw'" in str(exc)


def test_unreadable_or_binary_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_acl_file(str(tmp_path / "missing"))
    bad = tmp_path / "bin"
    bad.write_bytes(b"topic read a\n\xff\xfe\n")
    with pytest.raises(ConfigError) as ei:
        load_acl_file(str(bad))
    assert ei.value.issues[0].line == 2


def test_pattern_without_substitution_is_warned(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "mqttbroker.auth"):
        load_acl_file(write_acl(tmp_path, "pattern read fixed/topic\n"))
    assert "has neither %c nor %u" in caplog.text


# -- what a client may do ----------------------------------------------------------------------

@pytest.fixture
def acl(tmp_path: Path) -> AclFile:
    return load_acl_file(write_acl(tmp_path, SAMPLE))


def test_read_write_and_default_readwrite(acl: AclFile) -> None:
    alice = acl.for_client("alice", "a-1")
    assert alice.may_read("alice/x") and alice.may_write("alice/x")
    assert alice.may_write("inbox/bob") and not alice.may_read("inbox/bob")
    assert alice.may_read("with spaces/in it") and not alice.may_write("with spaces/in it")
    assert not alice.may_read("public/a")  # alice has her own section, not the anonymous one
    assert not alice.may_write("elsewhere")  # nothing grants it


def test_anonymous_section_and_patterns(acl: AclFile) -> None:
    anon = acl.for_client(None, "dev7")
    assert anon.may_read("public/a") and not anon.may_write("public/a")
    assert not anon.may_read("public/secret")  # deny wins
    assert anon.may_write("devices/dev7/t")  # %c pattern
    assert not anon.may_write("devices/dev8/t")
    assert not anon.may_read("users/None/x")  # %u patterns never apply to anonymous clients


def test_pattern_substitution(acl: AclFile) -> None:
    bob = acl.for_client("bob smith", "b-1")
    assert bob.may_read("users/bob smith/inbox")  # %u
    assert bob.may_write("devices/b-1/state") and not bob.may_write("devices/a-1/state")  # %c
    carol = acl.for_client("carol", "c/x")  # no section: the patterns only
    assert carol.may_write("devices/c/x/t")  # plain substitution, like Mosquitto
    assert carol.may_read("users/carol/1") and not carol.may_read("users/bob smith/1")


def test_deny_wins_over_any_grant(tmp_path: Path) -> None:
    acl = load_acl_file(write_acl(tmp_path, """
        pattern deny secret/%u/#
        user u
        topic readwrite #
        topic deny never/#
        """))
    u = acl.for_client("u", "c")
    assert not u.may_read("secret/u/x") and not u.may_write("secret/u/x")  # pattern deny
    assert not u.may_read("never/x")  # the user's own deny, listed after the grant
    assert u.may_read("other") and u.may_write("other")


def test_wildcards_in_client_id_or_user_refuse_everything(acl: AclFile) -> None:
    """As in Mosquitto: with patterns, '+'/'#' in the client id or user name could widen
    them (devices/+/# would reach every device)."""
    for user, cid in (("alice", "+"), ("alice", "a#"), ("al+ce", "ok")):
        c = acl.for_client(user, cid)
        assert not c.may_read("alice/x") and not c.may_write(f"devices/{cid}/t")


def test_sys_needs_its_own_grant(tmp_path: Path) -> None:
    acl = load_acl_file(write_acl(tmp_path, """
        topic readwrite #
        user admin
        topic read $SYS/#
        """))
    anon = acl.for_client(None, "x")
    assert anon.may_read("a/b") and not anon.may_read("$SYS/broker/uptime")
    assert anon.subscribe("$SYS/#") == (False, False)
    assert anon.subscribe("#") == (True, False)  # '#' does not match $SYS anyway
    admin = acl.for_client("admin", "y")
    assert admin.may_read("$SYS/broker/uptime") and not admin.may_write("$SYS/broker/uptime")
    assert admin.subscribe("$SYS/#") == (True, False)


@pytest.mark.parametrize(("f", "verdict"), [
    ("alice/#", (True, False)),  # covered by a grant, no deny near: no per-message check
    ("alice/x", (True, False)),
    ("#", (True, True)),  # wider than the grants: allowed, checked per message
    ("+/x", (True, True)),
    ("inbox/+", (False, False)),  # write only
    ("nothing/#", (False, False)),  # nothing readable there
])
def test_subscribe_verdicts(acl: AclFile, f: str, verdict: tuple[bool, bool]) -> None:
    assert acl.for_client("alice", "a-1").subscribe(f) == verdict


def test_subscribe_with_deny_entries(acl: AclFile) -> None:
    bob = acl.for_client("bob smith", "b-1")
    assert bob.subscribe("bob/private/#") == (False, False)  # wholly denied
    assert bob.subscribe("bob/private/x") == (False, False)
    assert bob.subscribe("bob/#") == (True, True)  # partly denied: checked per message
    assert bob.subscribe("#") == (True, True)
    assert bob.subscribe("news/#") == (True, False)  # no deny touches it
    anon = acl.for_client(None, "n")
    assert anon.subscribe("public/secret") == (False, False)
    assert anon.subscribe("public/#") == (True, True)


def test_paho_interop_acl_refuses_test_nosubscribe() -> None:
    acl = load_acl_file(str(Path(__file__).parents[2] / "configs" / "paho-interop.acl"))
    anon = acl.for_client(None, "myclientid")
    assert anon.subscribe("test/nosubscribe") == (False, False)
    assert anon.subscribe("TopicA/#")[0] and anon.subscribe("#")[0]
    assert anon.may_write("test/x") and not anon.may_write("test/nosubscribe")  # deny: all


# -- Authorizer ---------------------------------------------------------------------------------

def lc(name: str, host: str, allow: bool | None = None) -> ListenerConfig:
    return ListenerConfig(name, "tcp", host, 1883, allow_anonymous=allow)


@pytest.mark.parametrize(("host", "loop"), [
    ("127.0.0.1", True), ("127.5.5.5", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.2", False), ("broker.example", False)])
def test_is_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_anonymous_per_listener() -> None:
    """Not given anywhere: loopback listeners only (Mosquitto 2); auth.allow-anonymous for
    every listener (hbmqtt); a listener's own setting wins."""
    unset, yes, no = AuthConfig(), AuthConfig(allow_anonymous=True), \
        AuthConfig(allow_anonymous=False)
    assert anonymous_allowed(unset, lc("l", "127.0.0.1"))
    assert not anonymous_allowed(unset, lc("p", "0.0.0.0"))
    assert anonymous_allowed(yes, lc("p", "0.0.0.0"))
    assert not anonymous_allowed(no, lc("l", "127.0.0.1"))
    assert anonymous_allowed(no, lc("p", "0.0.0.0", True))
    assert not anonymous_allowed(yes, lc("l", "127.0.0.1", False))


def test_authenticate_codes(tmp_path: Path) -> None:
    pw = tmp_path / "passwd"
    pw.write_text(f"alice:{hash_password('right')}\n")
    listeners = [lc("local", "127.0.0.1"), lc("public", "0.0.0.0")]
    a = Authorizer(AuthConfig(password_file=str(pw)), TopicCheckConfig(), listeners)
    ok, bad, nope = (ReasonCode.SUCCESS, ReasonCode.BAD_USER_NAME_OR_PASSWORD,
                     ReasonCode.NOT_AUTHORIZED)
    assert a.authenticate("c", "alice", b"right", "public") == ok
    assert a.authenticate("c", "alice", b"wrong", "local") == bad
    assert a.authenticate("c", "alice", None, "local") == bad
    assert a.authenticate("c", "mallory", b"right", "local") == bad
    assert a.authenticate("c", None, None, "local") == ok
    assert a.authenticate("c", None, None, "public") == nope
    assert a.authenticate("c", None, b"pw-without-user", "public") == nope
    # without a password file a user name proves nothing: in where anonymous clients are
    b = Authorizer(AuthConfig(), TopicCheckConfig(), listeners)
    assert b.authenticate("c", "anyone", b"x", "local") == ok
    assert b.authenticate("c", "anyone", b"x", "public") == bad


def test_no_acl_means_nothing_to_check() -> None:
    a = Authorizer(AuthConfig(allow_anonymous=True), TopicCheckConfig())
    assert a.publish_checked is False
    assert a.bind("c", "u", ["#"]) is None
    assert a.may_subscribe("c", "u", "#") and a.may_publish("c", "u", "x")
    assert a.readers == {}


def test_topic_check_and_acl_file_both_apply(tmp_path: Path) -> None:
    path = write_acl(tmp_path, "user u\ntopic readwrite a/#\ntopic readwrite b/#\n")
    tc = TopicCheckConfig(enabled=True, acl={"u": ("a/#",)}, publish_acl={"u": ("b/#",)})
    a = Authorizer(AuthConfig(acl_file=path), tc)
    assert a.may_subscribe("c", "u", "a/x") and not a.may_subscribe("c", "u", "b/x")
    assert a.may_publish("c", "u", "b/x") and not a.may_publish("c", "u", "a/x")


def test_readers_follow_subscriptions_and_identity(tmp_path: Path) -> None:
    path = write_acl(tmp_path, """
        user alice
        topic read a/#
        user carol
        topic read c/#
        """)
    a = Authorizer(AuthConfig(acl_file=path), TopicCheckConfig())
    assert a.bind("id1", "alice", ["a/#"]) is not None and a.readers == {}
    assert a.may_subscribe("id1", "alice", "#")  # wider: deliveries now checked
    assert set(a.readers) == {"id1"} and a.readers["id1"].username == "alice"
    # the same session resumed by another user: its filters judged for that user
    a.bind("id1", "carol", ["a/#"])
    assert a.readers["id1"].username == "carol"
    assert not a.readers["id1"].may_read("a/x")
    a.forget("id1")
    assert a.readers == {}


def test_reload_keeps_the_old_files_when_new_ones_are_bad(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    acl_path = write_acl(tmp_path, "user u\ntopic readwrite a/#\n")
    pw = tmp_path / "passwd"
    pw.write_text(f"u:{hash_password('one')}\n")
    a = Authorizer(AuthConfig(password_file=str(pw), acl_file=acl_path), TopicCheckConfig())
    a.bind("c", "u", ["a/#"])
    Path(acl_path).write_text("user u\ntopic readwrite b/#\n")
    pw.write_text(f"u:{hash_password('two')}\n")
    assert a.reload() is True
    assert a.may_publish("c", "u", "b/x") and not a.may_publish("c", "u", "a/x")
    assert a.authenticate("c", "u", b"two") == ReasonCode.SUCCESS
    assert "c" in a.readers  # subscriptions unknown here: checked one by one from now on
    Path(acl_path).write_text("user u\ntopic sometimes b/#\n")
    with caplog.at_level(logging.ERROR, "mqttbroker.auth"):
        assert a.reload() is False
    assert f"{acl_path}:2: auth.acl-file: unknown access 'sometimes'" in caplog.text
    assert a.may_publish("c", "u", "b/x")  # the previous ACL still rules
    pw.write_text("u:plain\n")
    assert a.reload() is False
    assert a.authenticate("c", "u", b"two") == ReasonCode.SUCCESS
