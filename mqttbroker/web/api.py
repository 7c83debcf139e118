"""The admin API's answers, built from the broker's state (docs/web.md, "The admin API").

Plain functions from the broker to JSON-ready dicts; :mod:`mqttbroker.web.server` does the
HTTP. They run on the broker's event loop, so they read its state without locks.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ..protocol.packets import Subscription
from ..protocol.topics import topic_filter_problem
from ..router import parse_share

if TYPE_CHECKING:
    from ..core.hooks import BridgeStats, BrokerView
    from ..session import Session

DEFAULT_LIMIT: Final = 1000
MAX_LIMIT: Final = 10_000
PROTOCOLS: Final = {3: "3.1", 4: "3.1.1", 5: "5.0"}

T = TypeVar("T")


class ApiError(Exception):
    """An answer other than 200: ``status`` and a message for ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def page(items: Iterable[T], limit: int, offset: int) -> tuple[int, list[T]]:
    """(how many in all, the slice [offset, offset + limit))."""
    every = list(items)
    return len(every), every[offset:offset + limit]


def paging(query: dict[str, str]) -> tuple[int, int]:
    """``limit`` (1..MAX_LIMIT, default DEFAULT_LIMIT) and ``offset`` (>= 0) from a query."""
    try:
        limit = int(query.get("limit", DEFAULT_LIMIT))
        offset = int(query.get("offset", 0))
    except ValueError:
        raise ApiError(400, "limit and offset must be integers") from None
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise ApiError(400, f"limit must be 1..{MAX_LIMIT} and offset >= 0")
    return limit, offset


def _iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return dt.datetime.fromtimestamp(wall, dt.UTC).isoformat(timespec="seconds")


def client_info(broker: BrokerView, session: Session) -> dict[str, Any]:
    """One session as the API shows it (see docs/web.md: CLIENT)."""
    cid = session.client_id
    conn = broker.connections.get(cid)
    return {
        "client_id": cid,
        "connected": conn is not None,
        "listener": conn.listener if conn else None,
        "peer": conn.peer if conn else None,
        "username": conn.username if conn else None,
        "protocol": PROTOCOLS.get(conn.level) if conn else None,
        "keep_alive": conn.keep_alive if conn else None,
        "session_expiry_interval": session.expiry_interval,
        "subscriptions": len(session.subscriptions),
        "queued": len(session.queue),
        "inflight": len(session.inflight),
        "connected_since": _iso(conn.connected_at) if conn else None,
    }


def subscription_info(client_id: str, sub: Subscription) -> dict[str, Any]:
    """One subscription (docs/web.md: SUBSCRIPTION); ``$share/g/f`` shows as share g, f."""
    shared = parse_share(sub.topic_filter)
    group, topic_filter = shared if shared is not None else (None, sub.topic_filter)
    return {
        "client_id": client_id,
        "filter": topic_filter,
        "qos": sub.qos,
        "no_local": sub.no_local,
        "retain_as_published": sub.retain_as_published,
        "retain_handling": sub.retain_handling,
        "share": group,
        "identifier": sub.identifier or None,
    }


def clients(broker: BrokerView, query: dict[str, str]) -> dict[str, Any]:
    limit, offset = paging(query)
    want = query.get("connected")
    if want not in (None, "true", "false"):
        raise ApiError(400, "connected must be true or false")
    sessions = sorted(broker.sessions.values(), key=lambda s: s.client_id)
    if want is not None:
        online = want == "true"
        sessions = [s for s in sessions if (s.client_id in broker.connections) == online]
    total, chosen = page(sessions, limit, offset)
    return {"total": total, "clients": [client_info(broker, s) for s in chosen]}


def client(broker: BrokerView, client_id: str) -> dict[str, Any]:
    session = broker.sessions.get(client_id)
    if session is None:
        raise ApiError(404, f"no session for client id {client_id!r}")
    info = client_info(broker, session)
    info["subscription_list"] = [subscription_info(client_id, sub) for _, sub in
                                 sorted(session.subscriptions.items())]
    return info


def subscriptions(broker: BrokerView, query: dict[str, str]) -> dict[str, Any]:
    limit, offset = paging(query)
    only = query.get("client_id")
    if only is not None:
        session = broker.sessions.get(only)
        chosen = [session] if session is not None else []
    else:
        chosen = sorted(broker.sessions.values(), key=lambda s: s.client_id)
    rows = (subscription_info(s.client_id, sub) for s in chosen
            for _, sub in sorted(s.subscriptions.items()))
    total, items = page(rows, limit, offset)
    return {"total": total, "subscriptions": items}


def _payload(data: bytes, max_payload: int) -> tuple[str, str, bool]:
    """(text, "utf-8" | "base64", truncated): the first ``max_payload`` bytes, as text when
    the whole payload is UTF-8 (a cut inside a character drops that character's bytes), else
    base64."""
    cut = data[:max_payload]
    truncated = len(cut) < len(data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(cut).decode("ascii"), "base64", truncated
    return cut.decode("utf-8", "ignore"), "utf-8", truncated


def retained(broker: BrokerView, query: dict[str, str]) -> dict[str, Any]:
    limit, offset = paging(query)
    topic_filter = query.get("filter", "#")
    problem = topic_filter_problem(topic_filter)
    if problem is not None:
        raise ApiError(400, f"filter: {problem}")
    try:
        max_payload = int(query.get("max_payload", 1024))
    except ValueError:
        raise ApiError(400, "max_payload must be an integer") from None
    if max_payload < 0:
        raise ApiError(400, "max_payload must be >= 0")
    messages = sorted(broker.retained.match(topic_filter, broker.now()), key=lambda m: m.topic)
    total, chosen = page(messages, limit, offset)
    out = []
    for m in chosen:
        text, encoding, truncated = _payload(m.payload, max_payload)
        out.append({"topic": m.topic, "qos": m.qos, "size": len(m.payload), "payload": text,
                    "encoding": encoding, "truncated": truncated})
    return {"total": total, "retained": out}


def bridge_info(st: BridgeStats) -> dict[str, Any]:
    """One bridge as the API shows it (docs/web.md: BRIDGE): every field of
    :class:`~mqttbroker.core.hooks.BridgeStats`, its time in ISO 8601."""
    return {
        "name": st.name,
        "addresses": list(st.addresses),
        "remote": st.remote,
        "connected": st.connected,
        "connected_since": _iso(st.connected_since),
        "queued": st.queued,
        "queued_bytes": st.queued_bytes,
        "inflight": st.inflight,
        "sent": st.sent,
        "received": st.received,
        "dropped": st.dropped,
        "connects": st.connects,
        "last_error": st.last_error,
    }


def bridges(broker: BrokerView, query: dict[str, str]) -> dict[str, Any]:
    limit, offset = paging(query)
    total, chosen = page(sorted(broker.bridge_stats(), key=lambda st: st.name), limit, offset)
    return {"total": total, "bridges": [bridge_info(st) for st in chosen]}


def bridge(broker: BrokerView, name: str) -> dict[str, Any]:
    for st in broker.bridge_stats():
        if st.name == name:
            return bridge_info(st)
    raise ApiError(404, f"no bridge named {name!r}")
