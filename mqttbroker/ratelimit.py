"""Per-client publish rate limits: a token bucket for PUBLISH packets and one for their bytes.

``mqtt.max_publish_rate`` (PUBLISH/s) and ``mqtt.max_publish_bytes_rate`` (bytes/s) bound what
one client may publish (0 = unlimited). The broker enforces them by *not reading* the client's
socket for a while, never by dropping: nothing is lost, no buffer grows, and TCP pushes back on
the client (docs/durability.md, "Limits").

Pure and synchronous, like the rest of the core: the time is passed in (``now``, the event
loop's clock), nothing here sleeps or arms a timer. The connection calls :meth:`take` for every
PUBLISH it has read and, when the answer is not 0.0, pauses reading for that many seconds.

Each bucket holds one second's worth of tokens, starts full, and refills continuously. A packet
is charged when it has already been read (we cannot give it back), so a bucket may go negative:
the deficit is what the pause pays off. Consequently a client obeying the pauses gets, over any
window of T seconds, at most ``rate * T + capacity`` packets (or bytes) admitted without a pause,
plus the one packet that overdrew the bucket and started the pause.
"""

from __future__ import annotations

import math

__all__ = ["PublishLimiter"]


class PublishLimiter:
    """Two token buckets (PUBLISH packets per second, PUBLISH bytes per second) for one client.

    ``rate`` and ``bytes_rate`` are the limits; 0 turns that bucket off. Capacities are one
    second's worth: ``max(rate, 1)`` packets, so that a rate under 1/s still lets a packet
    through, and ``max(bytes_rate, nbytes)`` bytes for a packet of ``nbytes``, so that a packet
    bigger than a second's worth passes once the client has waited long enough for it (a
    bucket that could never hold it would make its sender pay for it after it went through,
    however long the sender had been quiet).

    Slotted and branch-light: :meth:`take` runs once per PUBLISH on the hot path.
    """

    __slots__ = ("_bytes", "_bytes_rate", "_last", "_rate", "_tokens", "_tokens_cap")

    def __init__(self, rate: float, bytes_rate: float, now: float) -> None:
        """Both buckets start full at ``now``. Raises ValueError for a negative, NaN or
        infinite rate (a config error, caught by the config's own checks first)."""
        for name, value in (("rate", rate), ("bytes_rate", bytes_rate)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self._rate = float(rate)
        self._bytes_rate = float(bytes_rate)
        self._tokens_cap = max(self._rate, 1.0)
        self._tokens = self._tokens_cap  # packets left; may go negative
        self._bytes = self._bytes_rate  # bytes left; may go negative
        self._last = now

    @property
    def enabled(self) -> bool:
        """Is either limit set? (When not, the connection need not call :meth:`take`.)"""
        return self._rate > 0.0 or self._bytes_rate > 0.0

    @property
    def rate(self) -> float:
        """The PUBLISH packets per second allowed (0 = unlimited)."""
        return self._rate

    @property
    def bytes_rate(self) -> float:
        """The PUBLISH bytes per second allowed (0 = unlimited)."""
        return self._bytes_rate

    def take(self, nbytes: int, now: float) -> float:
        """Charge one PUBLISH of ``nbytes`` bytes, read at ``now``.

        Returns 0.0 when the client may go on being read, else the seconds to stop reading
        it: until both buckets are back at 0 or above. A clock that goes backwards refills
        nothing (and is not an error).
        """
        elapsed = now - self._last
        if elapsed > 0.0:
            self._last = now
        else:
            elapsed = 0.0
        wait = 0.0
        rate = self._rate
        if rate:
            tokens = self._tokens + elapsed * rate
            cap = self._tokens_cap
            tokens = min(tokens, cap) - 1.0
            self._tokens = tokens
            if tokens < 0.0:
                wait = -tokens / rate
        brate = self._bytes_rate
        if brate:
            left = self._bytes + elapsed * brate
            cap = brate if brate > nbytes else float(nbytes)  # at least this message
            left = min(left, cap) - nbytes
            self._bytes = left
            if left < 0.0:
                wait = max(wait, -left / brate)
        return wait

    def __repr__(self) -> str:
        return (f"<PublishLimiter rate={self._rate:g}/s ({self._tokens:.3g} left) "
                f"bytes_rate={self._bytes_rate:g}/s ({self._bytes:.6g} left)>")
