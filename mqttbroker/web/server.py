"""The HTTP listener (aiohttp, on the broker's event loop): the dashboard, ``/metrics``, the
admin API (docs/web.md).

The admin API wants ``Authorization: Bearer TOKEN``; the token comes from ``http.token`` or
``http.token-file`` (made, random and mode 0600, when the file does not exist). Without one the
API answers 403. The dashboard, ``/dashboard.json``, ``/healthz`` and ``/metrics`` are open:
they show what ``$SYS`` shows to any subscriber, so bind the listener to an address only
operators reach (127.0.0.1 by default).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from .. import __version__
from ..errors import ConfigError, ConfigIssue
from ..protocol.constants import ReasonCode
from . import api
from .prometheus import CONTENT_TYPE, MetricsPage

if TYPE_CHECKING:
    from ..core.hooks import BrokerView

log = logging.getLogger("mqttbroker.http")

DIST: Final = Path(__file__).parent / "dashboard" / "dist"
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_NOT_BUILT: Final = """<!doctype html><meta charset="utf-8"><title>mqttbroker</title>
<h1>The dashboard is not built</h1>
<p>Its JavaScript comes from npm and is bundled by <code>make dashboard</code> (which
<code>make run</code> and <code>make test</code> do). /metrics and /api/v1/ work without it.</p>
"""


def read_token(path: str) -> str:
    """The token in ``path``; a new random one, written with mode 0600, when it is missing.
    :class:`ConfigError` naming ``http.token-file`` when it cannot be read or made."""
    try:
        try:
            with open(path, encoding="utf-8") as fh:
                token = fh.read().strip()
        except FileNotFoundError:
            token = secrets.token_urlsafe(24)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(token + "\n")
            log.info("http: created a new admin API token in %s", path)
    except OSError as exc:
        raise ConfigError([ConfigIssue("http.token-file", None,
                                       f"cannot read or create {path}: {exc.strerror or exc}")]
                          ) from None
    if len(token) < 8:
        raise ConfigError([ConfigIssue("http.token-file", None,
                                       f"{path}: the token must have at least 8 characters")])
    return token


def _json(data: Any, status: int = 200, **headers: str) -> web.Response:
    return web.Response(text=json.dumps(data, separators=(",", ":")), status=status,
                        content_type="application/json", headers=headers or None)


def _error(status: int, message: str, **headers: str) -> web.Response:
    return _json({"error": message}, status, **headers)


class HttpServer:
    """The ``http`` section's listener for one broker."""

    def __init__(self, broker: BrokerView) -> None:
        self.broker = broker
        cfg = broker.config.http
        self.config = cfg
        self.token = cfg.token or (read_token(cfg.token_file) if cfg.token_file else None)
        self.metrics = MetricsPage(broker)
        self.port = 0
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/dashboard.json", self._dashboard_json)
        app.router.add_get("/api/v1/clients", self._clients)
        app.router.add_post("/api/v1/clients/{client_id:.+}/disconnect", self._disconnect)
        app.router.add_get("/api/v1/clients/{client_id:.+}", self._client)
        app.router.add_delete("/api/v1/clients/{client_id:.+}", self._discard)
        app.router.add_get("/api/v1/subscriptions", self._subscriptions)
        app.router.add_get("/api/v1/retained", self._retained)
        app.router.add_get("/api/v1/bridges", self._bridges)
        app.router.add_get("/api/v1/bridges/{name}", self._bridge)
        if cfg.dashboard:
            app.router.add_get("/", self._index)
            app.router.add_get("/assets/{name}", self._asset)
        self.app = app
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        cfg = self.config
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, cfg.host or None, cfg.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, self.port = runner.addresses[0][:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        url = f"http://{shown if ':' not in shown else f'[{shown}]'}:{self.port}"
        if cfg.dashboard:
            log.info("dashboard: %s/", url)
        log.info("http: metrics at %s/metrics, admin API at %s/api/v1/ (%s)", url, url,
                 "bearer token" if self.token else "off: no http.token")

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- guard: the admin API's token, JSON errors under /api/ -----------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        if self.token is None:
            return _error(403, "the admin API is off: set http.token or http.token-file in "
                          "the broker's config")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self.token.encode()):
            return _error(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)",
                          **{"WWW-Authenticate": 'Bearer realm="mqttbroker"'})
        try:
            return await handler(request)
        except api.ApiError as exc:
            return _error(exc.status, exc.message)
        except web.HTTPException as exc:
            return _error(exc.status, exc.reason)

    # -- open pages ----------------------------------------------------------------------------

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n" if self.broker.running else "stopping\n",
                            status=200 if self.broker.running else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _dashboard_json(self, _request: web.Request) -> web.Response:
        b = self.broker
        by_name = {lc.name: lc for lc in b.config.listeners}
        mqtt = [{"listener": name, "host": host, "port": port, "path": by_name[name].path,
                 "tls": by_name[name].ssl}
                for name, host, port in b.addresses if by_name[name].type == "ws"]
        bridges = [{"name": st.name, "addresses": list(st.addresses)}
                   for st in b.bridge_stats()]
        return _json({"version": __version__, "sys_interval": b.config.sys_interval,
                      "fleet_root": "fleet", "mqtt": mqtt, "bridges": bridges})

    async def _index(self, _request: web.Request) -> web.StreamResponse:
        index = DIST / "index.html"
        if not index.is_file():
            return web.Response(text=_NOT_BUILT, status=503, content_type="text/html")
        return web.FileResponse(index, headers={"Cache-Control": "no-cache"})

    async def _asset(self, request: web.Request) -> web.StreamResponse:
        # looked up per request (the dashboard may be built after the broker started); the
        # names carry no hash, so browsers revalidate instead of keeping an old build
        name = request.match_info["name"]
        path = DIST / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    # -- the admin API ----------------------------------------------------------------------------

    async def _clients(self, request: web.Request) -> web.Response:
        return _json(api.clients(self.broker, dict(request.query)))

    async def _client(self, request: web.Request) -> web.Response:
        return _json(api.client(self.broker, request.match_info["client_id"]))

    async def _disconnect(self, request: web.Request) -> web.Response:
        cid = request.match_info["client_id"]
        discard = False
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                raise api.ApiError(400, "the body must be JSON") from None
            if not isinstance(body, dict) or not isinstance(
                    body.get("discard_session", False), bool):
                raise api.ApiError(400, 'expected {"discard_session": true|false}')
            discard = body.get("discard_session", False)
        if not self.broker.admin_disconnect(cid, ReasonCode.ADMINISTRATIVE_ACTION,
                                            discard_session=discard):
            raise api.ApiError(404, f"client {cid!r} is not connected")
        log.info("admin API: disconnected client %r%s", cid,
                 " and discarded its session" if discard else "")
        return _json({"client_id": cid, "disconnected": True, "session_discarded": discard})

    async def _discard(self, request: web.Request) -> web.Response:
        cid = request.match_info["client_id"]
        if not self.broker.discard_session(cid):
            raise api.ApiError(404, f"no session for client id {cid!r}")
        log.info("admin API: discarded the session of client %r", cid)
        return _json({"client_id": cid, "session_discarded": True})

    async def _subscriptions(self, request: web.Request) -> web.Response:
        return _json(api.subscriptions(self.broker, dict(request.query)))

    async def _retained(self, request: web.Request) -> web.Response:
        return _json(api.retained(self.broker, dict(request.query)))

    async def _bridges(self, request: web.Request) -> web.Response:
        return _json(api.bridges(self.broker, dict(request.query)))

    async def _bridge(self, request: web.Request) -> web.Response:
        return _json(api.bridge(self.broker, request.match_info["name"]))
