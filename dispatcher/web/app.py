"""The FastAPI application served by `dispatcher serve`.

Built by :func:`create_app` from the running service, never at import time. The probe
endpoints answer without authentication and say nothing about customers: they are for
load balancers, systemd watchdogs and Prometheus on the operators' network. The provider
webhooks under ``/webhooks/twilio/`` answer only requests signed by the provider.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from dispatcher.web.webhook import webhook_router

if TYPE_CHECKING:
    from dispatcher.daemon import Service


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="dispatcher", docs_url=None, redoc_url=None)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is alive and its event loop answers (restart it if not)."""
        return {"status": "ok", "instance": service.instance}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """Database reachable, schedule running, a plan succeeded recently (503 if not)."""
        readiness = service.readiness()
        return JSONResponse(
            {"ready": readiness.ready, "instance": service.instance, "checks": readiness.checks},
            status_code=200 if readiness.ready else 503,
        )

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus exposition: messages, holds, outbox depth and age, latency, errors."""
        payload, content_type = service.metrics.render()
        return Response(payload, media_type=content_type)

    # Provider webhooks (signed by the provider; see dispatcher/web/webhook.py).
    app.include_router(webhook_router(service))
    return app
