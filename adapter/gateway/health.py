"""``/healthz``: whether this gateway reaches its database, for load balancers and probes."""

from __future__ import annotations

import json
import logging
from typing import Callable

log = logging.getLogger(__name__)


class Health:
    """200 with ``{"status": "ok", "database": true, "version": …}`` while the store answers
    its ping, else 503 ``"unavailable"``."""

    def __init__(self, services) -> None:
        self._services = services

    def __call__(self, environ: dict, respond: Callable) -> list[bytes]:
        try:
            reachable = bool(self._services.store.ping())
        except Exception:  # noqa: BLE001 - a broken store is exactly what healthz reports
            log.exception("health check: store.ping failed")
            reachable = False
        body = json.dumps(
            {"status": "ok" if reachable else "unavailable", "database": reachable, "version": self._services.version}
        ).encode()
        status = "200 OK" if reachable else "503 Service Unavailable"
        respond(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
