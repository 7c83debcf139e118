"""MQTT 5 enhanced authentication [MQTT 4.12] and its SCRAM-SHA-256 method [RFC 5802, RFC 7677].

Pure and synchronous, like ``auth.py``: bytes in, an :class:`AuthResult` out, no I/O and no
clock. ``client/`` and ``broker.py`` carry the bytes:

- CONNECT names an Authentication Method [MQTT 3.1.2.11.9] and usually carries Authentication
  Data [MQTT 3.1.2.11.10]. :meth:`EnhancedAuth.begin` returns ``None`` for a method nobody
  registered: the broker answers CONNACK 0x8C Bad authentication method [MQTT-4.12.0-1] and
  closes the connection.
- Otherwise the broker feeds CONNECT's Authentication Data (``None`` if absent) to
  :meth:`AuthExchange.step`, then the data of each AUTH the client sends [MQTT 3.15]:

  - ``CONTINUE``: send AUTH with reason 0x18 Continue authentication and ``result.data``
    [MQTT-4.12.0-2];
  - ``SUCCESS``: send CONNACK 0x00 with ``result.data`` as its Authentication Data
    [MQTT 4.12]; ``result.username`` is the authenticated identity for the ACLs;
  - ``FAILURE``: send CONNACK 0x87 Not authorized (or, during re-authentication
    [MQTT 4.12.1], DISCONNECT 0x87) and close; ``result.reason`` is for the log only.

- Re-authentication [MQTT 4.12.1] is a fresh :meth:`EnhancedAuth.begin` with the same method.

SCRAM-SHA-256 (client-first in CONNECT, server-first in AUTH 0x18, client-final in AUTH, and
server-final in CONNACK) verifies a password without the broker ever holding it: credentials are
stored in PostgreSQL's format, ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``
(see :func:`make_scram_credential` and ``mqttbroker scram-credential``). Channel binding
(the ``-PLUS`` variants) is not offered, so a client asking for it (gs2 flag ``p=``) fails, and
``y`` (the client could bind, but believes we cannot) is accepted [RFC 5802 section 6].
SASLprep [RFC 4013] is approximated by Unicode NFKC normalisation of user names and passwords.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import secrets
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "DEFAULT_ITERATIONS",
    "MAX_CLIENT_MESSAGE",
    "SCRAM_SHA_256",
    "AuthExchange",
    "AuthMethod",
    "AuthResult",
    "AuthStatus",
    "EnhancedAuth",
    "ScramExchange",
    "ScramSha256",
    "make_scram_credential",
    "parse_scram_credential",
]

SCRAM_SHA_256 = "SCRAM-SHA-256"
DEFAULT_ITERATIONS = 4096  # RFC 7677 section 4: at least 4096
SALT_LENGTH = 16  # bytes; PostgreSQL's default too
MAX_CLIENT_MESSAGE = 4096  # bytes; a longer client message fails before it is parsed
_KEY_LENGTH = hashlib.sha256().digest_size

# Fake salts for unknown users come from this: stable for the life of the process, so asking
# twice for the same unknown user gives the same salt, and unknown to anyone outside it.
_PROCESS_SECRET = secrets.token_bytes(32)

# RFC 5802 section 7: printable = %x21-2B / %x2D-7E (no comma); saslname = 1*(value-safe-char /
# "=2C" / "=3D") where value-safe-char is any UTF-8 character but NUL, "=" and ",".
_PRINTABLE = re.compile(r"[\x21-\x2B\x2D-\x7E]+")
_SASLNAME = re.compile(r"(?:[^\x00=,]|=2C|=3D)+")
_ESCAPE = re.compile(r"=2C|=3D")
_ATTRIBUTE = re.compile(r"[A-Za-z]=")


class AuthStatus(enum.Enum):
    """Where one authentication exchange stands after a step."""

    CONTINUE = "continue"  # send AUTH, reason 0x18, with AuthResult.data
    SUCCESS = "success"  # send CONNACK 0x00, with AuthResult.data as Authentication Data
    FAILURE = "failure"  # send CONNACK (or DISCONNECT) 0x87 and close


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of one :meth:`AuthExchange.step`.

    ``data``: CONTINUE, the Authentication Data of the server's AUTH (reason 0x18); SUCCESS,
    the Authentication Data for CONNACK (SCRAM's server-final ``v=...``); FAILURE, ``None``.
    ``username``: SUCCESS, the authenticated user name. ``reason``: FAILURE, why, for the log;
    never sent to the client.
    """

    status: AuthStatus
    data: bytes | None = None
    username: str | None = None
    reason: str = ""


class AuthExchange(Protocol):
    """One authentication attempt of one connection [MQTT 4.12]."""

    def step(self, data: bytes | None) -> AuthResult:
        """Feed CONNECT's Authentication Data (first call) or an AUTH's (later calls)."""
        ...


class AuthMethod(Protocol):
    """A named Authentication Method [MQTT 3.1.2.11.9] that starts exchanges."""

    name: str

    def begin(self, client_id: str, username: str | None) -> AuthExchange:
        """Start one exchange; ``username`` is CONNECT's User Name, if any."""
        ...


class EnhancedAuth:
    """The Authentication Methods this broker offers, by name."""

    __slots__ = ("_methods",)

    def __init__(self, methods: Iterable[AuthMethod] = ()) -> None:
        self._methods: dict[str, AuthMethod] = {}
        for method in methods:
            self.register(method)

    def register(self, method: AuthMethod) -> None:
        """Offer ``method``; ValueError if its name is empty or already taken."""
        if not method.name:
            raise ValueError("an authentication method needs a name")
        if method.name in self._methods:
            raise ValueError(f"authentication method {method.name!r} is already registered")
        self._methods[method.name] = method

    @property
    def method_names(self) -> tuple[str, ...]:
        """The registered method names, in registration order."""
        return tuple(self._methods)

    def __contains__(self, method_name: object) -> bool:
        return method_name in self._methods

    def begin(self, method_name: str, client_id: str,
              username: str | None) -> AuthExchange | None:
        """An exchange for ``method_name`` (compared exactly), or ``None`` if it is unknown:
        then the broker answers CONNACK 0x8C Bad authentication method [MQTT-4.12.0-1]."""
        method = self._methods.get(method_name)
        if method is None:
            return None
        return method.begin(client_id, username)

    @classmethod
    def from_config(cls, scram_users: Mapping[str, str]) -> EnhancedAuth:
        """Offer SCRAM-SHA-256 when ``scram_users`` (user -> credential) is not empty.

        ValueError, naming the user, if a credential does not parse.
        """
        methods: list[AuthMethod] = []
        if scram_users:
            methods.append(ScramSha256(scram_users))
        return cls(methods)


# --- SCRAM primitives (RFC 5802 section 3) ------------------------------------------------------


def _normalize(text: str) -> str:
    """SASLprep, approximated: NFKC folds compatibility forms (fullwidth, ligatures, ...)."""
    return unicodedata.normalize("NFKC", text)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str) -> bytes:
    """Strict standard base64 with padding; ValueError otherwise."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("invalid base64") from exc


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """StoredKey and ServerKey for ``password`` [RFC 5802 section 3]."""
    salted = hashlib.pbkdf2_hmac("sha256", _normalize(password).encode("utf-8"), salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    return hashlib.sha256(client_key).digest(), _hmac(salted, b"Server Key")


def make_scram_credential(password: str, *, iterations: int = DEFAULT_ITERATIONS,
                          salt: bytes | None = None) -> str:
    """A stored credential for ``password``, in PostgreSQL's format:
    ``SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>``.

    The salt is 16 random bytes unless given (tests pass the RFC 7677 one).
    """
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    if salt is None:
        salt = secrets.token_bytes(SALT_LENGTH)
    elif not salt:
        raise ValueError("salt must not be empty")
    stored_key, server_key = _keys(password, salt, iterations)
    return (f"{SCRAM_SHA_256}${iterations}:{_b64encode(salt)}"
            f"${_b64encode(stored_key)}:{_b64encode(server_key)}")


def parse_scram_credential(cred: str) -> tuple[int, bytes, bytes, bytes]:
    """``(iterations, salt, stored_key, server_key)`` from :func:`make_scram_credential`'s
    format; ValueError (which never quotes the credential) if it is not one."""
    scheme, _, rest = cred.partition("$")
    if scheme != SCRAM_SHA_256:
        raise ValueError(f"not a SCRAM-SHA-256 credential (expected "
                         f"'{SCRAM_SHA_256}$<iterations>:<salt>$<StoredKey>:<ServerKey>')")
    params, sep, keys = rest.partition("$")
    iterations_text, sep2, salt_text = params.partition(":")
    stored_text, sep3, server_text = keys.partition(":")
    if not (sep and sep2 and sep3):
        raise ValueError("malformed SCRAM-SHA-256 credential (expected "
                         "'<iterations>:<salt>$<StoredKey>:<ServerKey>' after the '$')")
    if not (iterations_text.isascii() and iterations_text.isdigit()):
        raise ValueError("SCRAM-SHA-256 credential: iterations is not a number")
    iterations = int(iterations_text)
    if iterations < 1:
        raise ValueError("SCRAM-SHA-256 credential: iterations must be at least 1")
    try:
        salt = _b64decode(salt_text)
        stored_key = _b64decode(stored_text)
        server_key = _b64decode(server_text)
    except ValueError:
        raise ValueError("SCRAM-SHA-256 credential: salt or keys are not base64") from None
    if not salt:
        raise ValueError("SCRAM-SHA-256 credential: empty salt")
    if len(stored_key) != _KEY_LENGTH or len(server_key) != _KEY_LENGTH:
        raise ValueError(f"SCRAM-SHA-256 credential: StoredKey and ServerKey must be "
                         f"{_KEY_LENGTH} bytes")
    return iterations, salt, stored_key, server_key


# --- the server side of the exchange ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Credential:
    name: str  # the user name as configured: the identity the broker authorises
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes


class _Failed(Exception):
    """Internal: ends a step with FAILURE and this reason."""


def _default_nonce() -> str:
    return secrets.token_urlsafe(18)  # 144 bits; [A-Za-z0-9_-] is all printable, no comma


class ScramSha256:
    """The SCRAM-SHA-256 Authentication Method [RFC 7677] over MQTT 5 enhanced authentication.

    ``credentials`` maps user name -> :func:`make_scram_credential` string; every credential is
    parsed here, so a bad one fails at start-up (ValueError naming the user), never at CONNECT.
    ``nonce_factory`` returns the server's part of the nonce (tests fix it; the default is 144
    random bits).
    """

    __slots__ = ("_credentials", "_fake_iterations", "_nonce_factory")

    name = SCRAM_SHA_256

    def __init__(self, credentials: Mapping[str, str],
                 nonce_factory: Callable[[], str] | None = None) -> None:
        self._credentials: dict[str, _Credential] = {}
        for user, cred in credentials.items():
            key = _normalize(user)
            if not key:
                raise ValueError("SCRAM-SHA-256 user names must not be empty")
            if key in self._credentials:
                raise ValueError(f"SCRAM-SHA-256 users {self._credentials[key].name!r} and "
                                 f"{user!r} are the same name after normalisation")
            try:
                parsed = parse_scram_credential(cred)
            except ValueError as exc:
                raise ValueError(f"SCRAM-SHA-256 user {user!r}: {exc}") from None
            self._credentials[key] = _Credential(user, *parsed)
        # Unknown users get the iteration count most users have, so `i=` does not give them away.
        counts = Counter(c.iterations for c in self._credentials.values())
        self._fake_iterations = max(counts, key=lambda i: (counts[i], i), default=DEFAULT_ITERATIONS)
        self._nonce_factory = nonce_factory or _default_nonce

    def begin(self, client_id: str, username: str | None) -> ScramExchange:
        """One exchange; ``username`` is CONNECT's User Name, which must then be the SCRAM user."""
        return ScramExchange(self, client_id, username)

    def _lookup(self, user: str) -> _Credential | None:
        return self._credentials.get(user)

    def _fake_credential(self, user: str) -> _Credential:
        """A stand-in for an unknown user, the same every time for that user in this process."""
        seed = _hmac(_PROCESS_SECRET, b"scram-sha-256 unknown user\x00" + user.encode("utf-8"))
        return _Credential(
            name=user,
            iterations=self._fake_iterations,
            salt=seed[:SALT_LENGTH],
            stored_key=_hmac(seed, b"StoredKey"),
            server_key=_hmac(seed, b"ServerKey"),
        )

    def _server_nonce(self) -> str:
        nonce = self._nonce_factory()
        if not _PRINTABLE.fullmatch(nonce):
            raise ValueError("nonce_factory must return printable ASCII without ','")
        return nonce


class _State(enum.Enum):
    CLIENT_FIRST = "client-first"
    CLIENT_FINAL = "client-final"
    DONE = "done"


class ScramExchange:
    """The server side of one SCRAM-SHA-256 exchange [RFC 5802 section 5]."""

    __slots__ = ("_auth_message_prefix", "_credential", "_gs2_header", "_known", "_method",
                 "_mqtt_username", "_nonce", "_state", "client_id")

    def __init__(self, method: ScramSha256, client_id: str, mqtt_username: str | None) -> None:
        self._method = method
        self.client_id = client_id
        self._mqtt_username = mqtt_username
        self._state = _State.CLIENT_FIRST
        self._gs2_header = ""
        self._nonce = ""
        self._auth_message_prefix = ""  # client-first-message-bare "," server-first-message
        self._credential: _Credential | None = None
        self._known = False

    def step(self, data: bytes | None) -> AuthResult:
        state, self._state = self._state, _State.DONE  # any failure below ends the exchange
        try:
            if state is _State.DONE:
                raise _Failed("authentication exchange already finished")
            text = _decode(data, "client-first-message" if state is _State.CLIENT_FIRST
                           else "client-final-message")
            if state is _State.CLIENT_FIRST:
                result = self._client_first(text)
                self._state = _State.CLIENT_FINAL
                return result
            return self._client_final(text)
        except _Failed as exc:
            return AuthResult(AuthStatus.FAILURE, reason=f"SCRAM-SHA-256: {exc}")

    def _client_first(self, text: str) -> AuthResult:
        """client-first-message = gs2-header client-first-message-bare [RFC 5802 section 7]."""
        flag, sep, rest = text.partition(",")
        authzid, sep2, bare = rest.partition(",")
        if not (sep and sep2):
            raise _Failed("malformed client-first-message: no gs2 header")
        if flag.startswith("p="):
            raise _Failed(f"client requested channel binding ({flag[2:]!r:.40}), "
                          f"which this server does not offer")
        if flag not in ("n", "y"):
            raise _Failed("malformed client-first-message: gs2 flag must be 'n', 'y' or 'p='")
        if authzid:
            raise _Failed("authorization identity (a=) is not supported")
        self._gs2_header = f"{flag},,"

        attributes = _attributes(bare, "client-first-message")
        if attributes[0][0] == "m":  # RFC 5802 section 5.1: "m" MUST cause failure
            raise _Failed("mandatory extension (m=) is not supported")
        if len(attributes) < 2 or attributes[0][0] != "n" or attributes[1][0] != "r":
            raise _Failed("malformed client-first-message: expected 'n=<user>,r=<nonce>'")
        escaped_user, client_nonce = attributes[0][1], attributes[1][1]
        if not _SASLNAME.fullmatch(escaped_user):
            raise _Failed("malformed client-first-message: bad user name (empty, NUL, or an "
                          "'=' that is not '=2C' or '=3D')")
        if not _PRINTABLE.fullmatch(client_nonce):
            raise _Failed("malformed client-first-message: nonce empty or not printable ASCII")
        # Unknown extensions after the nonce are ignored [RFC 5802 section 7].
        user = _normalize(_ESCAPE.sub(lambda m: "," if m.group() == "=2C" else "=",
                                      escaped_user))
        if self._mqtt_username is not None and _normalize(self._mqtt_username) != user:
            raise _Failed(f"SCRAM user {user!r} is not the CONNECT User Name "
                          f"{self._mqtt_username!r}")

        credential = self._method._lookup(user)
        self._known = credential is not None
        if credential is None:  # gets a server-first like a real user's; fails at the end
            credential = self._method._fake_credential(user)
        self._credential = credential
        self._nonce = client_nonce + self._method._server_nonce()
        server_first = f"r={self._nonce},s={_b64encode(credential.salt)},i={credential.iterations}"
        self._auth_message_prefix = f"{bare},{server_first}"
        return AuthResult(AuthStatus.CONTINUE, data=server_first.encode("ascii"))

    def _client_final(self, text: str) -> AuthResult:
        """client-final-message = channel-binding "," nonce ["," extensions] "," proof."""
        credential = self._credential
        assert credential is not None  # set by _client_first
        attributes = _attributes(text, "client-final-message")
        if (len(attributes) < 3 or attributes[0][0] != "c" or attributes[1][0] != "r"
                or attributes[-1][0] != "p"):
            raise _Failed("malformed client-final-message: expected 'c=...,r=...,p=...'")
        try:
            binding = _b64decode(attributes[0][1])
        except ValueError:
            raise _Failed("malformed client-final-message: c= is not base64") from None
        if binding != self._gs2_header.encode("ascii"):
            raise _Failed("channel binding data (c=) does not match the gs2 header")
        if not hmac.compare_digest(attributes[1][1].encode("utf-8"),
                                   self._nonce.encode("ascii")):
            raise _Failed("nonce (r=) does not match the one the server sent")
        try:
            proof = _b64decode(attributes[-1][1])
        except ValueError:
            raise _Failed("malformed client-final-message: p= is not base64") from None
        if len(proof) != _KEY_LENGTH:
            raise _Failed(f"malformed client-final-message: proof is {len(proof)} bytes, "
                          f"not {_KEY_LENGTH}")

        without_proof = text[:text.rindex(",")]
        auth_message = f"{self._auth_message_prefix},{without_proof}".encode()
        client_signature = _hmac(credential.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        # Computed for unknown users too, so both take the same time.
        proof_ok = hmac.compare_digest(hashlib.sha256(client_key).digest(),
                                       credential.stored_key)
        if not self._known:
            raise _Failed(f"unknown user {credential.name!r}")
        if not proof_ok:
            raise _Failed(f"wrong password for user {credential.name!r}")
        server_signature = _hmac(credential.server_key, auth_message)
        return AuthResult(AuthStatus.SUCCESS, data=f"v={_b64encode(server_signature)}".encode(),
                          username=credential.name)


def _decode(data: bytes | None, what: str) -> str:
    if data is None:
        raise _Failed(f"no Authentication Data: expected the {what}")
    if len(data) > MAX_CLIENT_MESSAGE:
        raise _Failed(f"{what} is {len(data)} bytes, over the {MAX_CLIENT_MESSAGE}-byte limit")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Failed(f"{what} is not valid UTF-8") from None


def _attributes(message: str, what: str) -> list[tuple[str, str]]:
    """``attr=value`` pairs [RFC 5802 section 7]; values never contain ','."""
    pairs: list[tuple[str, str]] = []
    for part in message.split(","):
        if not _ATTRIBUTE.match(part):
            raise _Failed(f"malformed {what}: {part[:40]!r} is not an attribute 'x=value'")
        pairs.append((part[0], part[2:]))
    return pairs
