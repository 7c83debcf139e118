"""Password files (mqttbroker/passwd.py) and ``mqttbroker passwd``: Mosquitto's format, checked
against files made by the real ``mosquitto_passwd`` (Debian's mosquitto package, installed by
``make test``), Mosquitto 1.x ``$6$`` lines, hbmqtt's sha512-crypt lines (checked against the
test vectors of Drepper's specification), and the CLI that edits them."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mqttbroker.cli import cli
from mqttbroker.errors import ConfigError
from mqttbroker.passwd import (
    PasswordFile,
    delete_user,
    hash_password,
    load_password_file,
    parse_hash,
    set_password,
    sha512_crypt,
)

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
SEVEN = re.compile(r"^\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$")


def mosquitto_passwd(*args: str) -> None:
    """Run the real mosquitto_passwd; fail (never skip) when it is not installed."""
    if not Path(MOSQUITTO_PASSWD).exists():
        pytest.fail(f"{MOSQUITTO_PASSWD} missing: it comes with Debian's mosquitto package, "
                    "which `make test` (or `make peers`) installs")
    subprocess.run([MOSQUITTO_PASSWD, *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def mosq_file(tmp_path: Path) -> Path:
    """alice / s3cret and bob / 'pä ss:wörd' (non-ASCII, blank and ':'), by mosquitto_passwd."""
    path = tmp_path / "passwd"
    mosquitto_passwd("-c", "-b", str(path), "alice", "s3cret")
    mosquitto_passwd("-b", str(path), "bob", "pä ss:wörd")
    return path


# -- Mosquitto's $7$ (PBKDF2-SHA512) ---------------------------------------------------------

def test_file_made_by_mosquitto_passwd_verifies(mosq_file: Path) -> None:
    users = load_password_file(str(mosq_file))
    assert set(users) == {"alice", "bob"}
    for h in users.values():
        assert h.scheme == "pbkdf2-sha512" and h.iterations == 101  # mosquitto 2.0.11
        assert len(h.salt) == 12 and len(h.digest) == 64
    pf = PasswordFile(str(mosq_file), users)
    assert pf.verify("alice", b"s3cret")
    assert pf.verify("bob", "pä ss:wörd".encode())
    assert not pf.verify("alice", b"s3cret ")
    assert not pf.verify("alice", b"S3cret")
    assert not pf.verify("alice", None)
    assert not pf.verify("bob", b"s3cret")
    assert not pf.verify("carol", b"s3cret")  # unknown user


def test_our_hash_is_mosquitto_passwd_s_format() -> None:
    """$7$<101>$<12-byte salt, base64>$<64-byte PBKDF2-HMAC-SHA512, base64>."""
    salt = bytes(range(12))
    line = hash_password("pw", salt=salt)
    assert SEVEN.match(line), line
    digest = hashlib.pbkdf2_hmac("sha512", b"pw", salt, 101, 64)
    assert line == f"$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    assert parse_hash(line).verify(b"pw") and not parse_hash(line).verify(b"pW")
    assert SEVEN.match(hash_password("pw"))  # a random salt otherwise


def test_mosquitto_passwd_edits_our_file_and_we_read_its_edits(tmp_path: Path) -> None:
    """Both tools work on one file: ours adds alice, mosquitto_passwd adds bob and changes
    alice, ours changes bob; every line stays verifiable."""
    path = tmp_path / "passwd"
    set_password(str(path), "alice", "one")
    mosquitto_passwd("-b", str(path), "bob", "two")
    assert PasswordFile.load(str(path)).verify("alice", b"one")
    mosquitto_passwd("-b", str(path), "alice", "three")
    set_password(str(path), "bob", "four")
    pf = PasswordFile.load(str(path))
    assert pf.verify("alice", b"three") and pf.verify("bob", b"four")
    assert not pf.verify("alice", b"one") and not pf.verify("bob", b"two")
    mosquitto_passwd("-D", str(path), "alice")
    assert set(load_password_file(str(path))) == {"bob"}


# -- Mosquitto 1.x $6$ and hbmqtt's sha512-crypt ----------------------------------------------

def test_mosquitto_1x_salted_sha512_line() -> None:
    """mosquitto_passwd 1.x: $6$<base64 12-byte salt>$<base64 SHA512(password + salt)>
    (Mosquitto's pw__digest for pw_sha512)."""
    salt = os.urandom(12)
    digest = hashlib.sha512(b"old secret" + salt).digest()
    line = f"$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    h = parse_hash(line)
    assert h.scheme == "sha512"
    assert h.verify(b"old secret") and not h.verify(b"old secret!")


# Drepper, "Unix crypt using SHA-256 and SHA-512" (2008), the SHA-512 test vectors
SPEC_VECTORS = [
    ("$6$saltstring", "Hello world!",
     ("$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCo"
     "EOfaS35inz1")),
    ("$6$rounds=10000$saltstringsaltstring", "Hello world!",
     ("$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vO"
     "uZeHBy/YTBmSK6H9qs/y3RnOaw5v.")),
    ("$6$rounds=5000$toolongsaltstring", "This is just a test",
     ("$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1y"
     "xdYcz/e1JSbq3y6JMxxl8audkUEm0")),
    ("$6$rounds=1400$anotherlongsaltstring",
     "a very much longer text to encrypt.  This one even stretches over morethan one line.",
     ("$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x"
     "9t0oSwbtEW7o7UmJEiDwGqd8p4ur1")),
    ("$6$rounds=77777$short", "we have a short salt string but not a short password",
     ("$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFm"
     "tlcGZelFl5CxtgfiAc0")),
    ("$6$rounds=10$roundstoolow", "the minimum number is still observed",
     ("$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4Z"
     "EQpyUNGc0dqbpBYYBaHHrsX.")),
]


@pytest.mark.parametrize(("setting", "password", "expected"), SPEC_VECTORS,
                         ids=[v[0] for v in SPEC_VECTORS])
def test_sha512_crypt_spec_vectors(setting: str, password: str, expected: str) -> None:
    assert sha512_crypt(password.encode(), setting) == expected
    h = parse_hash(expected)
    assert h.scheme == "sha512-crypt"
    assert h.verify(password.encode()) and not h.verify(password.encode() + b"x")


def test_sha512_crypt_agrees_with_libc_crypt() -> None:
    """Random passwords (empty, long, non-ASCII) and salts: the same strings as glibc's
    crypt(3), when Python still has the crypt module to call it."""
    try:
        import crypt  # deprecated in 3.11, removed in 3.13
    except ImportError:
        pytest.skip("Python without the crypt module: the spec vectors above still run")
    rng = __import__("random").Random(7)
    alphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    for n in (0, 1, 15, 63, 64, 65, 130):
        password = "".join(chr(rng.choice([rng.randrange(32, 127), 0xE9, 0x4E2D]))
                           for _ in range(n))
        salt = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 17)))
        for setting in (f"$6${salt}", f"$6$rounds=1234${salt}"):
            assert sha512_crypt(password.encode(), setting) == crypt.crypt(password, setting)


def test_hbmqtt_style_file_with_passlib_default_rounds(tmp_path: Path) -> None:
    """hbmqtt's password file: user:<passlib sha512_crypt>, 656,000 rounds by default. Costly
    hashes are verified once per (user, password) and the verdict remembered."""
    line = sha512_crypt(b"hb-pass", "$6$rounds=656000$Qc1sUD1x5XQmJZRb")
    path = tmp_path / "hbmqtt.passwd"
    path.write_text(f"# hbmqtt\nalice:{line}\ncarol:{sha512_crypt(b'c', '$6$abc')}\n")
    pf = PasswordFile.load(str(path))
    assert pf.users["alice"].iterations == 656000 and pf.users["alice"].costly
    assert not pf.users["carol"].costly  # 5000 rounds (no rounds= given)
    t0 = time.perf_counter()
    assert pf.verify("alice", b"hb-pass")
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert pf.verify("alice", b"hb-pass")
    again = time.perf_counter() - t0
    assert again < first / 10, (first, again)
    assert not pf.verify("alice", b"wrong") and not pf.verify("alice", b"wrong")
    assert pf.verify("carol", b"c") and not pf.verify("carol", b"C")


# -- what is refused -------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "problem"), [
    ("secret", "plaintext passwords are refused"),
    ("$5$abc$def", "unknown hash type $5$"),
    ("$7$101$salt", "$7$<iterations>$<salt>$<hash>"),
    ("$7$x$c2FsdA$aGFzaA", "bad PBKDF2 iteration count"),
    ("$7$101$c2FsdA$aGFzaA", "64 hash bytes"),
    ("$7$101$!!!$aGFzaA", "the salt is not base64"),
    ("$6$rounds=10$abc$" + "a" * 86, "bad sha512-crypt rounds '10'"),
    ("$6$abc$short", "86 characters"),
    ("$6$bad*salt$" + "a" * 86, "at most 16 characters"),
])
def test_bad_hashes_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_hash(text)


def test_bad_file_names_the_file_and_every_bad_line(tmp_path: Path) -> None:
    good = hash_password("x")
    path = tmp_path / "passwd"
    path.write_text(f"# users\n\nalice:{good}\nbob:plain\nno colon here\nalice:{good}\n"
                    f"  carol : {good}  \n")
    with pytest.raises(ConfigError) as ei:
        load_password_file(str(path))
    exc = ei.value
    assert exc.filename == str(path)
    assert [(i.line, i.key) for i in exc.issues] == [
        (4, "auth.password-file"), (5, "auth.password-file"), (6, "auth.password-file")]
    text = str(exc)
    assert f"{path}:4: auth.password-file: user 'bob': not a password hash" in text
    assert f"{path}:5: auth.password-file: expected 'user:hash'" in text
    assert f"{path}:6: auth.password-file: user 'alice' is given twice (first on line 3)" in text


def test_blanks_around_user_and_hash_are_trimmed_like_mosquitto(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text(f"  carol : {hash_password('pw')}  \r\n")
    assert PasswordFile.load(str(path)).verify("carol", b"pw")


# -- editing ---------------------------------------------------------------------------------

def test_set_and_delete_keep_other_lines_mode_0600_atomic(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text(f"# managed by hand\nzed:{hash_password('z')}\n")
    os.chmod(path, 0o644)
    assert set_password(str(path), "alice", "alice-plaintext-1") is True
    assert set_password(str(path), "zed", "zed-plaintext-2") is False  # changed in place
    lines = path.read_text().splitlines()
    assert lines[0] == "# managed by hand"
    assert lines[1].startswith("zed:$7$101$") and lines[2].startswith("alice:$7$101$")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # never the plaintext (long markers: a short one can occur in base64 by chance)
    assert "plaintext" not in path.read_text()
    pf = PasswordFile.load(str(path))
    assert pf.verify("zed", b"zed-plaintext-2") and pf.verify("alice", b"alice-plaintext-1")
    assert delete_user(str(path), "zed") is True
    before = path.read_bytes()
    assert delete_user(str(path), "zed") is False
    assert path.read_bytes() == before
    assert path.read_text().splitlines()[0] == "# managed by hand"
    assert sorted(os.listdir(tmp_path)) == ["passwd"]  # no temporary file left behind


@pytest.mark.parametrize("user", ["", "a:b", " lead", "trail ", "#hash", "new\nline"])
def test_user_names_that_cannot_be_stored_are_refused(tmp_path: Path, user: str) -> None:
    with pytest.raises(ValueError):
        set_password(str(tmp_path / "passwd"), user, "pw")
    assert not (tmp_path / "passwd").exists()


# -- mqttbroker passwd -------------------------------------------------------------------------

def test_cli_adds_changes_and_deletes(tmp_path: Path) -> None:
    runner = CliRunner()
    path = str(tmp_path / "passwd")
    r = runner.invoke(cli, ["passwd", path, "alice", "--password", "pw1"])
    assert r.exit_code == 0 and "added alice" in r.output, r.output
    r = runner.invoke(cli, ["passwd", path, "alice", "--password", "pw-2"])
    assert r.exit_code == 0 and "changed the password of alice" in r.output
    assert PasswordFile.load(path).verify("alice", b"pw-2")
    assert "pw-2" not in Path(path).read_text()  # '-' is not in the hashes' base64
    r = runner.invoke(cli, ["passwd", "--delete", path, "alice"])
    assert r.exit_code == 0 and "deleted alice" in r.output
    assert load_password_file(path) == {}
    r = runner.invoke(cli, ["passwd", "-D", path, "alice"])
    assert r.exit_code == 1 and "user 'alice' is not in" in r.output


def test_cli_prompts_twice_without_echo(tmp_path: Path) -> None:
    runner = CliRunner()
    path = str(tmp_path / "passwd")
    r = runner.invoke(cli, ["passwd", path, "bob"], input="one\ntwo\nsecret\nsecret\n")
    assert r.exit_code == 0, r.output
    assert "do not match" in r.output  # asked again after a mismatch
    assert "secret" not in r.output  # hidden input is not echoed
    assert PasswordFile.load(path).verify("bob", b"secret")


def test_cli_refuses_bad_user_and_corrupt_file(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "passwd"
    r = runner.invoke(cli, ["passwd", str(path), "a:b", "--password", "x"])
    assert r.exit_code == 2 and "must not contain ':'" in r.output
    path.write_text("alice:plaintext\n")
    r = runner.invoke(cli, ["passwd", str(path), "bob", "--password", "x"])
    assert r.exit_code == 1
    assert f"{path}:1: auth.password-file: user 'alice': not a password hash" in r.output
    assert path.read_text() == "alice:plaintext\n"  # untouched
