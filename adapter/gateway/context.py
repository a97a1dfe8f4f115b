"""What the gateway's operations run against: the services, and per call the caller."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import __version__
from ..domain.clock import utc_now
from ..metrics import Metrics
from ..services.users import Principal
from ..wsgi_keys import CORRELATION_KEY  # noqa: F401 (read here by the gateway's modules)
from .auth import Authenticator



@dataclass(frozen=True)
class GatewayServices:
    """Everything the operations call; built once by ``build_gateway_services``."""

    store: Any  # archive_oa.store.engine.Store: ping() for /healthz
    archive: Any  # archive_oa.services.archive.ArchiveService
    authenticator: Authenticator
    sync: Any | None = None  # archive_oa.services.sync.SyncService; None: sync operations unavailable
    clock: Callable[[], dt.datetime] = field(default=utc_now)
    version: str = __version__
    metrics: Metrics = field(default_factory=Metrics)  # the Adapter's; calls counted by operation and outcome


@dataclass(frozen=True)
class GatewayCall:
    """One authenticated call: the first argument ``perform_call`` gives an operation."""

    operation: str
    principal: Principal
    services: GatewayServices
    correlation_id: str

    @property
    def scope(self) -> frozenset[str] | None:
        return self.principal.org_scope
