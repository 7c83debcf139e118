"""Password files: Mosquitto's (``mosquitto_passwd``) and hbmqtt's, read, verified and written.

One ``user:hash`` per line; ``#`` starts a comment line; blank lines are ignored. The hashes
understood:

* ``$7$<iterations>$<salt>$<hash>``: PBKDF2-HMAC-SHA512, salt and 64-byte hash in base64, as
  ``mosquitto_passwd`` 2.x writes them (2.0.11: 101 iterations, 12-byte salt).
* ``$6$<salt>$<hash>`` with a base64 64-byte hash: SHA512(password + salt), what
  ``mosquitto_passwd`` 1.x wrote.
* ``$6$[rounds=N$]<salt>$<86 characters>``: sha512-crypt (Drepper), what hbmqtt's password
  files hold (passlib's ``sha512_crypt``, 656,000 rounds by default). Implemented here (the
  ``crypt`` module is deprecated and gone in Python 3.13); 656,000 rounds take ~0.4 s.

Plaintext passwords are refused (``mosquitto_passwd -U`` or ``mqttbroker passwd`` hash them).
:func:`set_password` / :func:`delete_user` edit a file the way ``mosquitto_passwd`` does,
writing ``$7$`` lines (so the file also works in Mosquitto) and replacing the file atomically
with mode 0600.

Pure and synchronous, like the rest of ``auth``: a verification runs on the caller's thread.
PBKDF2 with 101 iterations costs ~0.1 ms; costly hashes (many rounds) are remembered per
(user, password) once verified, so a device reconnecting does not pay twice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Final

from .errors import ConfigError, ConfigIssue, read_text_file

__all__ = ["DEFAULT_ITERATIONS", "PasswordFile", "PasswordHash", "delete_user", "hash_password",
           "load_password_file", "parse_hash", "set_password", "sha512_crypt", "user_problem"]

log = logging.getLogger("mqttbroker.auth")

DEFAULT_ITERATIONS: Final = 101  # mosquitto_passwd 2.0's PW_DEFAULT_ITERATIONS
SALT_LEN: Final = 12  # mosquitto_passwd's salt, in bytes
KEY: Final = "auth.password-file"  # the config key errors are reported under
CACHE_SIZE: Final = 4096  # verdicts remembered for costly hashes
COSTLY: Final = 10_000  # iterations / rounds (~5 ms) from which verdicts are remembered

@dataclass(frozen=True, slots=True)
class PasswordHash:
    """One stored password hash, parsed."""

    scheme: str  # "pbkdf2-sha512" ($7$), "sha512" (Mosquitto $6$) or "sha512-crypt"
    salt: bytes  # raw bytes ($7$, $6$) or the crypt salt's characters (sha512-crypt)
    digest: bytes  # raw hash bytes ($7$, $6$) or the 86 crypt characters (sha512-crypt)
    iterations: int = 1  # PBKDF2 iterations or sha512-crypt rounds
    explicit_rounds: bool = False  # sha512-crypt: "rounds=" was written

    @property
    def costly(self) -> bool:
        """Is verifying it slow enough to remember the verdict?"""
        return self.iterations >= COSTLY

    def verify(self, password: bytes) -> bool:
        """Does ``password`` match? Constant time in the comparison (hmac.compare_digest)."""
        if self.scheme == "pbkdf2-sha512":
            got = hashlib.pbkdf2_hmac("sha512", password, self.salt, self.iterations,
                                      len(self.digest))
        elif self.scheme == "sha512":
            got = hashlib.sha512(password + self.salt).digest()
        else:
            setting = (f"$6$rounds={self.iterations}$" if self.explicit_rounds else "$6$") \
                + self.salt.decode("ascii")
            full = sha512_crypt(password, setting)
            got = full.rpartition("$")[2].encode("ascii")
        return hmac.compare_digest(got, self.digest)


_B64: Final = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_CRYPT_CHARS: Final = re.compile(r"[./0-9A-Za-z]*")


def _b64(text: str, what: str) -> bytes:
    if not _B64.fullmatch(text):
        raise ValueError(f"{what} is not base64")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ValueError(f"{what} is not base64") from None


def parse_hash(text: str) -> PasswordHash:
    """Parse the part after ``user:``; ValueError says what is wrong."""
    if not text.startswith("$"):
        raise ValueError("not a password hash (plaintext passwords are refused; hash the file "
                         "with `mqttbroker passwd FILE USER` or `mosquitto_passwd -U FILE`)")
    parts = text.split("$")  # "", "7", iterations, salt, hash / "", "6", ...
    if parts[1] == "7":
        if len(parts) != 5:
            raise ValueError("a $7$ hash is $7$<iterations>$<salt>$<hash>")
        if not parts[2].isdigit() or not 1 <= int(parts[2]) <= 100_000_000:
            raise ValueError(f"bad PBKDF2 iteration count {parts[2]!r}")
        salt = _b64(parts[3], "the salt")
        digest = _b64(parts[4], "the hash")
        if not salt or len(digest) != 64:
            raise ValueError(f"a $7$ hash needs a salt and 64 hash bytes, got {len(digest)}")
        return PasswordHash("pbkdf2-sha512", salt, digest, int(parts[2]))
    if parts[1] != "6":
        raise ValueError(f"unknown hash type ${parts[1]}$ (expected $7$ or $6$)")
    rounds, explicit = 5000, False
    rest = parts[2:]
    if rest and rest[0].startswith("rounds="):
        value = rest[0][len("rounds="):]
        if not value.isdigit() or not 1000 <= int(value) <= 999_999_999:
            raise ValueError(f"bad sha512-crypt rounds {value!r} (1000..999999999)")
        rounds, explicit, rest = int(value), True, rest[1:]
    if len(rest) != 2:
        raise ValueError("a $6$ hash is $6$<salt>$<hash> or $6$rounds=<n>$<salt>$<hash>")
    salt_text, hash_text = rest
    if not explicit and len(hash_text) == 88 and hash_text.endswith("=="):
        # mosquitto_passwd 1.x: base64 salt, base64 SHA512(password + salt)
        salt, digest = _b64(salt_text, "the salt"), _b64(hash_text, "the hash")
        if not salt or len(digest) != 64:
            raise ValueError("a Mosquitto $6$ hash needs a salt and 64 hash bytes")
        return PasswordHash("sha512", salt, digest)
    if len(hash_text) != 86 or not _CRYPT_CHARS.fullmatch(hash_text):
        raise ValueError("a sha512-crypt hash has 86 characters from [./0-9A-Za-z]")
    if len(salt_text) > 16 or not _CRYPT_CHARS.fullmatch(salt_text):
        raise ValueError("a sha512-crypt salt has at most 16 characters from [./0-9A-Za-z]")
    return PasswordHash("sha512-crypt", salt_text.encode("ascii"), hash_text.encode("ascii"),
                        rounds, explicit)


# --------------------------------------------------------------------------- sha512-crypt

_ITOA64: Final = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ORDER: Final = ((0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26),
                 (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10),
                 (53, 11, 32), (12, 33, 54), (34, 55, 13), (56, 14, 35), (15, 36, 57),
                 (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41))


def _b64_24(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(n):
        out.append(_ITOA64[w & 0x3F])
        w >>= 6
    return "".join(out)


def _sha512_crypt_py(password: bytes, salt: bytes, rounds: int) -> bytes:
    """Ulrich Drepper's SHA-crypt (2008), the SHA-512 variant, steps 1-21."""
    sha = hashlib.sha512
    plen = len(password)
    b = sha(password + salt + password).digest()
    a = sha(password + salt)
    n = plen
    while n > 64:
        a.update(b)
        n -= 64
    a.update(b[:n])
    n = plen
    while n:
        a.update(b if n & 1 else password)
        n >>= 1
    c = a.digest()
    p = (sha(password * plen).digest() * (plen // 64 + 1))[:plen]
    s = (sha(salt * (16 + c[0])).digest() * (len(salt) // 64 + 1))[:len(salt)]
    # a round hashes c with p and s around it in one of eight shapes: make them once
    tails = (p, s + p, p + p, s + p + p)  # even rounds: c + [s] + [p] + p
    heads = (p, p + s, p + p, p + s + p)  # odd rounds: p + [s] + [p] + c
    for i in range(rounds):
        k = (1 if i % 3 else 0) | (2 if i % 7 else 0)
        c = sha(heads[k] + c).digest() if i & 1 else sha(c + tails[k]).digest()
    return c


def sha512_crypt(password: bytes, setting: str) -> str:
    """``crypt(3)`` with a ``$6$[rounds=N$]salt`` setting: the full ``$6$...$hash`` string."""
    body = setting.removeprefix("$6$")
    rounds, explicit = 5000, False
    if body.startswith("rounds="):
        value, _, body = body[len("rounds="):].partition("$")
        rounds, explicit = min(max(int(value), 1000), 999_999_999), True
    salt = body.split("$", 1)[0][:16]
    prefix = f"$6$rounds={rounds}$" if explicit else "$6$"
    c = _sha512_crypt_py(password, salt.encode("ascii"), rounds)
    encoded = "".join(_b64_24(c[x], c[y], c[z], 4) for x, y, z in _ORDER) + \
        _b64_24(0, 0, c[63], 2)
    return f"{prefix}{salt}${encoded}"


# --------------------------------------------------------------------------- files


def hash_password(password: str | bytes, iterations: int = DEFAULT_ITERATIONS,
                  salt: bytes | None = None) -> str:
    """A Mosquitto 2 ``$7$`` hash (PBKDF2-HMAC-SHA512, 12-byte salt, 64-byte hash)."""
    pw = password.encode("utf-8") if isinstance(password, str) else password
    salt = os.urandom(SALT_LEN) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", pw, salt, iterations, 64)
    return (f"$7${iterations}${base64.b64encode(salt).decode()}"
            f"${base64.b64encode(digest).decode()}")


def user_problem(user: str) -> str | None:
    """Why ``user`` cannot be a password file's user name, or None."""
    if not user:
        return "the user name is empty"
    if ":" in user:
        return "a user name must not contain ':'"
    if user != user.strip():
        return "a user name must not start or end with blanks"
    if user.startswith("#"):
        return "a user name must not start with '#' (the line would be a comment)"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in user):
        return "a user name must not contain control characters"
    if len(user.encode("utf-8")) > 65535:
        return "a user name is at most 65535 bytes"  # [MQTT-1.5.3]
    return None


def _read_lines(path: str) -> list[str]:
    return read_text_file(path, KEY).splitlines()


def _parse(lines: list[str], path: str) -> tuple[dict[str, PasswordHash], dict[str, int]]:
    users: dict[str, PasswordHash] = {}
    where: dict[str, int] = {}
    issues: list[ConfigIssue] = []
    for no, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, rest = line.partition(":")
        user = user.strip()
        if not sep or not user:
            issues.append(ConfigIssue(KEY, no, "expected 'user:hash'"))
            continue
        if user in where:
            issues.append(ConfigIssue(KEY, no, f"user {user!r} is given twice (first on line "
                                      f"{where[user]})"))
            continue
        try:
            users[user] = parse_hash(rest.strip())
        except ValueError as exc:
            issues.append(ConfigIssue(KEY, no, f"user {user!r}: {exc}"))
            continue
        where[user] = no
    if issues:
        raise ConfigError(issues, path)
    return users, where


def load_password_file(path: str) -> dict[str, PasswordHash]:
    """Read a password file; ConfigError naming the file and each bad line."""
    return _parse(_read_lines(path), path)[0]


_DUMMY: Final = PasswordHash("pbkdf2-sha512", b"\0" * SALT_LEN, b"\0" * 64, DEFAULT_ITERATIONS)


class PasswordFile:
    """The users of one password file and their verification."""

    __slots__ = ("_cache", "_secret", "path", "users")

    def __init__(self, path: str, users: dict[str, PasswordHash]) -> None:
        self.path = path
        self.users = users
        self._secret = os.urandom(32)
        self._cache: dict[bytes, bool] = {}  # HMAC(secret, user, password) -> verdict

    @classmethod
    def load(cls, path: str) -> PasswordFile:
        """Read ``path`` (ConfigError on a bad file); warns about costly hashes."""
        pf = cls(path, load_password_file(path))
        slow = sorted(u for u, h in pf.users.items() if h.costly)
        if slow:
            log.warning("password file %s: %d user(s) (%s) have hashes that take long to "
                        "verify (%d+ iterations/rounds), on the event loop; verdicts are "
                        "remembered per password, but re-hashing them with `mqttbroker passwd` "
                        "(PBKDF2, %d iterations) is cheaper", path, len(slow),
                        ", ".join(slow[:5]) + (", ..." if len(slow) > 5 else ""), COSTLY,
                        DEFAULT_ITERATIONS)
        return pf

    def verify(self, user: str, password: bytes | None) -> bool:
        """Is ``user`` in the file with this password? An unknown user costs a verification
        too, so timing does not tell which users exist."""
        h = self.users.get(user)
        if h is None or password is None:
            _DUMMY.verify(password or b"")
            return False
        if not h.costly:
            return h.verify(password)
        key = hmac.new(self._secret, user.encode("utf-8") + b"\0" + password,
                       hashlib.sha256).digest()
        verdict = self._cache.get(key)
        if verdict is None:
            verdict = h.verify(password)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = verdict
        return verdict


# --------------------------------------------------------------------------- editing


def _write_atomic(path: str, lines: list[str]) -> None:
    """Replace ``path`` with ``lines``: a 0600 temporary file in the same folder, fsynced,
    renamed over it (readers see the old file or the new one, never half of one)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".passwd-", dir=folder)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write("".join(line + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _existing(path: str) -> tuple[list[str], dict[str, int]]:
    if not os.path.exists(path):
        return [], {}
    lines = _read_lines(path)
    return lines, _parse(lines, path)[1]


def set_password(path: str, user: str, password: str,
                 iterations: int = DEFAULT_ITERATIONS) -> bool:
    """Add ``user`` or change its password (a ``$7$`` line); True when the user is new.
    Other lines are kept as they are. ValueError for a bad user name or empty password,
    ConfigError for a corrupt file."""
    problem = user_problem(user)
    if problem:
        raise ValueError(problem)
    if not password:
        raise ValueError("the password is empty")
    lines, where = _existing(path)
    entry = f"{user}:{hash_password(password, iterations)}"
    new = user not in where
    if new:
        lines.append(entry)
    else:
        lines[where[user] - 1] = entry
    _write_atomic(path, lines)
    return new


def delete_user(path: str, user: str) -> bool:
    """Remove ``user``; False when the file has no such user (the file is then unchanged)."""
    lines, where = _existing(path)
    if user not in where:
        return False
    del lines[where[user] - 1]
    _write_atomic(path, lines)
    return True
