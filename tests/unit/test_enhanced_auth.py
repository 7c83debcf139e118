"""MQTT 5 enhanced authentication [MQTT 4.12] with SCRAM-SHA-256 [RFC 5802, RFC 7677].

The SCRAM client below is written from RFC 5802 section 3 with hashlib/hmac directly, sharing no
code with the server, so the RFC 7677 test vector checks the server independently.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable

import pytest
import yaml
from click.testing import CliRunner

from mqttbroker.enhanced_auth import (
    MAX_CLIENT_MESSAGE,
    AuthExchange,
    AuthMethod,
    AuthResult,
    AuthStatus,
    EnhancedAuth,
    ScramSha256,
    make_scram_credential,
    parse_scram_credential,
)

# RFC 7677 section 3
RFC_USER = "user"
RFC_PASSWORD = "pencil"
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
RFC_CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

FAST = 4096  # the RFC 7677 minimum; still quick enough for unit tests


# --- an independent SCRAM-SHA-256 client (RFC 5802) --------------------------------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def escape(user: str) -> str:
    return user.replace("=", "=3D").replace(",", "=2C")


class Client:
    def __init__(self, user: str, password: str, nonce: str = "fyko+d2lbbFgONRv9qkxdawL",
                 gs2_header: str = "n,,") -> None:
        self.password = password
        self.gs2_header = gs2_header
        self.nonce = nonce
        self.bare = f"n={escape(user)},r={nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return f"{self.gs2_header}{self.bare}".encode()

    def final(self, server_first: bytes, *, nonce: str | None = None,
              binding: str | None = None) -> bytes:
        attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
        assert attrs["r"].startswith(self.nonce) and len(attrs["r"]) > len(self.nonce)
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(),
                                     base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = _hmac(salted, b"Client Key")
        if binding is None:
            binding = base64.b64encode(self.gs2_header.encode()).decode()
        without_proof = f"c={binding},r={attrs['r'] if nonce is None else nonce}"
        auth_message = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        signature = _hmac(_h(client_key), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes | None) -> bool:
        return server_final == b"v=" + base64.b64encode(self.server_signature)


@pytest.fixture(scope="module")
def alice_cred() -> str:
    return make_scram_credential("correct horse", iterations=FAST)


@pytest.fixture
def method(alice_cred: str) -> ScramSha256:
    return ScramSha256({"alice": alice_cred, "bob": make_scram_credential("b", iterations=FAST)})


def run(method: ScramSha256, client: Client, mqtt_username: str | None = None) -> AuthResult:
    exchange = method.begin("client-1", mqtt_username)
    first = exchange.step(client.first())
    assert first.status is AuthStatus.CONTINUE, first.reason
    assert first.data is not None
    return exchange.step(client.final(first.data))


def failure(result: AuthResult, *words: str) -> None:
    assert result.status is AuthStatus.FAILURE
    assert result.data is None and result.username is None
    for word in words:
        assert word in result.reason


# --- RFC 7677 -----------------------------------------------------------------------------------


def test_rfc7677_vector_byte_for_byte() -> None:
    cred = make_scram_credential(RFC_PASSWORD, iterations=4096, salt=RFC_SALT)
    method = ScramSha256({RFC_USER: cred}, nonce_factory=lambda: RFC_SERVER_NONCE)
    exchange = method.begin("c", None)

    first = exchange.step(RFC_CLIENT_FIRST)
    assert first == AuthResult(AuthStatus.CONTINUE, data=RFC_SERVER_FIRST)

    client = Client(RFC_USER, RFC_PASSWORD, nonce=RFC_CLIENT_NONCE)
    assert client.first() == RFC_CLIENT_FIRST
    client_final = client.final(RFC_SERVER_FIRST)
    assert client_final == RFC_CLIENT_FINAL  # the test client agrees with the RFC too

    final = exchange.step(RFC_CLIENT_FINAL)
    assert final == AuthResult(AuthStatus.SUCCESS, data=RFC_SERVER_FINAL, username=RFC_USER)
    assert client.verify(final.data)


def test_rfc7677_credential_keys() -> None:
    cred = make_scram_credential(RFC_PASSWORD, iterations=4096, salt=RFC_SALT)
    iterations, salt, stored_key, server_key = parse_scram_credential(cred)
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", RFC_SALT, 4096)
    assert (iterations, salt) == (4096, RFC_SALT)
    assert stored_key == _h(_hmac(salted, b"Client Key"))
    assert server_key == _hmac(salted, b"Server Key")
    assert cred == (f"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
                    f"{base64.b64encode(stored_key).decode()}:"
                    f"{base64.b64encode(server_key).decode()}")


# --- exchanges ----------------------------------------------------------------------------------


def test_full_exchange(method: ScramSha256) -> None:
    client = Client("alice", "correct horse")
    result = run(method, client)
    assert result.status is AuthStatus.SUCCESS
    assert result.username == "alice"
    assert client.verify(result.data)


def test_default_server_nonces_differ(method: ScramSha256) -> None:
    nonces = set()
    for _ in range(2):
        data = method.begin("c", None).step(Client("alice", "x").first()).data
        assert data is not None
        nonces.add(data.split(b",")[0])
    assert len(nonces) == 2


def test_wrong_password(method: ScramSha256) -> None:
    failure(run(method, Client("alice", "wrong horse")), "wrong password", "alice")


def test_other_users_password(method: ScramSha256) -> None:
    failure(run(method, Client("alice", "b")), "wrong password")


def test_unknown_user_gets_plausible_server_first(method: ScramSha256, alice_cred: str) -> None:
    def server_first(user: str) -> dict[str, str]:
        data = method.begin("c", None).step(Client(user, "pw", nonce="abc").first()).data
        assert data is not None
        return dict(a.split("=", 1) for a in data.decode().split(","))

    real, ghost, ghost2 = server_first("alice"), server_first("mallory"), server_first("eve")
    assert list(ghost) == list(real) == ["r", "s", "i"]
    assert ghost["r"].startswith("abc") and len(ghost["r"]) == len(real["r"])
    assert len(base64.b64decode(ghost["s"])) == len(base64.b64decode(real["s"])) == 16
    assert ghost["i"] == real["i"] == "4096"
    assert server_first("mallory")["s"] == ghost["s"]  # deterministic per user
    assert ghost2["s"] != ghost["s"]
    assert server_first("alice")["s"] == real["s"]

    failure(run(method, Client("mallory", "pw")), "unknown user", "mallory")


def test_unknown_user_gets_the_usual_iteration_count() -> None:
    users = {name: make_scram_credential("pw", iterations=5000, salt=b"s" * 16)
             for name in ("a", "b")}
    users["c"] = make_scram_credential("pw", iterations=4096, salt=b"s" * 16)
    data = ScramSha256(users).begin("c", None).step(Client("nobody", "pw").first()).data
    assert data is not None and data.endswith(b",i=5000")


def test_escaped_and_normalised_user_names() -> None:
    users = {"a,b=c": make_scram_credential("pw", iterations=FAST),
             "user": make_scram_credential("pw", iterations=FAST)}
    method = ScramSha256(users)
    client = Client("a,b=c", "pw")
    assert b"n=a=2Cb=3Dc," in client.first()
    result = run(method, client)
    assert (result.status, result.username) == (AuthStatus.SUCCESS, "a,b=c")
    # fullwidth "ｕｓｅｒ" is "user" after NFKC; the configured name is what the broker gets
    result = run(method, Client("\uff55\uff53\uff45\uff52", "pw"))
    assert (result.status, result.username) == (AuthStatus.SUCCESS, "user")


def test_password_is_normalised() -> None:
    method = ScramSha256({"u": make_scram_credential("\u2168", iterations=FAST)})  # "Ⅸ"
    assert run(method, Client("u", "IX")).status is AuthStatus.SUCCESS


def test_gs2_flag_y_is_accepted(method: ScramSha256) -> None:
    client = Client("alice", "correct horse", gs2_header="y,,")
    result = run(method, client)
    assert result.status is AuthStatus.SUCCESS and client.verify(result.data)


def test_extensions_are_ignored(method: ScramSha256) -> None:
    exchange = method.begin("c", None)
    client = Client("alice", "correct horse")
    client.bare += ",x=ext"
    first = exchange.step(client.first())
    assert first.status is AuthStatus.CONTINUE and first.data is not None
    assert exchange.step(client.final(first.data)).status is AuthStatus.SUCCESS


# --- failures -----------------------------------------------------------------------------------


def _after_first(method: ScramSha256, client: Client) -> tuple[AuthExchange, bytes]:
    exchange = method.begin("c", None)
    first = exchange.step(client.first())
    assert first.data is not None
    return exchange, first.data


def test_tampered_nonce(method: ScramSha256) -> None:
    client = Client("alice", "correct horse")
    exchange, server_first = _after_first(method, client)
    full = server_first.split(b",")[0][2:].decode()
    tampered = full[:-1] + ("X" if full[-1] != "X" else "Y")  # always a different nonce
    failure(exchange.step(client.final(server_first, nonce=tampered)), "nonce")


def test_client_nonce_only(method: ScramSha256) -> None:
    client = Client("alice", "correct horse")
    exchange, server_first = _after_first(method, client)
    failure(exchange.step(client.final(server_first, nonce=client.nonce)), "nonce")


@pytest.mark.parametrize("binding", [
    base64.b64encode(b"y,,").decode(),  # header said n
    base64.b64encode(b"n,,extra").decode(),
    "",
    "not base64!",
])
def test_bad_channel_binding_attribute(method: ScramSha256, binding: str) -> None:
    client = Client("alice", "correct horse")
    exchange, server_first = _after_first(method, client)
    failure(exchange.step(client.final(server_first, binding=binding)), "c=")


def test_proof_over_a_different_message(method: ScramSha256) -> None:
    client = Client("alice", "correct horse")
    exchange, server_first = _after_first(method, client)
    final = client.final(server_first)
    # the same proof with an extension the proof did not cover
    tampered = final.replace(b",p=", b",x=1,p=")
    failure(exchange.step(tampered), "wrong password")


@pytest.mark.parametrize("header", [b"p=tls-unique,,", b"p=tls-server-end-point,,"])
def test_channel_binding_request_fails(method: ScramSha256, header: bytes) -> None:
    result = method.begin("c", None).step(header + b"n=alice,r=abc")
    failure(result, "channel binding")


@pytest.mark.parametrize("data", [
    None,
    b"",
    b"garbage",
    b"n,",
    b"x,,n=alice,r=abc",
    b"n,a=alice,n=alice,r=abc",  # authzid
    b"n,,m=ext,n=alice,r=abc",  # mandatory extension [RFC 5802 5.1]
    b"n,,r=abc,n=alice",
    b"n,,n=alice",
    b"n,,n=alice,r=",
    b"n,,n=,r=abc",
    b"n,,n=al=ice,r=abc",
    b"n,,n=al=2cice,r=abc",  # escapes are upper case
    b"n,,n=al\x00ice,r=abc",
    b"n,,n=alice,r=ab\x7fc",
    b"n,,n=alice,r=abc\xc3\xa9",
    b"n,,n=alice,r=abc,",
    b"n,,n=alice,,r=abc",
    b"n,,n=al\xffice,r=abc",  # not UTF-8
])
def test_malformed_client_first(method: ScramSha256, data: bytes | None) -> None:
    failure(method.begin("c", None).step(data))


@pytest.mark.parametrize("make", [
    lambda final: None,
    lambda final: b"",
    lambda final: final.rsplit(b",p=", 1)[0],  # no proof
    lambda final: final.replace(b",r=", b",x="),  # no nonce
    lambda final: b",".join(reversed(final.split(b","))),  # order
    lambda final: final.rsplit(b",p=", 1)[0] + b",p=!!!!",  # proof not base64
    lambda final: final.rsplit(b",p=", 1)[0] + b",p=AAAA",  # proof too short
    lambda final: final + b"\xff",
    lambda final: final + b",",
])
def test_malformed_client_final(method: ScramSha256,
                                make: Callable[[bytes], bytes | None]) -> None:
    client = Client("alice", "correct horse")
    exchange, server_first = _after_first(method, client)
    failure(exchange.step(make(client.final(server_first))))


def test_size_limit(method: ScramSha256) -> None:
    prefix = b"n,,n=alice,r="
    at_limit = prefix + b"a" * (MAX_CLIENT_MESSAGE - len(prefix))
    assert len(at_limit) == 4096
    assert method.begin("c", None).step(at_limit).status is AuthStatus.CONTINUE
    failure(method.begin("c", None).step(at_limit + b"a"), "4096")

    client = Client("alice", "correct horse")
    exchange, server_first = _after_first(method, client)
    final = client.final(server_first)
    padded = final.replace(b",p=", b",x=" + b"a" * MAX_CLIENT_MESSAGE + b",p=")
    failure(exchange.step(padded), "4096")


def test_step_after_success(method: ScramSha256) -> None:
    client = Client("alice", "correct horse")
    exchange, server_first = _after_first(method, client)
    final = client.final(server_first)
    assert exchange.step(final).status is AuthStatus.SUCCESS
    failure(exchange.step(final), "already finished")
    failure(exchange.step(None), "already finished")


def test_step_after_failure(method: ScramSha256) -> None:
    exchange = method.begin("c", None)
    failure(exchange.step(b"garbage"))
    failure(exchange.step(Client("alice", "correct horse").first()), "already finished")


def test_failure_at_final_step_is_final(method: ScramSha256) -> None:
    client = Client("alice", "wrong")
    exchange, server_first = _after_first(method, client)
    failure(exchange.step(client.final(server_first)))
    good = Client("alice", "correct horse", nonce=client.nonce)
    failure(exchange.step(good.final(server_first)), "already finished")


def test_mqtt_username_must_match(method: ScramSha256) -> None:
    failure(run_first(method, "bob"), "CONNECT User Name")
    result = run(method, Client("alice", "correct horse"), mqtt_username="alice")
    assert (result.status, result.username) == (AuthStatus.SUCCESS, "alice")


def run_first(method: ScramSha256, mqtt_username: str) -> AuthResult:
    return method.begin("c", mqtt_username).step(Client("alice", "correct horse").first())


def test_bad_nonce_factory() -> None:
    method = ScramSha256({"u": make_scram_credential("pw", iterations=FAST)},
                         nonce_factory=lambda: "has,comma")
    with pytest.raises(ValueError, match="nonce_factory"):
        method.begin("c", None).step(b"n,,n=u,r=abc")


# --- credentials --------------------------------------------------------------------------------


def test_credential_round_trip() -> None:
    cred = make_scram_credential("pw", iterations=5000)
    iterations, salt, stored_key, server_key = parse_scram_credential(cred)
    assert iterations == 5000 and len(salt) == 16
    assert len(stored_key) == len(server_key) == 32
    assert make_scram_credential("pw", iterations=5000) != cred  # fresh salt each time


@pytest.mark.parametrize("cred", [
    "",
    "md5abcdef",
    "SCRAM-SHA-1$4096:c2FsdA==$AAAA:AAAA",
    "SCRAM-SHA-256$4096:c2FsdA==",
    "SCRAM-SHA-256$x:c2FsdA==$" + "A" * 43 + "=:" + "A" * 43 + "=",
    "SCRAM-SHA-256$0:c2FsdA==$" + "A" * 43 + "=:" + "A" * 43 + "=",
    "SCRAM-SHA-256$-1:c2FsdA==$" + "A" * 43 + "=:" + "A" * 43 + "=",
    "SCRAM-SHA-256$4096:$" + "A" * 43 + "=:" + "A" * 43 + "=",
    "SCRAM-SHA-256$4096:c2Fsd!==$" + "A" * 43 + "=:" + "A" * 43 + "=",
    "SCRAM-SHA-256$4096:c2FsdA==$AAAA:" + "A" * 43 + "=",
    "SCRAM-SHA-256$4096:c2FsdA==$" + "A" * 43 + "=",
])
def test_parse_rejects(cred: str) -> None:
    with pytest.raises(ValueError):
        parse_scram_credential(cred)


def test_make_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        make_scram_credential("pw", iterations=0)
    with pytest.raises(ValueError):
        make_scram_credential("pw", salt=b"")


def test_bad_credential_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="'carol'") as info:
        ScramSha256({"carol": "SCRAM-SHA-256$4096:secretish"})
    assert "secretish" not in str(info.value)


def test_users_equal_after_normalisation_are_rejected() -> None:
    cred = make_scram_credential("pw", iterations=FAST)
    with pytest.raises(ValueError, match="normalisation"):
        ScramSha256({"user": cred, "\uff55ser": cred})


# --- EnhancedAuth -------------------------------------------------------------------------------


def test_enhanced_auth_begin(method: ScramSha256) -> None:
    auth = EnhancedAuth([method])
    assert auth.method_names == ("SCRAM-SHA-256",) and "SCRAM-SHA-256" in auth
    assert auth.begin("SCRAM-SHA-1", "c", None) is None
    assert auth.begin("scram-sha-256", "c", None) is None  # method names are exact
    exchange = auth.begin("SCRAM-SHA-256", "c", None)
    assert exchange is not None
    assert exchange.step(Client("alice", "x").first()).status is AuthStatus.CONTINUE


def test_register_duplicate(method: ScramSha256) -> None:
    auth = EnhancedAuth()
    auth.register(method)
    with pytest.raises(ValueError, match="already registered"):
        auth.register(method)


def test_from_config(alice_cred: str) -> None:
    assert EnhancedAuth.from_config({}).method_names == ()
    auth = EnhancedAuth.from_config({"alice": alice_cred})
    exchange = auth.begin("SCRAM-SHA-256", "c", "alice")
    assert exchange is not None
    client = Client("alice", "correct horse")
    first = exchange.step(client.first())
    assert first.data is not None
    assert exchange.step(client.final(first.data)).username == "alice"


def test_pluggable_method() -> None:
    class Token:
        name = "TOKEN"

        def begin(self, client_id: str, username: str | None) -> AuthExchange:
            return TokenExchange()

    class TokenExchange:
        def step(self, data: bytes | None) -> AuthResult:
            if data == b"open sesame":
                return AuthResult(AuthStatus.SUCCESS, username="token-user")
            return AuthResult(AuthStatus.FAILURE, reason="bad token")

    token: AuthMethod = Token()
    auth = EnhancedAuth([token])
    exchange = auth.begin("TOKEN", "c", None)
    assert exchange is not None
    assert exchange.step(b"open sesame").username == "token-user"


# --- mqttbroker scram-credential ----------------------------------------------------------------


def _check_cli_output(output: str, user: str, password: str, iterations: int = 4096) -> None:
    assert " " in password  # cannot turn up inside base64 by chance
    assert password not in output
    line = output.strip("\n").splitlines()[-1]
    assert line.startswith("  ")
    parsed = yaml.safe_load("auth:\n scram-users:\n" + line + "\n")
    (key, cred), = parsed["auth"]["scram-users"].items()
    assert key == user
    n, salt, stored_key, _server_key = parse_scram_credential(cred)
    assert n == iterations
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, n)
    assert _h(_hmac(salted, b"Client Key")) == stored_key
    # and the broker accepts it
    result = run(ScramSha256({key: cred}), Client(user, password))
    assert result.status is AuthStatus.SUCCESS


def test_cli_with_password_option() -> None:
    from mqttbroker.cli import cli

    result = CliRunner().invoke(cli, ["scram-credential", "alice", "--password", "s3cr3t pw!"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith('  alice: "SCRAM-SHA-256$4096:')
    _check_cli_output(result.output, "alice", "s3cr3t pw!")


def test_cli_prompts_twice() -> None:
    from mqttbroker.cli import cli

    result = CliRunner().invoke(cli, ["scram-credential", "bob", "--iterations", "5000"],
                                input="hunter 2\nhunter 2\n")
    assert result.exit_code == 0, result.output
    assert result.output.count("Password") == 1 and "Repeat for confirmation" in result.output
    _check_cli_output(result.output, "bob", "hunter 2", iterations=5000)


def test_cli_prompt_mismatch_asks_again() -> None:
    from mqttbroker.cli import cli

    result = CliRunner().invoke(cli, ["scram-credential", "bob"],
                                input="one\ntwo\npass word\npass word\n")
    assert result.exit_code == 0, result.output
    assert "do not match" in result.output
    _check_cli_output(result.output, "bob", "pass word")


@pytest.mark.parametrize("user", ["yes", "123", "a b", "na:me", "ünï", 'q"uote'])
def test_cli_quotes_awkward_user_names(user: str) -> None:
    from mqttbroker.cli import cli

    result = CliRunner().invoke(cli, ["scram-credential", user, "--password", "p w!"])
    assert result.exit_code == 0, result.output
    _check_cli_output(result.output, user, "p w!")


@pytest.mark.parametrize("args", [
    ["scram-credential", "alice", "--password", ""],
    ["scram-credential", "alice", "--password", "pw", "--iterations", "100"],
    ["scram-credential", "", "--password", "pw"],
])
def test_cli_rejects(args: list[str]) -> None:
    from mqttbroker.cli import cli

    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "SCRAM-SHA-256$" not in result.output
