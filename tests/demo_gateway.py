"""The gateway as ``archive-oa demo`` sets it up, for tests that talk to it over HTTP.

``running_demo()`` starts the demo's parts in-process (``archive_oa.demo.Demo``: the
OA simulator, the gateway, the demo users ``demo-<role>`` whose password is their name)
with the simulator's faults off, imports the bundled sample vouchers, and optionally
delivers a first batch to the simulator so OA request ids exist — what a user finds a
few seconds after ``archive-oa demo --keep-running``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from archive_oa.bootstrap import Adapter
from archive_oa.demo import Demo, DemoOptions
from archive_oa.gateway.app import make_gateway_app
from archive_oa.gateway.server import GatewayHandle, start_gateway
from archive_oa.samples import samples_dir
from archive_oa.services.importer import import_paths
from archive_oa.sync.worker import DeliveryWorker

FAULT_FREE = dict(error_rate=0.0, drop_rate=0.0, ambiguous_rate=0.0, latency_ms=0)


@contextmanager
def running_demo(*, deliver_first_batch: bool = False, **options) -> Iterator[Demo]:
    demo = Demo(DemoOptions(**{**FAULT_FREE, "decide_after": 60.0, **options}), progress=lambda _line: None)
    try:
        demo.start()
        report = import_paths(demo.adapter.store, demo.adapter.transforms, [str(samples_dir())])
        assert report.ok, report.issues[:3]
        if deliver_first_batch:
            worker = DeliveryWorker(demo.adapter.store, demo.adapter.oa, demo.adapter.transforms,
                                    demo.settings.sync, owner="test")
            try:
                assert worker.run_once().delivered > 0
            finally:
                worker.close()
        yield demo
    finally:
        demo.stop()


@contextmanager
def second_gateway(demo: Demo, **gateway_settings) -> Iterator[GatewayHandle]:
    """Another gateway on the demo's database with some ``[gateway]`` settings changed,
    e.g. ``response_encoding="GBK"``."""
    settings = demo.settings.replace(gateway={**gateway_settings, "public_url": ""})
    adapter = Adapter(settings=settings, store=demo.adapter.store, transforms=demo.adapter.transforms)
    handle = start_gateway(make_gateway_app(adapter), "127.0.0.1", 0)
    try:
        yield handle
    finally:
        handle.stop()
