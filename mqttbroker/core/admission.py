"""Admission: which sockets are counted, which are refused, and the per-address defences.

Connection limits (per listener ``max-connections`` and the broker's ``max_connections``), the
per-address connection rate and the failed-login delay (abuse.py) decide here; the connection
only asks. No I/O and no clock of its own: ``now`` is an argument.
"""

from __future__ import annotations

import logging
from typing import Final, Generic, Protocol, TypeVar

from ..abuse import ConnectionRateLimiter, LoginFailures, address_key
from ..config import Config
from ..metrics import Metrics

log: Final = logging.getLogger("mqttbroker")

MAX_PENDING_REFUSALS: Final = 64  # sockets over a connection limit kept open to be told why


class Candidate(Protocol):
    """What admission needs to know of a connection."""

    listener: str
    peer: str
    admitted: bool | None


A = TypeVar("A", bound=Candidate)


def address(conn: Candidate) -> str:
    """The source address the per-address limits count ``conn`` under (IPv6: its /64)."""
    return address_key(conn.peer.rpartition(":")[0])


class Admission(Generic[A]):
    """Open connections per listener and in all, refusals pending, and the per-address
    connection rate and failed logins."""

    def __init__(self, config: Config, metrics: Metrics) -> None:
        cfg = config.mqtt
        self.metrics = metrics
        self.max_connections = cfg.max_connections
        self.limits: dict[str, int] = {lc.name: lc.max_connections for lc in config.listeners}
        self.per_listener: dict[str, int] = {lc.name: 0 for lc in config.listeners}
        self.total = 0  # connections open over every listener
        self.refusing = 0  # connections over a limit, waiting for their CONNECT to refuse
        self.open: set[A] = set()
        self._refused: dict[A, str] = {}  # why each one waiting to be refused is (its CONNACK)
        # per-address defences (abuse.py); None when switched off
        self.connection_rate = ConnectionRateLimiter(
            cfg.max_connection_rate_per_address, cfg.connection_burst_per_address,
        ) if cfg.max_connection_rate_per_address else None
        self.login_failures = LoginFailures(
            cfg.auth_failure_threshold, cfg.auth_failure_delay, cfg.auth_failure_max_delay,
        ) if cfg.auth_failure_delay else None

    def admit(self, conn: A, now: float) -> bool | None:
        """A socket was accepted: count it (True); over a connection limit, leave it uncounted
        to be refused at CONNECT with a CONNACK that says why (False); when too many refusals
        are pending already, or its address opens connections too fast, drop it now (None)."""
        if self.connection_rate is not None and self._over_rate(conn, now):
            return None  # closed at once, before it costs more than the accept
        name = conn.listener
        limit = self.limits.get(name, 0)
        total = self.max_connections
        if (limit and self.per_listener[name] >= limit) or (total and self.total >= total):
            if self.refusing >= MAX_PENDING_REFUSALS:
                self.metrics.connections_refused += 1  # (refuse() counts the others)
                log.warning("listener %s: dropping connection from %s (over max_connections, "
                            "%d refusals pending)", name, conn.peer, self.refusing)
                return None
            self.refusing += 1
            self._refused[conn] = f"listener {name} is at max-connections {limit}" \
                if limit and self.per_listener[name] >= limit \
                else f"the broker is at max_connections {total}"
            return False
        self.per_listener[name] += 1
        self.total += 1
        self.open.add(conn)
        self.metrics.connections_total += 1
        return True

    def released(self, conn: A) -> None:
        """``conn`` closed: it no longer counts (nor waits to be refused)."""
        if conn in self.open:
            self.open.discard(conn)
            self.per_listener[conn.listener] -= 1
            self.total -= 1
        elif conn.admitted is False:
            self.refusing -= 1
            self._refused.pop(conn, None)
            conn.admitted = None

    def over_limit(self, conn: A) -> str:
        """Why a connection that was not admitted is refused (for its CONNACK and the log):
        the limit that refused it when it was accepted, whatever happened since."""
        return self._refused.get(conn, "over a connection limit")

    # -- abuse: per-address connection rate and failed logins (abuse.py) -------------------------

    def _over_rate(self, conn: A, now: float) -> bool:
        """Charge a new connection to its address's rate; True when it is over the rate and
        must be closed now. Logged once per episode (a flood), not per connection."""
        assert self.connection_rate is not None
        where = address(conn)
        allowed, refused = self.connection_rate.take(where, now)
        if allowed:
            if refused:
                log.warning("address %s is back under max_connection_rate_per_address: %d "
                            "connection(s) from it were closed", where, refused)
            return False
        self.metrics.connections_rate_limited += 1
        if refused == 1:
            rate = self.connection_rate
            log.warning("address %s opens connections faster than "
                        "max_connection_rate_per_address (%g/s, burst %g): closing its new "
                        "connections at accept until it slows down", where, rate.rate,
                        rate.burst)
        return True

    def connect_delay(self, conn: A, now: float) -> float | None:
        """``conn`` sent CONNECT: how long to delay it before looking at it (0.0: not at all),
        because its address keeps failing to log in; None: refuse it at once, unread
        (its address already has CONNECTs delayed for auth_failure_max_delay)."""
        guard = self.login_failures
        if not guard:  # none configured, or no address has failed lately
            return 0.0
        wait = guard.connect_delay(address(conn), now)
        if wait != 0.0:
            self.metrics.auth_held += 1
        return wait

    def login_failed(self, conn: A, now: float) -> None:
        """``conn``'s credentials were refused: count it against its address."""
        self.metrics.auth_failures += 1
        guard = self.login_failures
        if guard is None:
            return
        where = address(conn)
        failures = guard.failed(where, now)
        if failures == max(guard.threshold, 1):
            log.warning("address %s: %d failed logins in a row; its CONNECTs are now answered "
                        "after a delay (%gs, doubling up to %gs) until one succeeds", where,
                        failures, guard.delay_after(failures), guard.max_delay)

    def login_succeeded(self, conn: A) -> None:
        """``conn`` logged in with real credentials: its address's failures are forgiven."""
        if self.login_failures is not None:
            self.login_failures.succeeded(address(conn))
