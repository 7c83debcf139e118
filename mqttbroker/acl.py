"""Mosquitto's ACL file (mosquitto.conf(5), ``acl_file``) and the checks made with it.

Syntax, line by line (as Mosquitto 2.0 parses it)::

    # a comment                       (a line whose first non-blank character is '#')
    topic [read|write|readwrite|deny] FILTER      (no access word: readwrite)
    pattern [read|write|readwrite|deny] FILTER    (%c: client id, %u: user name)
    user NAME                         (the topic lines after it are NAME's)

``topic`` lines before any ``user`` line apply to anonymous clients (no user name); ``pattern``
lines apply to every client wherever they stand (those with ``%u`` not to anonymous ones). A
FILTER may contain spaces when the access word is given.

Semantics (the documented ones): ``read`` lets a client receive messages on matching topics
(and so subscribe), ``write`` lets it publish; ``deny`` entries are handled first and win over
any grant, the client's own and the patterns alike; what nothing grants is refused. A filter
whose first level is a wildcard does not match ``$`` topics [MQTT-4.7.2-1], so ``$SYS/#`` needs
a grant of its own. As in Mosquitto, when patterns exist a client whose user name or client id
contains ``+`` or ``#`` is refused everything (it could otherwise widen a pattern).

Filters are compared with filters, not only topics: :meth:`ClientAcl.subscribe` says whether a
SUBSCRIBE filter may be granted (some topic it matches is readable) and whether its messages
must still be checked one by one (the filter reaches beyond the read grants, or a deny entry
touches it). Pure; no I/O beyond reading the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

from .errors import ConfigError, ConfigIssue, read_text_file
from .protocol.topics import topic_filter_problem

__all__ = ["READ", "WRITE", "AclFile", "ClientAcl", "filter_covers", "filters_meet",
           "load_acl_file"]

log: Final = logging.getLogger("mqttbroker.auth")

READ: Final = 1
WRITE: Final = 2
DENY: Final = 0
KEY: Final = "auth.acl-file"
_ACCESS: Final = {"read": READ, "write": WRITE, "readwrite": READ | WRITE, "deny": DENY}
_CACHE_SIZE: Final = 1024  # topics remembered per client

Levels = tuple[str, ...]


# --------------------------------------------------------------------------- filter algebra

def _dollar(level: str) -> bool:
    return level.startswith("$")


def matches(f: Levels, t: Levels) -> bool:
    """Does filter ``f`` match topic ``t`` (both split on '/')?"""
    if f[0] in ("+", "#") and _dollar(t[0]):
        return False  # [MQTT-4.7.2-1]
    n = len(t)
    for i, level in enumerate(f):
        if level == "#":
            return True  # also the parent: "a/#" matches "a" [MQTT-4.7.1-2]
        if i >= n or (level != "+" and level != t[i]):
            return False
    return len(f) == n


def filter_covers(g: Levels, f: Levels) -> bool:
    """Does every topic that ``f`` matches also match ``g``?"""
    for i, fl in enumerate(f):
        if i >= len(g):
            return False
        gl = g[i]
        if gl == "#":
            return not (i == 0 and fl not in ("+", "#") and _dollar(fl))
        if fl == "#":
            return False  # f goes on to any depth (and its parent); only '#' covers that
        if gl == "+":
            if i == 0 and fl != "+" and _dollar(fl):
                return False
            continue
        if fl != gl:
            return False  # a different name, or f's '+' against a name
    return len(g) == len(f) or (len(g) == len(f) + 1 and g[-1] == "#")


def filters_meet(a: Levels, b: Levels) -> Levels | None:
    """The filter matching exactly the topics both ``a`` and ``b`` match; None if none."""
    out: list[str] = []
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x == "#" or y == "#":
            other = y if x == "#" else x
            if other is None:
                # "a/#" meets "a" in "a" itself; the parent level is in both
                return tuple(out)
            if i == 0 and other not in ("+", "#") and _dollar(other):
                return None
            return (*out, *(b[i:] if x == "#" else a[i:]))
        if x is None or y is None:
            return None
        if x == "+" or y == "+":
            other = y if x == "+" else x
            if i == 0 and other != "+" and _dollar(other):
                return None
            out.append(other)
            continue
        if x != y:
            return None
        out.append(x)
    return tuple(out)


# --------------------------------------------------------------------------- the file

@dataclass(frozen=True, slots=True)
class Entry:
    """One ``topic`` or ``pattern`` line."""

    access: int  # READ, WRITE, READ|WRITE or DENY
    topic: str
    line: int


@dataclass(frozen=True, slots=True)
class AclFile:
    """A parsed ACL file: the anonymous entries, each user's, and the patterns."""

    path: str
    anonymous: tuple[Entry, ...] = ()
    users: dict[str, tuple[Entry, ...]] = field(default_factory=dict)
    patterns: tuple[Entry, ...] = ()

    def for_client(self, username: str | None, client_id: str) -> ClientAcl:
        """The entries that apply to one client, with ``%c`` and ``%u`` substituted."""
        own = self.anonymous if username is None else self.users.get(username, ())
        entries = [(e.access, e.topic) for e in own]
        refuse_all = bool(self.patterns) and (
            any(ch in client_id for ch in "+#")
            or (username is not None and any(ch in username for ch in "+#")))
        if refuse_all:
            log.info("ACL: refusing everything to client %r (user %r): '+' or '#' in its "
                     "client id or user name could widen a pattern", client_id, username)
            return ClientAcl(username, client_id, ())
        for e in self.patterns:
            if username is None and "%u" in e.topic:
                continue
            topic = e.topic.replace("%c", client_id)
            if username is not None:
                topic = topic.replace("%u", username)
            entries.append((e.access, topic))
        return ClientAcl(username, client_id, tuple(entries))


def load_acl_file(path: str) -> AclFile:
    """Parse a Mosquitto ACL file; ConfigError naming the file and every bad line."""
    text = read_text_file(path, KEY)
    issues: list[ConfigIssue] = []
    anonymous: list[Entry] = []
    users: dict[str, list[Entry]] = {}
    patterns: list[Entry] = []
    current: list[Entry] = anonymous
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, *more = line.split(None, 1)
        rest = more[0].strip() if more else ""
        if keyword == "user":
            if not rest:
                issues.append(ConfigIssue(KEY, no, "'user' needs a user name"))
                continue
            current = users.setdefault(rest, [])
            continue
        if keyword not in ("topic", "pattern"):
            issues.append(ConfigIssue(KEY, no, f"unknown line {keyword!r} (expected 'topic', "
                                      "'pattern', 'user' or a '#' comment)"))
            continue
        if not rest:
            issues.append(ConfigIssue(KEY, no, f"'{keyword}' needs a topic filter"))
            continue
        word, *tail = rest.split(None, 1)
        topic = tail[0].strip() if tail else ""
        if not topic:  # "topic FILTER": read and write
            word, topic = "readwrite", word
        access = _ACCESS.get(word)
        if access is None:
            issues.append(ConfigIssue(KEY, no, f"unknown access {word!r} (expected read, "
                                      "write, readwrite or deny before the filter)"))
            continue
        problem = topic_filter_problem(topic)
        if problem is not None:
            issues.append(ConfigIssue(KEY, no, f"invalid topic filter {topic!r}: {problem}"))
            continue
        entry = Entry(access, topic, no)
        if keyword == "pattern":
            if "%c" not in topic and "%u" not in topic:
                log.warning("%s:%d: ACL pattern %r has neither %%c nor %%u", path, no, topic)
            patterns.append(entry)
        else:
            current.append(entry)
    if issues:
        raise ConfigError(issues, path)
    return AclFile(path, tuple(anonymous), {u: tuple(es) for u, es in users.items()},
                   tuple(patterns))


# --------------------------------------------------------------------------- one client

class ClientAcl:
    """What one client (user name, client id) may do, by its ACL entries."""

    __slots__ = ("_cache", "client_id", "denies", "reads", "username", "writes")

    def __init__(self, username: str | None, client_id: str,
                 entries: tuple[tuple[int, str], ...]) -> None:
        self.username = username
        self.client_id = client_id
        split = [(access, tuple(topic.split("/"))) for access, topic in entries]
        self.denies: tuple[Levels, ...] = tuple(f for a, f in split if a == DENY)
        self.reads: tuple[Levels, ...] = tuple(f for a, f in split if a & READ)
        self.writes: tuple[Levels, ...] = tuple(f for a, f in split if a & WRITE)
        self._cache: dict[str, bool] = {}  # topic -> may read

    def __repr__(self) -> str:
        return f"<ClientAcl {self.username!r}/{self.client_id!r}>"

    def _allowed(self, grants: tuple[Levels, ...], topic: str) -> bool:
        t = tuple(topic.split("/"))
        if any(matches(d, t) for d in self.denies):
            return False  # deny entries are handled first (mosquitto.conf(5))
        return any(matches(g, t) for g in grants)

    def may_read(self, topic: str) -> bool:
        """May the client receive a message on ``topic``?"""
        verdict = self._cache.get(topic)
        if verdict is None:
            verdict = self._allowed(self.reads, topic)
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[topic] = verdict
        return verdict

    def may_write(self, topic: str) -> bool:
        """May the client publish to ``topic``?"""
        return self._allowed(self.writes, topic)

    def subscribe(self, topic_filter: str) -> tuple[bool, bool]:
        """(may subscribe, messages need a check each) for a SUBSCRIBE filter.

        Granted when some read grant meets the filter in topics no deny entry covers whole;
        checked per message unless one read grant covers the whole filter and no deny entry
        touches it.
        """
        f = tuple(topic_filter.split("/"))
        if any(filter_covers(d, f) for d in self.denies):
            return False, False
        readable = False
        for g in self.reads:
            meet = filters_meet(f, g)
            if meet is not None and not any(filter_covers(d, meet) for d in self.denies):
                readable = True
                break
        if not readable:
            return False, False
        whole = any(filter_covers(g, f) for g in self.reads) and not any(
            filters_meet(f, d) is not None for d in self.denies)
        return True, not whole
