"""The composition root: ``bootstrap(settings) -> Adapter``, which every command uses.

Nothing is created at import time.  The ``Adapter`` builds each part on first use —
the OA driver only when something talks to the OA — owns it from then on, and closes
everything one way: ``close()`` (or leaving its ``with`` block).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property

from .domain.ports import OaWorkflowPort
from .metrics import Metrics
from .services.archive import ArchiveService
from .services.sync import SyncService
from .services.users import UserService
from .settings import Settings
from .store.engine import Store, open_store
from .sync.poller import Poller
from .sync.scheduler import Scheduler, sync_scheduler
from .sync.wakeup import work_signal
from .domain.clock import utc_now
from .sync.worker import DeliveryWorker, default_owner
from .transforms.pipeline import Transforms


@dataclass
class Adapter:
    """The wired adapter: store, transforms, metrics, services, and (on first use) the OA
    driver, the delivery worker, the poller and the scheduler."""

    settings: Settings
    store: Store
    transforms: Transforms
    metrics: Metrics = field(default_factory=Metrics)
    #: lease owner of this adapter's deliveries and scheduled ticks: unique per process
    owner: str = field(default_factory=default_owner)
    _oa: OaWorkflowPort | None = field(default=None, init=False, repr=False)
    _scheduler: Scheduler | None = field(default=None, init=False, repr=False)
    _sync_stopped: bool = field(default=False, init=False, repr=False)
    _oa_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def oa(self) -> OaWorkflowPort:
        """The driver ``[oa] driver`` names (``archive_oa.oa.drivers``), opened on first use."""
        from .oa.drivers import open_driver  # a driver loads its client library (zeep) only when needed

        with self._oa_lock:  # gateway threads may ask at once: one driver, one connection pool
            if self._oa is None:
                self._oa = open_driver(self.settings.oa)
            return self._oa

    @cached_property
    def archive(self) -> ArchiveService:
        return ArchiveService(self.store, self.transforms)

    @cached_property
    def users(self) -> UserService:
        return UserService(self.store, settings=self.settings)

    @cached_property
    def sync(self) -> SyncService:
        return SyncService(self.store, self.oa)

    @cached_property
    def worker(self) -> DeliveryWorker:
        # real-time mode: new work and retries coming due wake an idle worker between ticks
        wake = work_signal(self.store, utc_now) if self.settings.sync.realtime else None
        return DeliveryWorker(self.store, self.oa, self.transforms, self.settings.sync, owner=self.owner,
                              metrics=self.metrics, wake=wake)

    @cached_property
    def poller(self) -> Poller:
        return Poller(self.store, self.oa, self.settings.sync, metrics=self.metrics)

    # --- the one lifecycle ---------------------------------------------------------------

    def start_sync(self) -> None:
        """Delivery and polling on their schedules (``serve``, ``worker``, ``demo --keep-running``)
        until ``stop_sync`` or ``close``."""
        if self._scheduler is None:
            self._scheduler = sync_scheduler(self.worker, self.poller, self.sync, self.settings.sync)
            self._scheduler.start()

    def stop_sync(self) -> int:
        """Stop ticking and claiming, let deliveries already sent settle (for a lease's
        time at most), then hand back every lease this adapter still holds, so the next
        holder asks the OA before sending.  Returns the leases handed back.  The worker
        does not start again afterwards; a second call (``close`` after ``sync`` stopped
        early) does nothing."""
        from .store import outbox

        if self._sync_stopped:
            return 0
        self._sync_stopped = True
        if self._scheduler is not None:
            self._scheduler.stop(timeout=self.settings.sync.lease_seconds)
        if "worker" not in self.__dict__:
            return 0
        self.worker.close()
        with self.store.transaction(immediate=True) as conn:
            return outbox.release_owner(conn, self.owner, now=utc_now())

    def close(self) -> None:
        self.stop_sync()
        if self._oa is not None:
            self._oa.close()
        self.store.dispose()

    def __enter__(self) -> "Adapter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bootstrap(settings: Settings, *, upgrade: bool | None = None) -> Adapter:
    """The adapter for ``settings``; an unknown ``[oa] driver`` stops here, before any work."""
    from .oa.drivers import find_driver

    find_driver(settings.oa.driver)  # the name only: loading the driver waits for first use
    store = open_store(settings, upgrade=upgrade)
    return Adapter(settings, store, Transforms.from_settings(settings.workflow))
