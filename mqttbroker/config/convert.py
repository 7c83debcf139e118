"""Checking plain values: the :class:`_Validator` that walks a section's keys and collects
issues with their lines, and the value converters, ``(validator, value, key path) ->
converted value`` or raise :class:`_Bad` (``_int``, ``_float``, ``_bool``, ``_str``,
``_file``, ``_bind``, ``_acl``, ...).
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from ..errors import ConfigError, ConfigIssue
from .yaml_reader import _INVALID, _canon, _choices_msg, _describe, _dotted, _KeyPath


class _Bad(Exception):
    """A value is wrong; the message is the problem text."""


_Conv = Callable[["_Validator", Any, _KeyPath], Any]


class _Validator:
    """Walks plain values against the schema, collecting issues with their lines."""

    def __init__(self, lines: Mapping[_KeyPath, int], base_dir: str | None) -> None:
        self.lines = lines
        self.base_dir = base_dir
        self.issues: list[ConfigIssue] = []

    def issue(self, path: _KeyPath, problem: str) -> None:
        self.issues.append(ConfigIssue(_dotted(path), self.lines.get(path), problem))

    def mapping(self, value: Any, path: _KeyPath) -> dict[str, Any]:
        """``value`` as a str-keyed dict (null is empty); raises :class:`_Bad` otherwise."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise _Bad(f"expected a mapping, got {_describe(value)}")
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str):
                out[key] = item
            else:
                self.issue((*path, str(key)), f"key must be a string, got {_describe(key)}")
        return out

    def section(
        self,
        value: Any,
        path: _KeyPath,
        fields: Mapping[str, _Conv],
        ignored: frozenset[str] = frozenset(),
        elsewhere: Mapping[str, str] | None = None,
    ) -> dict[str, tuple[Any, _KeyPath]]:
        """Check a mapping's keys; return canonical name -> (converted value or _INVALID, path)."""
        try:
            body = self.mapping(value, path)
        except _Bad as exc:
            self.issue(path, str(exc))
            return {"": (_INVALID, path)}
        out: dict[str, tuple[Any, _KeyPath]] = {}
        seen: dict[str, str] = {}
        for key, item in body.items():
            kpath, canon = (*path, key), _canon(key)
            if canon in seen:
                other = seen[canon]
                where = self.lines.get((*path, other))
                self.issue(kpath, f"same setting as {other!r}"
                           + (f" on line {where}" if where else "") + "; give it once")
                continue
            seen[canon] = key
            if canon in ignored:
                continue
            conv = fields.get(canon)
            if conv is None:
                self.issue(kpath, self._unknown(key, fields, elsewhere or {}))
                out[canon] = (_INVALID, kpath)
                continue
            if item is _INVALID:
                out[canon] = (_INVALID, kpath)
                continue
            try:
                out[canon] = (conv(self, item, kpath), kpath)
            except _Bad as exc:
                self.issue(kpath, str(exc))
                out[canon] = (_INVALID, kpath)
        return out

    @staticmethod
    def _unknown(key: str, fields: Mapping[str, _Conv], elsewhere: Mapping[str, str]) -> str:
        canon = _canon(key)
        if canon in elsewhere:
            return f"unknown key here; it belongs in the {elsewhere[canon]!r} section"
        names = sorted(fields)
        match = difflib.get_close_matches(canon, names, n=1, cutoff=0.6)
        if match:
            hint = match[0].replace("_", "-") if "-" in key else match[0]
            return f"unknown key; did you mean {hint!r}?"
        return f"unknown key (expected one of: {', '.join(names)})"

    def built(self, cls: Callable[..., Any], values: dict[str, tuple[Any, _KeyPath]]) -> Any:
        """``cls(**values)`` unless some value is already reported as invalid."""
        if any(v is _INVALID for v, _ in values.values()):
            return _INVALID
        return cls(**{k: v for k, (v, _) in values.items()})


# ---- value converters: (validator, value, key path) -> converted value, or raise _Bad


def _int(lo: int, hi: int | None = None) -> _Conv:
    def conv(_v: _Validator, value: Any, _p: _KeyPath) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected an integer, got {_describe(value)}")
        if value < lo or (hi is not None and value > hi):
            raise _Bad(f"must be at least {lo}, got {value}" if hi is None
                       else f"must be between {lo} and {hi}, got {value}")
        return value

    return conv


def _float(lo: float, *, exclusive: bool = False) -> _Conv:
    def conv(_v: _Validator, value: Any, _p: _KeyPath) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad(f"expected a number, got {_describe(value)}")
        if not math.isfinite(value):
            raise _Bad(f"must be a finite number, got {value}")
        if value < lo or (exclusive and value == lo):
            raise _Bad(f"must be {'greater than' if exclusive else 'at least'} {lo}, got {value}")
        return float(value)

    return conv


def _bool(_v: _Validator, value: Any, _p: _KeyPath) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, got {_describe(value)}")
    return value


def _str(_v: _Validator, value: Any, _p: _KeyPath) -> str:
    if not isinstance(value, str):
        raise _Bad(f"expected a string, got {_describe(value)}")
    return value


_SCRAM_RE = re.compile(r"^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$")


def _scram_users(v: _Validator, value: Any, path: _KeyPath) -> Mapping[str, str]:
    body = v.mapping(value, path)
    out: dict[str, str] = {}
    for user, cred in body.items():
        if not isinstance(cred, str) or not _SCRAM_RE.match(cred):
            v.issue((*path, str(user)), "expected a SCRAM credential "
                    "'SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>' "
                    "(make one with: mqttbroker scram-credential USER)")
            continue
        out[str(user)] = cred
    return MappingProxyType(out)


def _choice(choices: tuple[str, ...], normalize: Callable[[str], str]) -> _Conv:
    def conv(_v: _Validator, value: Any, _p: _KeyPath) -> str:
        if not isinstance(value, str):
            raise _Bad(f"expected a string, got {_describe(value)}")
        norm = normalize(value.strip())
        if norm not in choices:
            raise _Bad(_choices_msg(choices, value))
        return norm

    return conv


def _resolve(v: _Validator, value: Any, kind: str) -> str:
    """A file or folder name; relative names are resolved against the config file's folder."""
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"expected a {kind} name, got {_describe(value)}")
    path = os.path.expanduser(value)
    if v.base_dir is not None and not os.path.isabs(path):
        path = os.path.join(v.base_dir, path)
    return path


def _file(v: _Validator, value: Any, _p: _KeyPath) -> str:
    """A file that must exist (:func:`_resolve`)."""
    path = _resolve(v, value, "file")
    if not os.path.exists(path):
        raise _Bad(f"file not found: {path}")
    if not os.path.isfile(path):
        raise _Bad(f"not a regular file: {path}")
    return path


def _folder(v: _Validator, value: Any, _p: _KeyPath) -> str:
    """A folder that must exist (``capath``)."""
    path = _resolve(v, value, "folder")
    if not os.path.isdir(path):
        raise _Bad(f"folder not found: {path}")
    return path


def _tls_version(text: str) -> str:
    """Mosquitto's ``tlsv1.2`` spelling; ``1.2``, ``TLSv1.2`` and ``tls1.2`` mean the same."""
    text = text.lower().replace(" ", "")
    if text.startswith("tls1"):
        text = "tlsv" + text[3:]
    return text if text.startswith("tlsv") else "tlsv" + text


def _path(v: _Validator, value: Any, _p: _KeyPath) -> str:
    """A file to create or open; relative names are resolved against the config file's
    folder. Its folder is made when the broker starts."""
    path = _resolve(v, value, "file")
    if os.path.isdir(path):
        raise _Bad(f"is a directory, expected a file name: {path}")
    return os.path.normpath(path)


def _url_path(_v: _Validator, value: Any, _p: _KeyPath) -> str:
    if not isinstance(value, str) or not value.startswith("/") or any(
            c in value for c in " ?#"):
        raise _Bad(f"expected an HTTP path starting with '/', e.g. '/mqtt', got {value!r}")
    return value


def _token(_v: _Validator, value: Any, _p: _KeyPath) -> str:
    if not isinstance(value, str) or len(value.strip()) < 8:
        raise _Bad("expected a token of at least 8 characters (e.g. the output of "
                   "`python -c 'import secrets; print(secrets.token_urlsafe())'`)")
    return value.strip()


_DIGITS: Final = re.compile(r"[0-9]+")
_HOSTNAME: Final = re.compile(r"[A-Za-z0-9._-]+")


def _bind(_v: _Validator, value: Any, _p: _KeyPath) -> tuple[str, int]:
    """``host:port``, ``[v6addr]:port``, ``:port`` or amqtt's bare ``port`` (all interfaces)."""
    if not isinstance(value, str):
        hint = f" (quote it: ':{value}')" if isinstance(value, int) else ""
        raise _Bad(f"expected 'host:port' as a string, got {_describe(value)}{hint}")
    text = value.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _Bad(f"missing ']' after the IPv6 address in {value!r} (e.g. '[::1]:1883')")
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _Bad(f"{host!r} is not an IPv6 address") from None
        if not rest.startswith(":") or not rest[1:]:
            raise _Bad(f"missing port in {value!r}: expected '[host]:port', e.g. '[::1]:1883'")
        port_text = rest[1:]
    elif _DIGITS.fullmatch(text):
        host, port_text = "0.0.0.0", text
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text:
            raise _Bad(f"missing port in {value!r}: expected 'host:port', e.g. '127.0.0.1:1883'")
        if ":" in host:
            raise _Bad(f"write IPv6 addresses in brackets, e.g. '[{host}]:{port_text}'")
        if not host:
            host = "0.0.0.0"  # ":1883" listens on every IPv4 interface
        elif not _HOSTNAME.fullmatch(host):
            raise _Bad(f"invalid host {host!r}")
    if not _DIGITS.fullmatch(port_text):
        raise _Bad(f"port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise _Bad(f"port {port} is out of range 0..65535")
    return host, port


def _max_connections(_v: _Validator, value: Any, _p: _KeyPath) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"expected an integer, got {_describe(value)}")
    return max(value, 0)  # hbmqtt uses -1 for "unlimited"


def _topic_filter_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a topic filter string, got {_describe(value)}"
    if not value:
        return "empty topic filter"  # [MQTT-4.7.3-1]
    if "\0" in value:
        return "topic filter contains a NUL character"  # [MQTT-4.7.3-2]
    levels = value.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return f"{value!r}: '#' must be a whole level and the last one"  # [MQTT-4.7.1-2]
        if "+" in level and level != "+":
            return f"{value!r}: '+' must be a whole level"  # [MQTT-4.7.1-3]
    return None


def _acl(v: _Validator, value: Any, path: _KeyPath) -> Mapping[str, tuple[str, ...]]:
    """username -> list of topic filters (a username with no value is allowed nothing)."""
    out: dict[str, tuple[str, ...]] = {}
    bad = False
    for user, filters in v.mapping(value, path).items():
        upath = (*path, user)
        if filters is None:
            out[user] = ()
            continue
        if not isinstance(filters, list):
            v.issue(upath, f"expected a list of topic filters, got {_describe(filters)}")
            bad = True
            continue
        for i, item in enumerate(filters):
            problem = None if item is _INVALID else _topic_filter_problem(item)
            if problem:
                v.issue((*upath, i), problem)
            bad = bad or item is _INVALID or problem is not None
        out[user] = tuple(filters)
    return _INVALID if bad else MappingProxyType(out)


def _password_file(v: _Validator, value: Any, path: _KeyPath) -> str:
    """A password file (Mosquitto's or hbmqtt's format), read now so that a bad line is
    reported with the config (FILE:LINE of the password file in the problem)."""
    from ..passwd import load_password_file

    return _parsed_file(v, value, path, load_password_file)


def _acl_file(v: _Validator, value: Any, path: _KeyPath) -> str:
    """A Mosquitto ACL file, parsed now like :func:`_password_file`."""
    from ..acl import load_acl_file

    return _parsed_file(v, value, path, load_acl_file)


def _parsed_file(v: _Validator, value: Any, path: _KeyPath,
                 load: Callable[[str], object]) -> str:
    name = _file(v, value, path)
    try:
        load(name)
    except ConfigError as exc:
        _file_issues(v, path, exc)
        return _INVALID  # type: ignore[no-any-return]
    return name


def _file_issues(v: _Validator, path: _KeyPath, exc: ConfigError) -> None:
    for issue in exc.issues:
        where = f"{exc.filename}:{issue.line}" if issue.line else f"{exc.filename}"
        v.issue(path, f"{where}: {issue.problem}")


def _refusal_code(_v: _Validator, value: Any, _p: _KeyPath) -> int:
    """0x80 or 0x87 (YAML reads 0x80 as the number 128; "0x80" as a string works too)."""
    if isinstance(value, str) and value.strip().lower() in ("0x80", "0x87"):
        return int(value.strip(), 16)
    if isinstance(value, int) and not isinstance(value, bool) and value in (0x80, 0x87):
        return value
    raise _Bad(f"must be 0x80 (Unspecified error) or 0x87 (Not authorized), got {value!r}")


_NODE_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _redis_url(_v: _Validator, value: Any, _p: _KeyPath) -> str:
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        raise _Bad(f"expected a Redis URL like 'redis://127.0.0.1:6379/0', got {value!r}")
    return value


def _node_name(_v: _Validator, value: Any, _p: _KeyPath) -> str:
    if not isinstance(value, str) or not _NODE_NAME.fullmatch(value):
        raise _Bad("expected a node name of 1 to 64 letters, digits, '.', '_' or '-', "
                   f"got {value!r}")
    return value
