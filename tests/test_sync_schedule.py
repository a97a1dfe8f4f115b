"""Interval and cron schedules, and the once-per-tick scheduler lock."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from archive_oa.errors import ConfigurationError
from archive_oa.store import jobs
from archive_oa.sync.schedule import CronSchedule, IntervalSchedule, parse_schedule
from archive_oa.sync.scheduler import ScheduledJob, Scheduler

UTC = dt.timezone.utc
CST = dt.timezone(dt.timedelta(hours=8))  # 北京时间


def at(*args, tz=UTC):
    return dt.datetime(*args, tzinfo=tz)


@pytest.mark.parametrize("text,seconds", [("every 30s", 30), ("every 5m", 300), ("every 1h", 3600),
                                          ("Every  2 minutes", 120), ("every 1d", 86400)])
def test_interval_parsing(text, seconds):
    schedule = parse_schedule(text)
    assert isinstance(schedule, IntervalSchedule) and schedule.seconds == seconds


def test_interval_ticks_are_epoch_aligned_and_strictly_after():
    every = parse_schedule("every 30s")
    assert every.next_after(at(2024, 3, 1, 10, 0, 0)) == at(2024, 3, 1, 10, 0, 30)
    assert every.next_after(at(2024, 3, 1, 10, 0, 29)) == at(2024, 3, 1, 10, 0, 30)
    # two instances starting at different moments agree on the tick
    assert every.next_after(at(2024, 3, 1, 10, 0, 1)) == every.next_after(at(2024, 3, 1, 10, 0, 17))


def test_cron_daily_at_two_in_the_configured_zone():
    cron = parse_schedule("0 2 * * *", tz=CST)
    assert isinstance(cron, CronSchedule)
    assert cron.next_after(at(2024, 3, 1, 1, 59, tz=CST)) == at(2024, 3, 1, 2, 0, tz=CST)
    assert cron.next_after(at(2024, 3, 1, 2, 0, tz=CST)) == at(2024, 3, 2, 2, 0, tz=CST)  # strictly after
    assert cron.next_after(at(2024, 3, 1, 2, 0, tz=CST)).tzinfo == UTC


@pytest.mark.parametrize(
    "expr,start,expected",
    [
        ("*/15 * * * *", at(2024, 3, 1, 10, 7), at(2024, 3, 1, 10, 15)),
        ("5,35 9-10 * * *", at(2024, 3, 1, 10, 36), at(2024, 3, 2, 9, 5)),
        ("0 9 * * mon-fri", at(2024, 3, 1, 9, 0), at(2024, 3, 4, 9, 0)),  # Fri → next Mon
        ("0 0 1 * *", at(2024, 1, 31, 12, 0), at(2024, 2, 1, 0, 0)),
        ("0 0 29 2 *", at(2024, 3, 1, 0, 0), at(2028, 2, 29, 0, 0)),  # leap day
        ("0 12 * * 0", at(2024, 3, 1, 0, 0), at(2024, 3, 3, 12, 0)),  # 0 = Sunday
        ("0 12 * * 7", at(2024, 3, 1, 0, 0), at(2024, 3, 3, 12, 0)),  # 7 = Sunday too
        ("0 0 13 * 5", at(2024, 3, 2, 0, 0), at(2024, 3, 8, 0, 0)),  # dom OR dow when both given
        ("10-20/5 8 * jan,mar *", at(2024, 1, 31, 8, 20), at(2024, 3, 1, 8, 10)),
        ("30 23 31 12 *", at(2024, 12, 31, 23, 31), at(2025, 12, 31, 23, 30)),
    ],
)
def test_cron_next_after(expr, start, expected):
    assert parse_schedule(expr, tz=UTC).next_after(start) == expected


@pytest.mark.parametrize(
    "text,words",
    [
        ("0 2 * *", "4 fields"),
        ("61 * * * *", "minute field '61' has 61, out of range"),
        ("* 24 * * *", "hour field"),
        ("* * 0 * *", "day of month"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "backwards"),
        ("* * * foo *", "not a number"),
        ("every 0s", "positive"),
        ("every 5 fortnights", "unknown unit"),
        ("every now and then", "every <number><unit>"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_bad_schedules_say_what_to_fix(text, words):
    with pytest.raises(ConfigurationError) as info:
        parse_schedule(text, tz=UTC).next_after(at(2024, 1, 1))
    assert words in str(info.value)


def test_naive_instants_are_refused():
    with pytest.raises(ValueError, match="no time zone"):
        parse_schedule("every 5m").next_after(dt.datetime(2024, 1, 1))


# ``store`` (tests/conftest.py): a fresh database, each test once on SQLite and once on PostgreSQL.


def test_a_tick_is_won_once_across_instances(store):
    tick = at(2024, 3, 1, 2, 0)
    now = at(2024, 3, 1, 2, 0, 1)
    with store.transaction(immediate=True) as conn:
        assert jobs.claim_tick(conn, "poll", tick=tick, owner="a", now=now)
    with store.transaction(immediate=True) as conn:
        assert not jobs.claim_tick(conn, "poll", tick=tick, owner="b", now=now)
        assert not jobs.claim_tick(conn, "poll", tick=tick - dt.timedelta(minutes=1), owner="b", now=now)
        assert jobs.claim_tick(conn, "poll", tick=tick + dt.timedelta(minutes=1), owner="b", now=now)
        assert jobs.claim_tick(conn, "delivery", tick=tick, owner="b", now=now)  # per job name


def test_two_schedulers_run_an_exclusive_tick_once(store):
    ran: list[str] = []
    lock = threading.Lock()

    def job_for(name):
        def run(tick):
            with lock:
                ran.append(name)
        return run

    tick = at(2024, 3, 1, 2, 0)
    one = Scheduler([ScheduledJob("nightly", parse_schedule("0 2 * * *"), job_for("one"))], store, owner="one")
    two = Scheduler([ScheduledJob("nightly", parse_schedule("0 2 * * *"), job_for("two"))], store, owner="two")
    results = [one.run_tick(one.jobs[0], tick), two.run_tick(two.jobs[0], tick)]
    assert results.count(True) == 1 and len(ran) == 1
    # a non-exclusive job runs on every instance
    shared = ScheduledJob("delivery", parse_schedule("every 30s"), job_for("shared"), exclusive=False)
    assert one.run_tick(shared, tick) and two.run_tick(shared, tick)


@pytest.mark.slow
def test_scheduler_thread_runs_jobs_and_stops_promptly(store):
    calls: list[dt.datetime] = []
    failing_calls: list[int] = []

    def boom(tick):
        failing_calls.append(1)
        raise RuntimeError("one bad round")

    scheduler = Scheduler(
        [
            ScheduledJob("fast", parse_schedule("every 1s"), calls.append, exclusive=True),
            ScheduledJob("failing", parse_schedule("every 1s"), boom, exclusive=False),
        ],
        store,
    )
    scheduler.start()
    deadline = time.monotonic() + 5
    while (len(calls) < 2 or len(failing_calls) < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    scheduler.stop(timeout=5)
    assert time.monotonic() - started < 2
    assert len(calls) >= 2 and len(failing_calls) >= 2  # a failing round does not end the schedule
    assert calls == sorted(set(calls))  # each tick once, in order
