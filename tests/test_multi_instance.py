"""Several instances on one database.

PostgreSQL: three worker processes deliver one outbox to the OA simulator — no
delivery attempt is claimed twice (``FOR UPDATE SKIP LOCKED`` with a lease), a
worker killed between send and settle loses its claims when the lease ends and a
survivor settles them by asking the OA (``FindWorkflowRequests``); scheduled jobs
run once per tick across instances.

SQLite: one instance is the supported set-up, but two processes on one file (an
operator starting a second ``archive-oa worker``) must wait for each other
(``BEGIN IMMEDIATE``, busy timeout) rather than fail; a lock held longer than the
busy timeout costs a round, never a crashed or silently stopped worker.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from archive_oa.domain.delivery import DeliveryState
from archive_oa.domain.model import Voucher
from archive_oa.oa.simulator import SimulatorConfig, start_simulator
from archive_oa.samples import samples_dir
from archive_oa.store import jobs, outbox
from archive_oa.store.engine import open_store
from archive_oa.sync.schedule import parse_schedule
from archive_oa.sync.scheduler import ScheduledJob, Scheduler

import factories

pytestmark = pytest.mark.slow  # worker processes and lock waits

NOW = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.timezone.utc)
WORKER_SCRIPT = Path(__file__).with_name("multi_instance_worker.py")
S = DeliveryState


def voucher(n: int) -> Voucher:
    return factories.voucher(
        org="HN02", org_name="华南贸易", fonds="Z002", period="2026-11", day=2, no=n, preparer="刘洋",
        amount=300 + n, summary="支付运费", debit=("6601", "销售费用"), lines=("支付运费", "银行付款"),
    )


def read_claims(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("claims-*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def worker_process(mode: str, owner: str, *, data_dir: Path, url: str, oa_url: str, folder: Path, **extra):
    command = [sys.executable, str(WORKER_SCRIPT), "--mode", mode, "--owner", owner, "--data-dir", str(data_dir),
               "--database-url", url, "--oa-url", oa_url, "--claims", str(folder / f"claims-{owner}.jsonl")]
    for name, value in extra.items():
        command += [f"--{name}", str(value)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "ARCHIVE_OA_LOG_LEVEL": "WARNING"})


# --- PostgreSQL: three workers, one of them dying holding claims -----------------------------


def test_three_worker_processes_on_postgresql_never_share_a_claim_and_adopt_a_dead_workers_sends(
        postgres, tmp_path):
    count, doomed_batch = 150, 4
    url = postgres.create_database()
    data_dir = tmp_path / "data"
    from archive_oa.settings import load_settings

    store = open_store(load_settings(data_dir=data_dir, env={"ARCHIVE_OA_DATABASE_URL": url}), upgrade=False)
    simulator = start_simulator(SimulatorConfig(decide_after=3600, seed=20261102), tmp_path / "oa")
    processes = []
    try:
        keys = factories.queue_vouchers(store, [voucher(n) for n in range(1, count + 1)], NOW)
        where = dict(data_dir=data_dir, url=url, oa_url=simulator.url, folder=tmp_path)

        # 1. a worker claims a batch with a short lease, sends it, and is killed before settling
        doomed = worker_process("die-after-send", "doomed", threads=doomed_batch, batch=doomed_batch, lease=3,
                                **where)
        processes.append(doomed)
        sent = [json.loads(doomed.stdout.readline())["sent"] for _ in range(doomed_batch)]
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(30)
        with store.transaction() as conn:
            held = outbox.list_deliveries(conn, states=[S.IN_FLIGHT])
        assert {d.lease_owner for d in held} == {"doomed"} and len(held) == doomed_batch
        doomed_keys = {d.idempotency_key for d in held}

        # 2. three workers start together, the OA now faulty; the dead worker's lease runs out meanwhile
        simulator.set_faults(error_rate=0.05, drop_rate=0.03, ambiguous_rate=0.04, ambiguous_hold=1.5)
        go = tmp_path / "go"
        workers = [worker_process("work", f"w{i}", go=go, **where) for i in (1, 2, 3)]
        processes += workers
        for proc in workers:
            assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
        go.touch()
        results = []
        for proc in workers:
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err
            assert "Traceback" not in err, err
            results.append(json.loads(out.strip().splitlines()[-1]))

        # no (delivery, attempt) was ever claimed by two workers
        claims = read_claims(tmp_path)
        attempts = Counter((c["id"], c["attempts"]) for c in claims)
        assert [pair for pair, n in attempts.items() if n > 1] == []
        by_owner = Counter(c["owner"] for c in claims)
        assert all(by_owner[f"w{i}"] > 0 for i in (1, 2, 3)), f"every worker took part: {by_owner}"

        # the dead worker's claims were re-claimed after the lease and adopted from the OA, not re-sent
        reclaimed = [c for c in claims if c["key"] in doomed_keys and c["owner"] != "doomed"]
        assert {c["prior"] for c in reclaimed if c["attempts"] == 2} == {"IN_FLIGHT"}
        with store.transaction() as conn:
            settled = {d.idempotency_key: d for d in outbox.list_deliveries(conn, limit=count + 10)}
            totals = outbox.counts(conn)
        assert sorted(int(settled[k].oa_request_id) for k in doomed_keys) == sorted(sent)
        assert sum(r["adopted"] for r in results) >= doomed_batch

        # end state, counted in the OA's own database: one request per voucher, nothing open or dead
        per_key = simulator.db.requests_per_external_key()
        assert set(per_key) == set(keys) and set(per_key.values()) == {1}
        assert totals[S.DELIVERED] == count and totals[S.DEAD] == 0
        faults = simulator.injector.counts()
        print(f"\n3 workers on PostgreSQL: {count} vouchers, claims {dict(by_owner)}, "
              f"worker results {results}, injected faults {faults}")
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        simulator.stop()
        store.dispose()
        postgres.drop_database(url)


# --- scheduled jobs: once per tick across instances ------------------------------------------


def _instances(db_settings, n: int) -> list:
    """``n`` stores on one database, each with its own engine (as separate instances have)."""
    first = open_store(db_settings, upgrade=True)
    return [first] + [open_store(db_settings, upgrade=False) for _ in range(n - 1)]


def test_tick_claims_race_and_each_tick_is_won_once(db_settings):
    stores = _instances(db_settings, 3)
    ticks = [NOW + dt.timedelta(minutes=i) for i in range(30)]
    barrier = threading.Barrier(len(stores))
    won: list[tuple[str, dt.datetime]] = []
    lock = threading.Lock()

    def instance(name, store):
        for tick in ticks:
            barrier.wait(30)  # everyone claims the same tick at the same moment
            with store.transaction(immediate=True) as conn:
                if jobs.claim_tick(conn, "poll", tick=tick, owner=name, now=tick):
                    with lock:
                        won.append((name, tick))

    threads = [threading.Thread(target=instance, args=(f"i{i}", s)) for i, s in enumerate(stores)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        for s in stores:
            s.dispose()
    assert sorted(tick for _, tick in won) == ticks  # every tick won, and only once


def test_three_schedulers_run_an_exclusive_job_once_per_tick(db_settings):
    stores = _instances(db_settings, 3)
    runs: list[tuple[str, dt.datetime]] = []
    lock = threading.Lock()

    def job_for(name):
        def run(tick):
            with lock:
                runs.append((name, tick))
        return run

    schedulers = [Scheduler([ScheduledJob("poll", parse_schedule("every 1s"), job_for(f"i{i}"))], store,
                            owner=f"i{i}") for i, store in enumerate(stores)]
    try:
        for scheduler in schedulers:
            scheduler.start()
        deadline = time.monotonic() + 30
        while len({tick for _, tick in runs}) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for scheduler in schedulers:
            scheduler.stop(timeout=10)
        for store in stores:
            store.dispose()
    per_tick = Counter(tick for _, tick in runs)
    assert len(per_tick) >= 4, runs
    assert set(per_tick.values()) == {1}, f"a tick ran on several instances: {per_tick}"


# --- SQLite: two processes on one file -------------------------------------------------------


def test_an_exclusive_tick_that_cannot_be_claimed_is_skipped_and_the_next_one_runs(tmp_path):
    from archive_oa.settings import load_settings

    settings = load_settings(data_dir=tmp_path, env={"ARCHIVE_OA_DATABASE_SQLITE_BUSY_TIMEOUT_MS": "100"})
    store = open_store(settings)
    runs: list[dt.datetime] = []
    job = ScheduledJob("poll", parse_schedule("every 1s"), runs.append)
    scheduler = Scheduler([job], store, owner="one")
    blocker = sqlite3.connect(settings.data_dir / "archive-oa.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process writes for longer than the busy timeout
        assert scheduler.run_tick(job, NOW) is False  # logged and skipped: the schedule thread lives on
        blocker.execute("ROLLBACK")
        assert scheduler.run_tick(job, NOW + dt.timedelta(seconds=1)) is True
        assert runs == [NOW + dt.timedelta(seconds=1)]
    finally:
        blocker.close()
        store.dispose()


def _cli(*args):
    return [sys.executable, "-m", "archive_oa.cli.main", *args]


def _worker(env, log: Path) -> subprocess.Popen:
    """``archive-oa worker`` with its log in a file (a pipe nobody reads could fill and block it)."""
    with open(log, "w", encoding="utf-8") as err:
        return subprocess.Popen(_cli("worker"), env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)


def _wait_started(log: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while "SIGTERM or Ctrl-C stops" not in log.read_text(encoding="utf-8"):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text(encoding="utf-8")
        time.sleep(0.1)


@pytest.fixture
def sqlite_env(tmp_path):
    simulator = start_simulator(SimulatorConfig(decide_after=0.2, seed=7, error_rate=0.05, drop_rate=0.03),
                                tmp_path / "oa")
    home = tmp_path / "home"
    home.mkdir()
    (home / "archive-oa.toml").write_text(
        '[sync]\ndelivery_schedule = "every 1s"\npoll_schedule = "every 1s"\nretry_base_seconds = 0.2\n'
        'retry_max_seconds = 1.0\nmax_attempts = 60\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVE_OA_")}
    env.update(ARCHIVE_OA_HOME=str(home), ARCHIVE_OA_OA_URL=simulator.url, ARCHIVE_OA_OA_TIMEOUT="5")
    yield simulator, home, env
    simulator.stop()


def _stop(processes, logs) -> list[tuple[int, str]]:
    """SIGTERM, wait; (exit code, log) per process."""
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    results = []
    for proc, log in zip(processes, logs):
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        results.append((proc.returncode, log.read_text(encoding="utf-8")))
    return results


def _decided_in_archive(home: Path) -> int:
    with sqlite3.connect(home / "archive-oa.db", timeout=30) as conn:
        n = conn.execute("SELECT count(*) FROM vouchers WHERE is_latest AND state IN ('APPROVED', 'REJECTED')"
                         ).fetchone()[0]
    conn.close()
    return n


def test_two_worker_processes_and_an_import_on_one_sqlite_file_wait_instead_of_failing(sqlite_env):
    simulator, home, env = sqlite_env
    files = [str(samples_dir() / name) for name in ("HD01-2026-09.xml", "XB03-2026-10.xml")]
    # all three start on an empty data folder at once: migrations, imports, claims and polls contend
    logs = [home.parent / f"worker-{i}.log" for i in (1, 2)]
    workers = [_worker(env, log) for log in logs]
    try:
        imported = subprocess.run(_cli("import", *files), env=env, capture_output=True, text=True,
                                  timeout=180)
        assert imported.returncode == 0, imported.stderr
        with sqlite3.connect(home / "archive-oa.db") as conn:
            count = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        conn.close()
        assert count > 50
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            if len(simulator.db.requests_per_external_key()) == count and _decided_in_archive(home) == count:
                break
            assert all(w.poll() is None for w in workers), "a worker process ended"
            time.sleep(0.5)
    finally:
        results = _stop(workers, logs)
    for returncode, err in results:
        assert returncode == 0, err
        assert "database is locked" not in err and "OperationalError" not in err, err
    per_key = simulator.db.requests_per_external_key()
    assert len(per_key) == count and set(per_key.values()) == {1}
    assert _decided_in_archive(home) == count


def test_a_lock_held_past_the_busy_timeout_costs_rounds_not_the_worker(sqlite_env):
    simulator, home, env = sqlite_env
    simulator.set_faults(error_rate=0.0, drop_rate=0.0)  # every error logged below is then the lock's
    # a settle that meets the lock leaves its claim to the lease: keep that short here
    env = {**env, "ARCHIVE_OA_DATABASE_SQLITE_BUSY_TIMEOUT_MS": "300", "ARCHIVE_OA_SYNC_LEASE_SECONDS": "8"}
    sample = str(samples_dir() / "HN02-2026-09.xml")
    subprocess.run(_cli("import", sample), env=env, check=True, capture_output=True, timeout=120)
    with sqlite3.connect(home / "archive-oa.db") as conn:
        count = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    conn.close()
    log = home.parent / "worker.log"
    worker = _worker(env, log)
    try:
        _wait_started(log, worker)
        # another process holds the write lock for 2.5 s, three times: far past the 0.3 s busy timeout
        for _ in range(3):
            blocker = sqlite3.connect(home / "archive-oa.db", isolation_level=None, timeout=30)
            blocker.execute("BEGIN IMMEDIATE")
            time.sleep(2.5)
            blocker.execute("ROLLBACK")
            blocker.close()
            time.sleep(0.5)
            assert worker.poll() is None, "the worker ended"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if len(simulator.db.requests_per_external_key()) == count and _decided_in_archive(home) == count:
                break
            time.sleep(0.5)
    finally:
        ((returncode, err),) = _stop([worker], [log])
    assert returncode == 0, err
    assert "database is locked" in err  # the rounds that met the lock said so …
    # … once per tick of each job (two jobs, 1 s ticks, 7.5 s of lock plus slack): no spinning
    failed_ticks = sum(1 for line in err.splitlines() if "ERROR archive_oa.sync.scheduler" in line)
    assert 0 < failed_ticks <= 2 * 12, f"{failed_ticks} failed ticks"
    per_key = simulator.db.requests_per_external_key()
    assert len(per_key) == count and set(per_key.values()) == {1}
    assert _decided_in_archive(home) == count  # polling survived the locked ticks too
