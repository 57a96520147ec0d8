"""The endpoints of a ``--source nats`` daemon: /healthz (its partitions and the live daemons) and
/metrics (the daemon's counters, ``memed_nats_*`` included)."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from memed.daemon.http import metrics_handler


def build_nats_app(daemon: Any) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        connected = daemon.nc is not None and daemon.nc.is_connected
        body = {
            "status": "ok" if connected else "degraded",
            "nats_connected": connected,
            "member": daemon.member,
            "live_daemons": daemon.live_members,
            "partitions": sorted(daemon.lanes),
            "share": daemon.share,
            "model_set": daemon.model_set.id,
            "tokens": sum(lane.path.tokens for lane in list(daemon.lanes.values())),
            "minutes_processed": daemon.processed_minutes,
        }
        return web.Response(body=msgspec.json.encode(body), content_type="application/json",
                            status=200 if connected else 503)  # fmt: skip

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler(daemon.metrics))
    return app
