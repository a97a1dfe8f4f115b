"""Real-time delivery: new work and retries coming due wake an idle worker between the ticks
of an hourly delivery schedule, on SQLite (due-poll) and PostgreSQL (LISTEN/NOTIFY)."""

from __future__ import annotations

import time

import pytest

from archive_oa.domain.delivery import DeliveryState
from archive_oa.services.sync import SyncService
from archive_oa.settings import SyncSettings
from archive_oa.store import outbox
from archive_oa.sync.poller import Poller
from archive_oa.sync.scheduler import sync_scheduler
from archive_oa.sync.wakeup import work_signal
from archive_oa.domain.clock import utc_now
from archive_oa.sync.worker import DeliveryWorker
from archive_oa.transforms.pipeline import Transforms
from test_sync_engine import FakeOa, add_vouchers

pytestmark = pytest.mark.slow  # schedulers waiting out real wake-ups, ~25 s

HOURLY = dict(delivery_schedule="every 1h", poll_schedule="every 1h", workers=2, lease_seconds=60)
BOUND = 10.0  # seconds: generous for a loaded machine; a wake-up takes about one poll (0.5 s)


@pytest.fixture
def running(store):
    """Start an hourly scheduler on ``store``, wired as the Adapter wires it; yields a function
    taking SyncSettings overrides."""
    started = []

    def start(oa, **overrides):
        sync = SyncSettings(**{**HOURLY, **overrides})
        wake = work_signal(store, utc_now) if sync.realtime else None
        worker = DeliveryWorker(store, oa, Transforms.from_settings(), sync, wake=wake)
        scheduler = sync_scheduler(worker, Poller(store, oa, sync), SyncService(store, oa), sync)
        scheduler.start()
        started.append((scheduler, worker))
        time.sleep(1.0)  # the worker's first round finds nothing: it is idle, the next tick an hour away
        return worker

    yield start
    for scheduler, worker in started:
        scheduler.stop(timeout=10)
        worker.close()


def states(store, keys) -> list[DeliveryState]:
    with store.transaction() as conn:
        return [outbox.find_by_key(conn, key).state for key in keys]


def wait_delivered(store, keys, bound: float = BOUND) -> float:
    """Seconds until every key is DELIVERED; fails after ``bound``."""
    began = time.monotonic()
    while time.monotonic() - began < bound:
        if all(state is DeliveryState.DELIVERED for state in states(store, keys)):
            return time.monotonic() - began
        time.sleep(0.05)
    pytest.fail(f"not delivered within {bound} s: {states(store, keys)}")


def test_new_work_wakes_an_idle_worker(store, running):
    oa = FakeOa()
    running(oa)
    keys = add_vouchers(store, 5)  # committed by another connection, as an importer would
    wait_delivered(store, keys)
    assert oa.per_key() == {key: 1 for key in keys}
    more = add_vouchers(store, 3, start=6)  # and again, once the worker is idle once more
    wait_delivered(store, more)


def test_a_retry_coming_due_wakes_the_worker(store, running):
    oa = FakeOa(create_faults=["unreachable"])
    running(oa, retry_base_seconds=1.0, retry_max_seconds=1.0)
    (key,) = add_vouchers(store, 1)
    wait_delivered(store, [key])
    assert oa.calls == ["create", "create"]


def test_a_retried_dead_letter_wakes_the_worker(store, running):
    oa = FakeOa(create_faults=["rejected"])
    running(oa)
    (key,) = add_vouchers(store, 1)
    began = time.monotonic()
    while states(store, [key]) != [DeliveryState.DEAD]:
        assert time.monotonic() - began < BOUND
        time.sleep(0.05)
    with store.transaction(immediate=True) as conn:
        assert outbox.retry_dead(conn, None, now=outbox.find_by_key(conn, key).updated_at) == 1
    wait_delivered(store, [key])


def test_scheduled_mode_keeps_to_the_schedule(store, running):
    oa = FakeOa()
    running(oa, realtime=False)
    add_vouchers(store, 2)
    time.sleep(2.0)
    assert oa.calls == []  # queued work waits for the (hourly) tick
