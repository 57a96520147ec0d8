"""aiohttp endpoints (loopback by default): /healthz, /metrics, /signals/latest, /monitor."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from memed.config import DaemonConfig
from memed.daemon.batcher import MinuteBatcher
from memed.daemon.latest import LatestSignals
from memed.daemon.metrics import DaemonMetrics
from memed.daemon.monitoring import Monitoring
from memed.decision import DecisionPath
from memed.monitor.psi import PsiAlarm


class Served(Protocol):
    """What the endpoints read of the daemon (and ``http_port``, which they set once listening)."""

    d: DaemonConfig
    subscribed: asyncio.Event
    path: DecisionPath
    batcher: MinuteBatcher
    processed_minutes: int
    metrics: DaemonMetrics
    latest: LatestSignals
    http_port: int | None
    monitoring: Monitoring


def recent_alarms(daemon: Served) -> list[dict[str, object]]:
    """Drift alarms raised within the scoring window (event time) before the newest closed minute."""
    scoring, psi = daemon.monitoring.scoring, daemon.monitoring.feature_drift
    if scoring is None:
        return []
    since = daemon.batcher.last_closed - scoring.board.buckets_kept * scoring.every
    alarms: list[Any] = list(scoring.drift.alarms)
    if psi is not None:
        alarms += psi.alarms
    return [{"kind": "psi", **dataclasses.asdict(a)} if isinstance(a, PsiAlarm) else dataclasses.asdict(a)
            for a in alarms if a.minute > since]  # fmt: skip


def metrics_handler(metrics: DaemonMetrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    """/metrics: the daemon's counters in Prometheus's text format."""

    async def handle(_: web.Request) -> web.Response:
        resp = web.Response(body=metrics.render())
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    return handle


def build_app(daemon: Served) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        connected = daemon.subscribed.is_set()
        body = {
            "status": "ok" if connected else "degraded",
            "broker_connected": connected,
            "model_set": daemon.path.model_set.id,
            "tokens": daemon.path.tokens,
            "last_minute": daemon.batcher.last_closed,
            "drift_alarms": recent_alarms(daemon),
            "minutes_processed": daemon.processed_minutes,
        }
        return web.Response(body=msgspec.json.encode(body), content_type="application/json",
                            status=200 if connected else 503)  # fmt: skip

    async def latest(request: web.Request) -> web.Response:
        token = request.query.get("token")
        if token is not None:
            sig = daemon.latest.get(token)
            if sig is None:
                raise web.HTTPNotFound(text=f"no signal for {token}")
            return web.Response(body=msgspec.json.encode(sig), content_type="application/json")
        return web.Response(body=daemon.latest.json(), content_type="application/json")

    async def monitor(_: web.Request) -> web.Response:
        scoring = daemon.monitoring.scoring
        snap = scoring.latest if scoring is not None else None
        body = {
            "enabled": scoring is not None,
            "model_set": daemon.path.model_set.id,
            "minute": None if snap is None else snap.minute,
            "horizons": None if snap is None else snap.scores,
            "drift_alarms": recent_alarms(daemon),
        }
        return web.Response(body=msgspec.json.encode(body), content_type="application/json")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/monitor", monitor)
    app.router.add_get("/metrics", metrics_handler(daemon.metrics))
    app.router.add_get("/signals/latest", latest)
    return app


async def serve_http(daemon: Any, build: Any = build_app) -> None:
    """Serve ``build(daemon)`` on ``daemon.d.http_host``/``http_port`` (0: a free port, set on the daemon
    as ``http_port``) until cancelled."""
    runner = web.AppRunner(build(daemon), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, daemon.d.http_host, daemon.d.http_port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    daemon.http_port = sockets[0].getsockname()[1] if sockets else daemon.d.http_port
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
