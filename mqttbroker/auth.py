"""Who may connect, publish and subscribe.

* **Authentication**: ``auth.password-file`` (Mosquitto's or hbmqtt's format, see
  :mod:`.passwd`) and ``allow-anonymous``. With a password file, a client giving a user name
  must be in it with that password (else CONNACK 0x04 / 0x86); a client giving none is
  anonymous, let in only where anonymous clients are allowed (else 0x05 / 0x87). Without a
  password file, user names are not checked: such clients are let in where anonymous ones are.
* **Anonymous access per listener**: a listener's own ``allow-anonymous``; else
  ``auth.allow-anonymous``; when neither is given, only on loopback listeners (127.0.0.0/8,
  ::1, localhost), like Mosquitto 2, which without a listener is local-only and otherwise
  refuses anonymous clients unless told.
* **Authorisation**: Mosquitto's ``auth.acl-file`` (:mod:`.acl`) and hbmqtt's ``topic-check``
  (``acl`` for subscribe, ``publish-acl`` for publish, keyed by user name, ``anonymous`` for
  clients without one); when both are configured a request must pass both.

Synchronous and pure. With an ACL file the authorizer also remembers, per client id, the
entries that apply (bound at CONNECT, kept while the session lives) and, in :attr:`readers`,
the clients whose deliveries must be checked topic by topic; without one, :attr:`readers` stays
empty and delivery costs nothing extra.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from typing import Final

from .acl import AclFile, ClientAcl, load_acl_file
from .config import AuthConfig, ListenerConfig, TopicCheckConfig
from .errors import ConfigError
from .passwd import PasswordFile
from .protocol.constants import ReasonCode
from .protocol.topics import topic_matches

ANONYMOUS: Final = "anonymous"

log: Final = logging.getLogger("mqttbroker.auth")


def is_loopback(host: str) -> bool:
    """Is ``host`` (a listener's bind address) reachable from this machine only?"""
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def anonymous_allowed(auth: AuthConfig, listener: ListenerConfig) -> bool:
    """May clients without a user name connect to ``listener``?"""
    if listener.allow_anonymous is not None:
        return listener.allow_anonymous
    if auth.allow_anonymous is not None:
        return auth.allow_anonymous
    return is_loopback(listener.host)


class Authorizer:
    """Answers the questions the broker asks, synchronously."""

    __slots__ = ("_anonymous", "_clients", "acl", "auth", "passwords", "publish_checked",
                 "readers", "topic_check")

    def __init__(self, auth: AuthConfig, topic_check: TopicCheckConfig,
                 listeners: Iterable[ListenerConfig] = ()) -> None:
        """Reads the password and ACL files (ConfigError naming the file and line)."""
        self.auth = auth
        self.topic_check = topic_check
        self._anonymous = {lc.name: anonymous_allowed(auth, lc) for lc in listeners}
        self.passwords = PasswordFile.load(auth.password_file) if auth.password_file else None
        self.acl: AclFile | None = load_acl_file(auth.acl_file) if auth.acl_file else None
        # client id -> its ACL entries, for every client whose session lives (ACL file only)
        self._clients: dict[str, ClientAcl] = {}
        # client id -> entries to check each delivery against (a subscription reaches past
        # what the client may read); empty unless there is an ACL file
        self.readers: dict[str, ClientAcl] = {}
        # is there anything to check on PUBLISH? (the broker skips the call when not)
        self.publish_checked = self.acl is not None or (
            topic_check.enabled and bool(topic_check.publish_acl))
        self._warn_unverified()

    def _warn_unverified(self) -> None:
        if self.acl is not None and self.acl.users and self.passwords is None \
                and any(self._anonymous.values()):
            log.warning("acl-file %s has user sections but there is no password-file: user "
                        "names are not verified, a client may claim any of them",
                        self.acl.path)

    # -- CONNECT ----------------------------------------------------------------------------

    def anonymous_ok(self, listener: str | None) -> bool:
        """May a client without a user name connect through ``listener``? (An unknown
        listener: only when ``auth.allow-anonymous`` is true.)"""
        allowed = self._anonymous.get(listener) if listener is not None else None
        return allowed if allowed is not None else self.auth.allow_anonymous is True

    def authenticate(self, client_id: str, username: str | None, password: bytes | None,
                     listener: str | None = None) -> ReasonCode:
        """SUCCESS, or why the CONNECT is refused: NOT_AUTHORIZED (anonymous where that is
        not allowed; 3.1.1 return code 5) or BAD_USER_NAME_OR_PASSWORD (4)."""
        if username is None:
            return ReasonCode.SUCCESS if self.anonymous_ok(listener) \
                else ReasonCode.NOT_AUTHORIZED
        if self.passwords is not None:
            if self.passwords.verify(username, password):
                return ReasonCode.SUCCESS
            return ReasonCode.BAD_USER_NAME_OR_PASSWORD
        # no password file: a user name proves nothing, so it gets in where anyone does
        return ReasonCode.SUCCESS if self.anonymous_ok(listener) \
            else ReasonCode.BAD_USER_NAME_OR_PASSWORD

    def bind(self, client_id: str, username: str | None,
             filters: Iterable[str] = ()) -> ClientAcl | None:
        """A client connected with ``username``: derive its ACL entries and decide from its
        session's subscription ``filters`` (shared ones as their inner filter) whether its
        deliveries need checking. Returns the entries (None without an ACL file)."""
        if self.acl is None:
            return None
        client = self._client(client_id, username)
        # a filter not wholly readable (or, after a change of user, not readable at all)
        if any(client.subscribe(f) != (True, False) for f in filters):
            self.readers[client_id] = client
        else:
            self.readers.pop(client_id, None)
        return client

    def forget(self, client_id: str) -> None:
        """The client's session ended."""
        if self._clients:
            self._clients.pop(client_id, None)
            self.readers.pop(client_id, None)

    def _client(self, client_id: str, username: str | None) -> ClientAcl:
        """The client's entries, derived again when its user name changed."""
        assert self.acl is not None
        client = self._clients.get(client_id)
        if client is None or client.username != username:
            client = self._clients[client_id] = self.acl.for_client(username, client_id)
            if client_id in self.readers:
                self.readers[client_id] = client
        return client

    # -- SUBSCRIBE / PUBLISH ------------------------------------------------------------------

    def _topic_check(self, table: Mapping[str, tuple[str, ...]], username: str | None,
                     topic: str) -> bool:
        filters = table.get(username or ANONYMOUS)
        if filters is None:
            return False
        return any(topic_matches(f, topic) or f == topic for f in filters)

    def may_subscribe(self, client_id: str, username: str | None, topic_filter: str) -> bool:
        """May the client subscribe to ``topic_filter`` (a shared subscription's inner
        filter)? hbmqtt's ``topic-check.acl``: one of the user's filters covers it. The ACL
        file: some topic it matches is readable; when it reaches past what is, the client's
        deliveries are checked from now on."""
        if self.topic_check.enabled and not self._topic_check(self.topic_check.acl, username,
                                                              topic_filter):
            return False
        if self.acl is None:
            return True
        client = self._client(client_id, username)
        allowed, check = client.subscribe(topic_filter)
        if allowed and check:
            self.readers[client_id] = client
        return allowed

    def may_publish(self, client_id: str, username: str | None, topic: str) -> bool:
        """May the client publish to ``topic``? hbmqtt's ``topic-check.publish-acl`` (when
        given) and the ACL file's write access."""
        tc = self.topic_check
        if tc.enabled and tc.publish_acl and not self._topic_check(tc.publish_acl, username,
                                                                   topic):
            return False
        if self.acl is None:
            return True
        client = self._clients.get(client_id)
        if client is None or client.username != username:
            # not bound (yet): a CONNECT's will, judged before the client is let in; nothing
            # is kept for a client that may still be refused
            client = self.acl.for_client(username, client_id)
        return client.may_write(topic)

    # -- SIGHUP -------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Read the password and ACL files again. If either is unreadable or invalid, log an
        error and keep the ones in use (False). Connected clients stay connected; their
        deliveries are checked one by one against the new ACL until they reconnect."""
        auth = self.auth
        try:
            passwords = PasswordFile.load(auth.password_file) if auth.password_file else None
            acl = load_acl_file(auth.acl_file) if auth.acl_file else None
        except ConfigError as exc:
            log.error("reload: keeping the password and ACL files in use; the new ones are "
                      "invalid:\n%s", exc)
            return False
        self.passwords = passwords
        self.acl = acl
        if acl is not None:
            for cid, old in list(self._clients.items()):
                client = acl.for_client(old.username, cid)
                self._clients[cid] = client
                self.readers[cid] = client  # subscriptions not known here: check them all
        self._warn_unverified()
        log.info("reloaded%s%s", f" password file {auth.password_file}" if passwords else "",
                 f" ACL file {auth.acl_file}" if acl else "")
        return True
