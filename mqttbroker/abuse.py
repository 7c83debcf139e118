"""Per-address defences: a connection-rate limiter and a failed-login tracker.

``mqtt.max_connection_rate_per_address`` (with ``connection_burst_per_address``) bounds how
fast one source address may open connections: past it, a new connection is closed right after
accept, before it costs more than a socket (docs/durability.md, "Limits"). ``mqtt.
auth_failure_threshold``, ``auth_failure_delay`` and ``auth_failure_max_delay`` slow down an
address that keeps failing to log in: after the threshold, every further CONNECT from it is
answered only after a delay that doubles with each failure, capped, and forgotten on success.

Pure and synchronous, like :mod:`mqttbroker.ratelimit`: the time is passed in (``now``, the
event loop's clock); nothing here sleeps or arms a timer, the broker does (``call_later``).

Memory is bounded whatever the peers do: each table holds at most ``max_addresses`` entries in
least-recently-used order (a dict, whose order is insertion order: an entry touched is moved to
the end), and an entry that no longer says anything (a bucket full again, failures forgotten)
is dropped from the front as the table is used. An attacker with more addresses than that can
make the broker forget about some of them, never make it grow.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from typing import Final

__all__ = ["MAX_ADDRESSES", "ConnectionRateLimiter", "LoginFailures", "address_key"]

MAX_ADDRESSES: Final = 10_000  # entries per table; ~200 bytes each
FAILURE_MEMORY: Final = 600.0  # seconds after its last failed login an address is forgiven
_EXPIRE_BATCH: Final = 8  # stale entries dropped from the front per call (amortised O(1))
# how much earlier than its reserved turn a delayed CONNECT may be handled: event-loop timers
# fire with millisecond granularity (uvloop rounds the delay down), so at the cap the next
# sequential guess can find its wait a fraction of a millisecond over max_delay; it is not
# refused for that
TIMER_SLACK: Final = 0.005


@functools.lru_cache(maxsize=4096)  # (pure; parsed once per address, not per connection)
def address_key(host: str) -> str:
    """The unit the limits count per: an IPv4 address as is, an IPv4-mapped IPv6 address as
    its IPv4 address, any other IPv6 address as its /64 (one host or site usually holds a whole
    /64, and would otherwise have 2**64 addresses to spread a flood over). Anything that is not
    an IP address (a Unix socket's empty name) is its own key."""
    if ":" not in host:
        # Dotted IPv4, which ip_address() takes only in its canonical form (so str() gives
        # the same string back), or not an IP address at all: either way ``host`` itself,
        # without the 6 us of parsing it on every CONNECT (tests/unit/test_abuse.py).
        return host
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])  # drop an IPv6 zone ("fe80::1%eth0")
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def _check_rate(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


class _Bucket:
    __slots__ = ("last", "refused", "tokens")

    def __init__(self, tokens: float, last: float) -> None:
        self.tokens = tokens
        self.last = last
        self.refused = 0  # connections refused in the current episode (0: none going on)


class ConnectionRateLimiter:
    """A token bucket per address: ``rate`` connections per second, ``burst`` at once.

    :meth:`take` is called once per accepted socket. An *episode* is a stretch during which an
    address is over the rate: it begins with the first refusal and ends once the address's
    bucket is full again (it stayed under the rate long enough to earn back the whole burst),
    so a flood that hovers around the rate is one episode, not one per connection. The caller
    logs its beginning, and its end when the address next connects, never each connection.
    """

    __slots__ = ("_buckets", "burst", "max_addresses", "rate")

    def __init__(self, rate: float, burst: int, max_addresses: int = MAX_ADDRESSES) -> None:
        """``rate`` > 0 connections per second; ``burst`` >= 1 (a smaller one is taken as 1).
        Raises ValueError for a rate that is not a finite number > 0."""
        _check_rate("rate", rate)
        if rate == 0:
            raise ValueError("rate must be > 0 (0 means no limiter at all)")
        self.rate = float(rate)
        self.burst = float(max(burst, 1))
        self.max_addresses = max(max_addresses, 1)
        self._buckets: dict[str, _Bucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, address: str, now: float) -> tuple[bool, int]:
        """Charge one new connection from ``address`` at ``now``.

        Returns ``(allowed, refused)``. Allowed: ``refused`` is 0, or the number of connections
        refused in an episode of this address that has just ended (log it). Not allowed: the
        connection is to be closed; ``refused`` counts this episode so far, 1 when it has just
        begun (log it). A clock that goes backwards refills nothing.
        """
        buckets = self._buckets
        b = buckets.pop(address, None)
        if b is None:
            self._expire(now)
            if len(buckets) >= self.max_addresses:
                del buckets[next(iter(buckets))]  # the least recently seen address
            b = _Bucket(self.burst, now)
        else:
            elapsed = now - b.last
            if elapsed > 0.0:
                b.tokens = min(self.burst, b.tokens + elapsed * self.rate)
                b.last = now
        buckets[address] = b  # (re)inserted at the end: most recently seen
        ended = 0
        if b.refused and b.tokens >= self.burst:
            ended, b.refused = b.refused, 0  # back under the rate for a whole burst
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True, ended
        b.refused += 1
        return False, b.refused

    def _expire(self, now: float) -> None:
        """Drop a few entries from the front whose bucket would be full by now: forgetting
        them changes nothing (an unknown address starts with a full bucket), except that the
        end of an episode nobody came back after goes unreported."""
        buckets = self._buckets
        for _ in range(_EXPIRE_BATCH):
            if not buckets:
                return
            address = next(iter(buckets))
            b = buckets[address]
            if b.tokens + (now - b.last) * self.rate < self.burst:
                return
            del buckets[address]

    def __repr__(self) -> str:
        return (f"<ConnectionRateLimiter {self.rate:g}/s burst {self.burst:g}, "
                f"{len(self._buckets)} addresses>")


class _Failures:
    __slots__ = ("count", "last", "ready_at")

    def __init__(self, now: float) -> None:
        self.count = 0  # failed logins in a row
        self.last = now  # when the last one happened
        self.ready_at = now  # the next CONNECT from this address is handled no earlier


class LoginFailures:
    """Failed logins per address, and how long to delay that address's next CONNECT.

    After ``threshold`` failures in a row, a CONNECT from the address is handled (its
    credentials looked at) only ``delay`` seconds after the previous failure, doubling with each
    further failure, at most ``max_delay``. Delays are handed out one after another: CONNECTs
    sent in parallel queue behind each other, one per delay, so opening many connections at
    once does not buy more guesses per second. A CONNECT that would wait longer than
    ``max_delay`` is refused at once without looking at its credentials (:meth:`connect_delay` says
    None). A success forgets the address; so do ``memory`` seconds without a failure.
    """

    __slots__ = ("_entries", "delay", "max_addresses", "max_delay", "memory", "threshold")

    def __init__(self, threshold: int, delay: float, max_delay: float,
                 memory: float = FAILURE_MEMORY, max_addresses: int = MAX_ADDRESSES) -> None:
        """Raises ValueError for a delay that is not a finite number > 0."""
        _check_rate("delay", delay)
        _check_rate("max_delay", max_delay)
        if delay == 0:
            raise ValueError("delay must be > 0 (0 means no tracker at all)")
        self.threshold = max(threshold, 0)
        self.delay = float(delay)
        self.max_delay = max(float(max_delay), self.delay)
        self.memory = memory
        self.max_addresses = max(max_addresses, 1)
        self._entries: dict[str, _Failures] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def delay_after(self, failures: int) -> float:
        """How long an address waits after its ``failures``-th failure in a row."""
        if failures < max(self.threshold, 1):
            return 0.0
        doublings = failures - max(self.threshold, 1)
        if doublings >= 64:  # (2.0 ** 1024 overflows; the cap is reached long before)
            return self.max_delay
        return min(self.max_delay, self.delay * 2.0 ** doublings)

    def failures(self, address: str) -> int:
        """Failed logins in a row from ``address`` (0 when forgotten)."""
        e = self._entries.get(address)
        return 0 if e is None else e.count

    def connect_delay(self, address: str, now: float) -> float | None:
        """A CONNECT from ``address`` arrived at ``now``: the seconds to delay it before its
        credentials are looked at (0.0: at once), or None to refuse it at once (the address
        is already delayed for ``max_delay`` or more). A delayed CONNECT reserves its turn: the
        next one waits a further delay."""
        e = self._entries.get(address)
        if e is None:
            return 0.0
        if now - e.last > self.memory and now >= e.ready_at:
            del self._entries[address]
            return 0.0
        wait = e.ready_at - now
        if wait <= 0.0:
            wait = 0.0
            start = now
        else:
            start = e.ready_at
        if wait > self.max_delay + TIMER_SLACK:
            return None
        e.ready_at = start + self.delay_after(e.count)
        return wait

    def failed(self, address: str, now: float) -> int:
        """A login from ``address`` failed at ``now``; returns the failures in a row."""
        entries = self._entries
        e = entries.pop(address, None)
        if e is None:
            self._expire(now)
            if len(entries) >= self.max_addresses:
                del entries[next(iter(entries))]  # the address that failed longest ago
            e = _Failures(now)
        elif now - e.last > self.memory and now >= e.ready_at:
            e = _Failures(now)  # forgiven meanwhile: start again
        entries[address] = e  # (re)inserted at the end: most recent failure
        e.count += 1
        e.last = now
        e.ready_at = max(e.ready_at, now + self.delay_after(e.count))
        return e.count

    def succeeded(self, address: str) -> None:
        """A login from ``address`` succeeded: forget its failures."""
        self._entries.pop(address, None)

    def _expire(self, now: float) -> None:
        entries = self._entries
        for _ in range(_EXPIRE_BATCH):
            if not entries:
                return
            address = next(iter(entries))
            e = entries[address]
            if now - e.last <= self.memory or now < e.ready_at:
                return
            del entries[address]

    def __repr__(self) -> str:
        return (f"<LoginFailures after {self.threshold}: {self.delay:g}s doubling to "
                f"{self.max_delay:g}s, {len(self._entries)} addresses>")
