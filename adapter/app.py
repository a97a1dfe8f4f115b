"""Wiring: one ``build(settings)`` turns settings into the running parts.

Nothing is created at import time; entrypoints (CLI commands, the demo, tests) call
``build`` and close what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from .services.archive import ArchiveService
from .services.sync import SyncService
from .services.users import UserService
from .settings import Settings
from .store.engine import Store, open_store
from .transforms.pipeline import Transforms


@dataclass
class Adapter:
    """The wired adapter: store, transforms, services and (lazily) the OA client."""

    settings: Settings
    store: Store
    transforms: Transforms
    _closers: list = field(default_factory=list, repr=False)

    @cached_property
    def oa(self):
        from .oa.client import OaClient  # zeep loads only when the OA is needed

        client = OaClient(self.settings.oa)
        if hasattr(client, "close"):
            self._closers.append(client.close)
        return client

    @cached_property
    def archive(self) -> ArchiveService:
        return ArchiveService(self.store, self.transforms)

    @cached_property
    def users(self) -> UserService:
        return UserService(self.store, settings=self.settings)

    @cached_property
    def sync(self) -> SyncService:
        return SyncService(self.store, self.oa)

    def start_scheduler(self) -> "RunningScheduler":
        """Delivery and polling on their schedules (``serve``, ``worker``, ``demo --keep-running``)."""
        from .sync.scheduler import sync_scheduler

        scheduler, worker = sync_scheduler(self.store, self.oa, self.transforms, self.settings, self.sync)
        scheduler.start()
        return RunningScheduler(scheduler, worker)

    def close(self) -> None:
        for close in reversed(self._closers):
            close()
        self.store.dispose()

    def __enter__(self) -> "Adapter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class RunningScheduler:
    scheduler: object
    worker: object

    def stop(self) -> None:
        """Stop ticking, let sent deliveries settle, release the rest."""
        self.scheduler.stop()
        self.worker.close()


def build(settings: Settings, *, upgrade: bool | None = None) -> Adapter:
    store = open_store(settings, upgrade=upgrade)
    return Adapter(settings, store, Transforms.from_settings(settings.workflow))
