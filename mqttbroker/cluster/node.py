"""One node of a cluster: its Redis connections and background work (docs/cluster.md).

:class:`ClusterNode` keeps the replica of every node's routes, forwards messages to the nodes
whose routes match, reads its own inbox, keeps the retained replica in step, claims client ids
(and hands sessions over when another node claims one of its own), beats its heart, and rides
out Redis going away: local traffic goes on, what needs Redis waits and is written when it is
back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Final

import msgpack  # type: ignore[import-untyped]
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from ..config import ClusterConfig
from ..errors import MQTTBrokerError
from ..message import Message
from ..persistence.base import Snapshot, StoredSession
from .routes import RouteReplica
from .store import GROUP, Keys, RedisStore, pack_message, text, unpack_message

if TYPE_CHECKING:
    from ..core.hooks import Blockable, ClusterHost

log = logging.getLogger("mqttbroker.cluster")

READ_BATCH: Final = 16  # inbox entries (each up to FORWARD_BATCH messages) read at once
# messages for other nodes waiting for Redis: past THROTTLE the publishers feeding them wait
# (their sockets are not read) until half of it is written; past MAX_BACKLOG (what is not a
# client's: wills, $SYS; or Redis away) QoS 0 for other nodes is dropped
THROTTLE: Final = 20_000
MAX_BACKLOG: Final = 200_000
READ_BLOCK_MS: Final = 1000

# claim a client id: (node, epoch) <- (me, epoch + 1); returns the previous node (or nil)
_CLAIM: Final = """
local old = redis.call('HGET', KEYS[1], 'node')
redis.call('HSET', KEYS[1], 'node', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
return old
"""
# one subscription fewer on a (dead) node's route: returns the count left
_UNROUTE: Final = """
local c = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if c <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return c
"""
REPLAY_AGAIN: Final = 2.0  # seconds: a second look at a dead node's inbox (stale routes)


REDIS_CONNECTIONS: Final = 64  # a node's connections to Redis (requests beyond them wait)
POOL_WAIT: Final = 10.0  # seconds a request may wait for one before Redis counts as down
# client-id claims under way at once (each a CONNECT waiting): a storm of CONNECTs queues here,
# in order and without a deadline, instead of filling the pool so that the heartbeat, route
# and message requests wait past POOL_WAIT and Redis is taken for down (every CONNECT then
# refused with "unreachable" while it is up, only busy)
CLAIMS_AT_ONCE: Final = REDIS_CONNECTIONS // 2


class ClusterNode:
    """This broker's membership in the cluster (see the module docstring)."""

    def __init__(self, broker: ClusterHost, config: ClusterConfig) -> None:
        self.broker = broker
        self.config = config
        self.me = config.node
        self.keys = Keys(config.prefix)
        # a pooled connection that died with a Redis restart is retried once on a new one
        # (not reported as a second outage); an idle one is checked before use
        opts: dict[str, Any] = {"decode_responses": False, "socket_connect_timeout": 2.0,
                                "socket_timeout": 5.0, "health_check_interval": 2,
                                "retry": Retry(NoBackoff(), 1),
                                "retry_on_error": [RedisConnectionError]}
        # a bounded pool that makes a request wait for a free connection: redis-py's default
        # pool raises "Too many connections" past 100 at once, which a CONNECT storm (every
        # CONNECT claims its client id in Redis) reached, and was taken for an outage
        self.redis: aioredis.Redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                config.redis, max_connections=REDIS_CONNECTIONS, timeout=POOL_WAIT, **opts))
        # XREADGROUP BLOCK holds a connection: a client of its own
        self.reader: aioredis.Redis = aioredis.from_url(
            config.redis, **{**opts, "socket_timeout": READ_BLOCK_MS / 1000 + 5.0})
        self.store = RedisStore(self.redis, self.keys, self.me)
        self.store.on_error = self._redis_failed
        self.store.on_written = self._written
        self.replica = RouteReplica()
        self.local: dict[str, int] = {}  # this node's routes: filter -> local subscriptions
        self.alive: set[str] = set()  # other nodes whose heart beats
        self.owned: set[str] = set()  # client ids this node holds the claim of
        self.up = False  # Redis reachable
        self.forwarded = 0  # messages sent to other nodes' inboxes
        self.dropped = 0  # QoS 0 messages for other nodes dropped: Redis did not keep up
        self._dropping = False
        self._throttled: set[Blockable] = set()  # publishers waiting for Redis
        self.received = 0  # messages read from this node's inbox
        self.redis_failures = 0
        # sessions handed to another node a moment ago: client id -> (its node, the filters
        # still routed here, the timer that drops them). Messages that still reach this node
        # for them go on to their new node (see ghost())
        self.moved: dict[str, tuple[str, list[str], asyncio.TimerHandle]] = {}
        # the message being delivered now: (the node it was published on, the nodes it was
        # forwarded to, its number there); ghost() forwards only what its new node does not
        # get anyway
        self.current: tuple[str, frozenset[str], int | None] = ("", frozenset(), None)
        # every message this node forwards is numbered (its envelope's last field). A session
        # taken over here: client id -> the number the next forward was to get then (and the
        # timer that forgets it). A message of ours that its old node sends back for it was
        # delivered here already if its number is that or higher (the session was here when
        # it was published), and not if lower (it was published before: see _ours_delivered).
        # Numbers start at the wall clock in nanoseconds, so that a node restarted meanwhile
        # numbers above its earlier run: a message of that run coming back is delivered
        # (at least once), not taken for one of this run's, delivered already
        self.sequence = time.time_ns()
        self.adopted: dict[str, tuple[int, asyncio.TimerHandle]] = {}
        self._claims: dict[str, asyncio.Future[None]] = {}
        self._claim_slots = asyncio.Semaphore(CLAIMS_AT_ONCE)
        # messages forwarded to a session whose claim is still under way here (the node it
        # left forwards them as soon as it has let go): delivered once the session is here
        self._early: dict[str, list[tuple[bytes, Message]]] = {}
        self._waiting: dict[bytes, int] = {}  # inbox entry -> its messages held in _early
        self._answers: dict[str, asyncio.Future[bytes]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._pubsub: Any = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._claim = self.redis.register_script(_CLAIM)
        self._unroute = self.redis.register_script(_UNROUTE)
        self._down_since: float | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> Snapshot:
        """Reach Redis, read what this node owns; raises :class:`MQTTBrokerError` when Redis
        is not there (a node does not start without it)."""
        self._loop = asyncio.get_running_loop()
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            raise MQTTBrokerError(f"cluster: cannot reach Redis at {self.config.redis}: {exc}"
                                  ) from None
        self.up = True
        snapshot = await self.store.open(self._loop)
        self.owned.update(s.client_id for s in snapshot.sessions)
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(self.keys.inbox(self.me), GROUP, id="0",
                                           mkstream=True)
        log.info("cluster: node %r joined via %s (%d sessions of its own, %d retained)",
                 self.me, self.config.redis, len(snapshot.sessions), len(snapshot.retained))
        return snapshot

    async def start(self) -> None:
        """After the broker restored its sessions (their routes are counted by now): listen
        to the change channels, then publish our routes and load the others' (in that order:
        no change is missed between the two), and start the background work."""
        await self._subscribe()
        await self._sync()
        for coro in (self._heartbeat(), self._consume(), self._listen()):
            self._tasks.append(asyncio.create_task(coro))

    async def close(self) -> None:
        """Write what is pending, stop the background work, leave (our heart stops)."""
        self._closing = True
        await self.store.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(self.keys.node(self.me))
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        for r in (self.redis, self.reader):
            with contextlib.suppress(Exception):
                await r.aclose()

    # -- Redis up and down --------------------------------------------------------------------------

    def _redis_failed(self, exc: BaseException) -> None:
        self.redis_failures += 1
        if self.up:
            self.up = False
            self._down_since = time.monotonic()
            log.error("cluster: Redis unreachable (%s); serving local traffic only, "
                      "acknowledgements and messages for other nodes wait", exc)

    def throttle(self, source: Blockable | None) -> None:
        """Called after each forward: past THROTTLE messages waiting for Redis, the client
        that published one for another node stops being read until the backlog is half
        written (a publisher whose messages stay on this node goes on)."""
        if source is not None and self.store.backlog >= THROTTLE and self.current[1] \
                and source not in self._throttled and source.block():
            self._throttled.add(source)

    def _written(self) -> None:
        if self._throttled and self.store.backlog < THROTTLE // 2:
            waiting, self._throttled = self._throttled, set()
            for conn in waiting:
                conn.unblock()
        self._redis_ok()

    def _redis_ok(self) -> None:
        if not self.up and not self._closing:
            self.up = True
            down = time.monotonic() - (self._down_since or time.monotonic())
            log.warning("cluster: Redis is back after %.1fs; catching up", down)
            assert self._loop is not None
            self._tasks.append(self._loop.create_task(self._sync()))

    async def _sync(self) -> None:
        """(Re)publish this node's routes and reload every node's routes and the retained
        messages: at start, and after Redis was away."""
        k, me = self.keys, self.me
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(k.routes(me))
                if self.local:
                    pipe.hset(k.routes(me), mapping={f: c for f, c in self.local.items()})
                pipe.publish(k.routes_channel, msgpack.packb([me, "", -1]))  # reload me
                await pipe.execute()
            await self._beat()
            await self._reload_routes()
            for m in await self.store.load_retained():
                self.broker.retained.load(m)
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)

    async def _reload_routes(self, only: str | None = None) -> None:
        k = self.keys
        nodes = [only] if only else [
            text(key).rsplit(":", 1)[1]
            async for key in self.redis.scan_iter(match=k.routes("*"), count=1000)]
        for node in nodes:
            if node == self.me:
                continue
            routes = await self.redis.hgetall(k.routes(node))
            self.replica.replace(node, ((text(f), int(c)) for f, c in routes.items()))

    # -- routes ---------------------------------------------------------------------------------------

    def on_route(self, topic_filter: str, delta: int) -> None:
        """The local router gained (+1) or lost (-1) a subscription to ``topic_filter``."""
        count = self.local.get(topic_filter, 0) + delta
        if count > 0:
            self.local[topic_filter] = count
        else:
            self.local.pop(topic_filter, None)
        # the count, not just "some": a node taking over one session of a dead node takes
        # one off the dead node's count, and the others' routes there must stay
        self.store.route(topic_filter, max(count, 0))

    # -- forwarding -----------------------------------------------------------------------------------

    def forward(self, message: Message, local_groups: set[str]) -> set[str]:
        """Send ``message`` (published on this node) to the nodes with matching routes.
        Returns the shared groups this node serves itself (the others went elsewhere)."""
        direct, groups = self.replica.match(message.topic)
        direct.discard(self.me)
        mine: set[str] = set()
        to: dict[str, list[str]] = {}
        for share, nodes in groups.items():
            if share in local_groups:
                nodes.append(self.me)
            picked = self.replica.pick(share, nodes)
            if picked == self.me:
                mine.add(share)
            else:
                to.setdefault(picked, []).append(share)
        for share in local_groups - groups.keys():
            mine.add(share)  # no other node has a member
        targets = frozenset(direct | to.keys())
        if targets and message.qos == 0 and self.store.backlog >= MAX_BACKLOG:
            # Redis is not keeping up (or away): QoS 0 for other nodes is dropped, as for a
            # subscriber that does not read; QoS 1/2 wait (their acknowledgements are held)
            self.broker.metrics.publish_dropped += len(targets)
            self.dropped += len(targets)
            if not self._dropping:
                self._dropping = True
                log.warning("cluster: %d messages wait for Redis; QoS 0 messages for other "
                            "nodes are dropped until it catches up", self.store.backlog)
            targets = frozenset()
            to = {}
        elif self._dropping and self.store.backlog < MAX_BACKLOG // 2:
            self._dropping = False
            log.info("cluster: Redis caught up; forwarding QoS 0 again")
        self.current = (self.me, targets, None)
        if targets:
            assert self._loop is not None
            packed = pack_message(message, self._loop)
            listed = sorted(targets)
            seq = self.sequence
            self.sequence = seq + 1
            for node in targets:
                self.store.forward(node, msgpack.packb([packed, node in direct,
                                                        to.get(node, []), self.me, listed,
                                                        None, seq]))
                self.forwarded += 1
        return mine

    def ghost(self, client_id: str, message: Message) -> bool:
        """A delivery to a session that moved to another node a moment ago: forward it there,
        unless that node gets the message anyway (it was forwarded there too). One published
        on that node goes back to it with its number there, which tells it whether the
        session was there to take it then (see :meth:`_ours_delivered`): a message published
        there before the session moved, and still in this node's inbox when it let the
        session go, is not lost. True when ``client_id`` is such a session."""
        moved = self.moved.get(client_id)
        if moved is None:
            return False
        node = moved[0]
        origin, targets, seq = self.current
        if node == origin and seq is None:
            return True  # (from a node that does not number its messages: it had it)
        if node == origin or node not in targets:
            assert self._loop is not None
            self.store.forward(node, msgpack.packb([pack_message(message, self._loop), False,
                                                    [], origin, [node], client_id, seq]))
            self.forwarded += 1
        return True

    def _ours_delivered(self, client_id: str, seq: int | None) -> bool:
        """A message this node published (number ``seq``) comes back for session
        ``client_id`` from the node the session left: whether it was delivered here already,
        that is, whether the session had been taken over here when it was published."""
        adopted = self.adopted.get(client_id)
        return adopted is not None and seq is not None and seq >= adopted[0]

    def _forget_adopted(self, client_id: str) -> None:
        self.adopted.pop(client_id, None)

    def moved_away(self, client_id: str, node: str, filters: list[str]) -> None:
        """``client_id``'s session went to ``node``; its ``filters`` stay routed here (as a
        forwarding address) for two node timeouts, while the other nodes learn the new
        routes: nothing published meanwhile is lost."""
        assert self._loop is not None
        old = self.moved.pop(client_id, None)
        if old is not None:
            old[2].cancel()
        handle = self._loop.call_later(2 * self.config.node_timeout, self._forget_moved,
                                       client_id)
        self.moved[client_id] = (node, filters, handle)

    def _forget_moved(self, client_id: str) -> None:
        """Its new node is known everywhere now: drop the forwarding address."""
        moved = self.moved.pop(client_id, None)
        if moved is not None:
            self.broker.drop_routes(client_id, moved[1])

    async def _consume(self) -> None:
        """Read this node's inbox: first what an earlier run read and did not finish, then
        what is new; deliver each message locally, acknowledged with those deliveries."""
        inbox = self.keys.inbox(self.me)
        pending = True
        while not self._closing:
            try:
                got: Any = await self.reader.xreadgroup(
                    GROUP, self.me, {inbox: "0" if pending else ">"}, count=READ_BATCH,
                    block=None if pending else READ_BLOCK_MS)
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis lost it (restarted without its data)
                    with contextlib.suppress(ResponseError):
                        await self.redis.xgroup_create(inbox, GROUP, id="0", mkstream=True)
                else:
                    log.error("cluster: reading the inbox failed: %s", exc)
                    await asyncio.sleep(0.5)
                continue
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
                await asyncio.sleep(0.5)
                continue
            entries: Any = got[0][1] if got else []
            if pending and not entries:
                pending = False
                continue
            self._deliver(entries)

    def _deliver(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Each entry holds the messages one node forwarded here in one write, in order."""
        assert self._loop is not None
        for entry_id, fields in entries:
            held = 0
            for envelope in _envelopes(entry_id, fields):
                try:
                    packed, direct, groups, origin, targets, to, *rest = msgpack.unpackb(
                        envelope)
                    message = unpack_message(packed, self._loop)
                except Exception:  # a bad message must not stop the inbox
                    log.exception("cluster: unreadable message in inbox entry %r dropped",
                                  entry_id)
                    continue
                self.received += 1
                seq = rest[0] if rest else None  # (none from a node of an earlier version)
                self.current = (origin, frozenset(targets), seq)
                if to is not None:  # for one session, forwarded by the node it left
                    if to in self._claims:  # not here yet: it is being taken over
                        self._early.setdefault(to, []).append((entry_id, message))
                        held += 1
                        continue
                    if origin != self.me or not self._ours_delivered(to, seq):
                        self.broker.deliver_forwarded_to(to, message)
                else:
                    self.broker.deliver_forwarded(message, direct, set(groups))
            if held:  # acknowledged once those are delivered too
                self._waiting[entry_id] = self._waiting.get(entry_id, 0) + held
            else:
                self.store.ack(entry_id)

    # -- retained, routes and control messages from other nodes ------------------------------------

    async def _subscribe(self) -> None:
        k = self.keys
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(k.routes_channel, k.retained, k.control(self.me))
        self._pubsub = pubsub

    async def _listen(self) -> None:
        while not self._closing:
            try:
                if self._pubsub is None:  # again, after Redis was away: reload what we missed
                    await self._subscribe()
                    await self._reload_routes()
                async for msg in self._pubsub.listen():
                    if msg.get("type") == "message":
                        self._on_channel(text(msg["channel"]), msg["data"])
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
                if self._pubsub is not None:
                    with contextlib.suppress(Exception):
                        await self._pubsub.aclose()
                    self._pubsub = None
                await asyncio.sleep(0.5)

    def _on_channel(self, channel: str, data: bytes) -> None:
        k = self.keys
        try:
            if channel == k.routes_channel:
                node, flt, count = msgpack.unpackb(data)
                if node == self.me:
                    return
                if count < 0:  # the node republished all its routes
                    assert self._loop is not None
                    self._loop.create_task(self._reload_routes(node))
                else:
                    self.replica.put(node, flt, count)
            elif channel == k.retained:
                node, topic, packed = msgpack.unpackb(data)
                if node == self.me:
                    return
                assert self._loop is not None
                if packed is None:
                    self.broker.retained.forget(topic)
                else:
                    self.broker.retained.load(unpack_message(msgpack.unpackb(packed),
                                                             self._loop))
            elif channel == k.control(self.me):
                self._on_control(msgpack.unpackb(data))
        except Exception:
            log.exception("cluster: bad message on %s", channel)

    # -- liveness -------------------------------------------------------------------------------------

    async def _beat(self) -> None:
        k = self.keys
        await self.redis.set(k.node(self.me), str(time.time()),
                             px=int(self.config.node_timeout * 1000))
        nodes = [n for n in self.replica.nodes() if n != self.me]
        if nodes:
            exists = await self.redis.mget([k.node(n) for n in nodes])
            self.alive = {n for n, v in zip(nodes, exists, strict=True) if v is not None}

    async def _heartbeat(self) -> None:
        while not self._closing:
            try:
                await self._beat()
                if not self.up and self.store.pending_changes() == 0:
                    self._redis_ok()  # Redis is back and nothing was waiting to show it
                self.store._kick()  # a failed write retries now rather than in a second
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
            await asyncio.sleep(self.config.heartbeat)

    # -- claiming client ids and handing sessions over --------------------------------------------

    def owns(self, client_id: str) -> bool:
        """Whether a CONNECT with this id may go on here at once (no claim needed)."""
        return client_id in self.owned

    def claim(self, client_id: str, clean: bool, then: Callable[[], None],
              refuse: Callable[[str], None]) -> None:
        """Claim ``client_id`` for this node, taking its session over from the node that had
        it, then call ``then`` (the CONNECT goes on) or ``refuse`` (Redis is unreachable)."""
        assert self._loop is not None
        self._loop.create_task(self._claim_task(client_id, clean, then, refuse))

    async def _claim_task(self, cid: str, clean: bool, then: Callable[[], None],
                          refuse: Callable[[str], None]) -> None:
        earlier = self._claims.get(cid)
        if earlier is not None:
            with contextlib.suppress(Exception):
                await earlier
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._claims[cid] = fut
        try:
            async with self._claim_slots:
                rec, dead = await self._take(cid, clean)
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            self._early.pop(cid, None)  # (not acknowledged: read again after a restart)
            refuse(f"the cluster's Redis is unreachable ({exc})")
            return
        finally:
            fut.set_result(None)
            if self._claims.get(cid) is fut:
                del self._claims[cid]
        self.owned.add(cid)
        if cid in self.moved:  # it comes back here: no forwarding address any more
            self.moved[cid][2].cancel()
            self._forget_moved(cid)
        old = self.adopted.pop(cid, None)
        if old is not None:
            old[1].cancel()
        assert self._loop is not None
        # (as long as the node it left keeps a forwarding address for it: moved_away)
        self.adopted[cid] = (self.sequence, self._loop.call_later(
            2 * self.config.node_timeout + REPLAY_AGAIN, self._forget_adopted, cid))
        if rec is not None and cid not in self.broker.sessions:
            self.broker.adopt_session(rec)
        then()
        for entry_id, message in self._early.pop(cid, ()):
            self.broker.deliver_forwarded_to(cid, message)
            left = self._waiting.pop(entry_id, 1) - 1
            if left > 0:
                self._waiting[entry_id] = left
            else:
                self.store.ack(entry_id)
        if dead is not None and rec is not None:
            # what the dead node had not handled yet for this session is in its inbox
            seen: set[bytes] = set()
            with contextlib.suppress(RedisError, OSError):
                await self._replay(dead, cid, seen)
                await asyncio.sleep(REPLAY_AGAIN)
                await self._replay(dead, cid, seen)

    async def _replay(self, dead: str, cid: str, seen: set[bytes]) -> None:
        """Deliver to session ``cid`` the entries left in a dead node's inbox that its
        subscriptions match (at least once: that node never acknowledged them)."""
        assert self._loop is not None
        n = 0
        async for chunk in _chunks(self.redis, self.keys.inbox(dead)):
            for entry_id, fields in chunk:
                if entry_id in seen:
                    continue
                seen.add(entry_id)
                for envelope in _envelopes(entry_id, fields):
                    try:
                        packed, direct, _groups, _origin, _targets, to, *_seq = (
                            msgpack.unpackb(envelope))
                    except (ValueError, msgpack.UnpackException):
                        log.warning("cluster: unreadable message in %r's inbox", dead)
                        continue
                    if (direct or to == cid) and self.broker.deliver_forwarded_to(
                            cid, unpack_message(packed, self._loop)):
                        n += 1
        if n:
            log.info("cluster: %d messages for %r taken from the inbox of dead node %r", n,
                     cid, dead)

    async def _take(self, cid: str, clean: bool) -> tuple[StoredSession | None, str | None]:
        """Claim ``cid``; (its stored session unless ``clean``, the dead node it was on)."""
        k = self.keys
        old = await self._claim(keys=[k.client(cid)], args=[self.me])
        old_node = text(old) if old else None
        dead = None
        if old_node and old_node != self.me:
            alive = await self.redis.exists(k.node(old_node))
            if alive:
                answered = await self._ask(old_node, ["release", cid, self.me])
                if not answered:  # killed a moment ago (its heartbeat not expired yet), or stuck
                    dead = old_node
                    log.warning("cluster: node %r did not hand over %r within %ss; taking "
                                "what Redis holds", old_node, cid, self.config.takeover_timeout)
            else:
                dead = old_node
                log.info("cluster: node %r is gone; taking over the session of %r from Redis",
                         old_node, cid)
            await self.redis.srem(k.owned(old_node), cid)
        await self.store.flush()
        rec = await self.store.load_session(cid)
        if dead is not None and rec is not None:
            # the dead node counted this session's subscriptions in its routes: not any more
            for sub in rec.subscriptions:
                left = await self._unroute(keys=[k.routes(dead)], args=[sub.topic_filter])
                await self.redis.publish(k.routes_channel, msgpack.packb(
                    [dead, sub.topic_filter, max(int(left), 0)]))
        if clean and rec is not None:  # [MQTT-3.1.2-4] a clean start discards it
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(k.client(cid), "meta")
                pipe.delete(k.subs(cid), k.items(cid), k.inbound(cid))
                await pipe.execute()
            return None, None
        return rec, dead

    async def _ask(self, node: str, request: list[Any]) -> bool:
        """Send a control request to ``node``; True when it answered in time."""
        rid = uuid.uuid4().hex
        assert self._loop is not None
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._answers[rid] = fut
        try:
            listeners = await self.redis.publish(self.keys.control(node), msgpack.packb(
                ["ask", rid, self.me, *request]))
            if not listeners:  # nobody reads its channel: the node is gone (killed)
                return False
            await asyncio.wait_for(fut, self.config.takeover_timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._answers.pop(rid, None)

    def _on_control(self, msg: list[Any]) -> None:
        kind, rid, sender, *rest = msg
        if kind == "answer":
            fut = self._answers.get(rid)
            if fut is not None and not fut.done():
                fut.set_result(b"")
        elif kind == "ask" and rest and rest[0] == "release":
            assert self._loop is not None
            self._loop.create_task(self._release(rid, sender, rest[1]))

    async def _release(self, rid: str, requester: str, cid: str) -> None:
        """Another node claimed ``cid``: close its connection here, write its session, drop it
        (its routes with it), and answer."""
        earlier = self._claims.get(cid)
        if earlier is not None:  # our own claim of it is under way: let it finish first
            with contextlib.suppress(Exception):
                await earlier
        self.owned.discard(cid)
        self.broker.release_session(cid, requester)
        await self.store.flush()
        with contextlib.suppress(RedisError, OSError):
            await self.redis.publish(self.keys.control(requester),
                                     msgpack.packb(["answer", rid, self.me]))

    # -- metrics ------------------------------------------------------------------------------------

    def stats(self) -> dict[str, float]:
        """Figures for /metrics."""
        return {"redis_up": 1.0 if self.up else 0.0, "nodes_alive": len(self.alive) + 1,
                "forwarded": self.forwarded, "received": self.received,
                "dropped": self.dropped, "backlog": self.store.backlog,
                "redis_failures": self.redis_failures}


async def _chunks(redis: aioredis.Redis, stream: str,
                  size: int = 1000) -> AsyncIterator[list[tuple[bytes, dict[bytes, bytes]]]]:
    """A stream's entries, oldest first, ``size`` at a time."""
    start = "-"
    while True:
        got: Any = await redis.xrange(stream, min=start, count=size)
        if not got:
            return
        yield got
        if len(got) < size:
            return
        last = text(got[-1][0])
        ms, _, seq = last.partition("-")
        start = f"{ms}-{int(seq) + 1}"


def _envelopes(entry_id: bytes, fields: dict[bytes, bytes]) -> list[bytes]:
    """The forwarded messages an inbox entry holds (a list packed in field ``m``)."""
    try:
        batch = msgpack.unpackb(fields[b"m"])
    except (KeyError, ValueError, msgpack.UnpackException):
        log.warning("cluster: unreadable inbox entry %r dropped", entry_id)
        return []
    return batch if isinstance(batch, list) else []
