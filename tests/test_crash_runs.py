"""Crash runs: the delivery worker and the poller run as separate processes and are
killed with SIGKILL at random (seeded) moments, then restarted; SIGTERM drains.

The deliverer is the product's own ``archive-oa worker`` (delivery on its schedule,
polling switched off); the poller is a small ``python -c`` loop over the package's
``Poller`` so that it is nearly always in the middle of a round when the kill comes.
Each is killed at least 10 times while the 2,000 vouchers are still being delivered.
The end state is counted in the simulator's own database and the archive, as in the
fault runs.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

import scenario as sc
from archive_oa.domain.delivery import DeliveryState
from archive_oa.store import cursors, outbox
from archive_oa.store.sync_tables import deliveries
from archive_oa.sync.poller import CURSOR_NAME

pytestmark = pytest.mark.slow  # 2,000 vouchers with SIGKILLs: minutes

VOUCHERS = 2000
KILLS = 12  # per process; the issue asks for at least 10
TIME_LIMIT = 300.0
NEVER = "0 0 1 1 *"  # a cron tick once a year: switches a scheduled job off for the run

POLLER_LOOP = """
import signal, sys, time
from archive_oa.errors import OaError
from archive_oa.oa.client import OaClient
from archive_oa.settings import load_settings
from archive_oa.store.engine import open_store
from archive_oa.sync.poller import Poller

stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
settings = load_settings()
store = open_store(settings)
poller = Poller(store, OaClient(settings.oa), settings.sync)
print("polling", flush=True)
while not stop:
    try:
        poller.run_once()
    except OaError:
        pass  # an injected fault: the next round reads from the same cursor
    time.sleep(0.05)
store.dispose()
"""


@dataclass
class Child:
    """One restartable child process whose output goes to a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_dir: Path
    ready_marker: str  # what the child prints once it is set up and working
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    lives: int = 0
    kills: list[dict] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.lives}.log"

    def start(self) -> None:
        self.lives += 1
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.started_at = time.monotonic()

    def kill(self, evidence: dict) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        evidence["after_seconds"] = round(time.monotonic() - self.started_at, 2)
        self.kills.append(evidence)

    def terminate(self, timeout: float = 90.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            raise AssertionError(f"{self.name} did not stop within {timeout}s of SIGTERM: {self.tail()}")

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def ready(self) -> bool:
        """Set up and working: a kill before this would only hit the interpreter starting."""
        return self.log_path.exists() and self.ready_marker in self.log_path.read_text(encoding="utf-8", errors="replace")

    def ensure_running(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited by itself with {self.proc.returncode}: {self.tail()}")


def outbox_snapshot(store) -> dict:
    """Open work, claims under a live lease (the running worker's), delivered, poll cursor."""
    with store.transaction() as conn:
        per_state = outbox.counts(conn)
        cursor = cursors.get_cursor(conn, CURSOR_NAME)
        live = conn.execute(sa.select(sa.func.count()).where(
            deliveries.c.state == DeliveryState.IN_FLIGHT.value, deliveries.c.lease_until > sc.utcnow())).scalar()
    return {
        "open": sum(per_state[s] for s in sc.OPEN_STATES),
        "in_flight": live,
        "delivered": per_state[DeliveryState.DELIVERED],
        "cursor": cursor,
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def crash_run(tmp_path, request):
    """The run's vouchers, simulator and adapter, on SQLite or on PostgreSQL (where the
    worker and poller processes take claims with FOR UPDATE SKIP LOCKED, not BEGIN IMMEDIATE)."""
    seed = 5101
    database_url = sc.database_for(request.param, request)
    folder = tmp_path / "vouchers"
    count = sc.generate_vouchers(folder, VOUCHERS)
    poison = sc.write_poison(folder)
    simulator = sc.start_simulator(sc.simulator_config(seed, error_rate=0.05, latency_ms=2), tmp_path / "oa")
    # a short lease: a killed worker's claims come back within seconds (and are asked about first)
    settings = sc.run_settings(tmp_path / "data", simulator.url, lease_seconds=4.0, batch_size=24, workers=8,
                               poll_batch_size=25, database_url=database_url)
    adapter = sc.bootstrap(settings)
    yield seed, count, poison, simulator, adapter, settings, request.param
    adapter.close()
    simulator.stop()


def test_worker_and_poller_killed_at_random_moments(crash_run, tmp_path, capsys):
    seed, count, poison, simulator, adapter, settings, backend = crash_run
    started = time.monotonic()
    imported = sc.import_vouchers(adapter, [tmp_path / "vouchers"])
    assert imported.queued == count + len(poison)
    assert sc.break_attachments(adapter, poison) == 2

    rng = random.Random(seed)
    worker = Child("worker", [sys.executable, "-m", "archive_oa.cli.main", "worker"],
                   sc.child_env(settings, ARCHIVE_OA_SYNC_DELIVERY_SCHEDULE="every 1s",
                                ARCHIVE_OA_SYNC_POLL_SCHEDULE=NEVER), tmp_path, "SIGTERM or Ctrl-C stops")
    poller = Child("poller", [sys.executable, "-c", POLLER_LOOP], sc.child_env(settings), tmp_path, "polling")
    children = (worker, poller)
    next_kill: dict[str, float | None] = {}
    for child in children:
        child.start()
        next_kill[child.name] = None  # armed once the child is working
    settled = False
    deadline = time.monotonic() + TIME_LIMIT
    try:
        while time.monotonic() < deadline:
            for child in children:
                child.ensure_running()
                if len(child.kills) >= KILLS:
                    continue
                if next_kill[child.name] is None:
                    if child.ready():  # a random moment within the next 0.3–2.5 s of its work
                        next_kill[child.name] = time.monotonic() + rng.uniform(0.3, 2.5)
                elif time.monotonic() >= next_kill[child.name]:
                    child.kill(outbox_snapshot(adapter.store))  # what the outbox looked like at the kill
                    child.start()
                    next_kill[child.name] = None
            if all(len(c.kills) >= KILLS for c in children) and sc.is_settled(adapter, simulator, len(poison)):
                settled = True
                break
            time.sleep(0.05)
        codes = {child.name: child.terminate() for child in children}
    finally:
        for child in children:
            if child.proc and child.proc.poll() is None:
                child.proc.kill()
                child.proc.wait(30)

    end = sc.count_end_state(adapter, simulator.db)
    worker_kills_mid_delivery = sum(1 for k in worker.kills if k["open"] > 0)
    injected = {"worker SIGKILL": len(worker.kills), "poller SIGKILL": len(poller.kills),
                **{k: n for k, n in simulator.injector.counts().items() if n}}
    sc.report(capsys, sc.figures(
        f"crash: worker+poller SIGKILL on {backend}", seed, end, len(poison), injected, time.monotonic() - started,
        notes=f"worker kills with deliveries open {worker_kills_mid_delivery}/{len(worker.kills)}, "
              f"claims held at the kills {sum(k['in_flight'] for k in worker.kills)}, "
              f"poll cursor at the poller's kills {[k['cursor'] for k in poller.kills]}",
    ))
    assert settled, f"not settled within {TIME_LIMIT}s: {end.problems(set(poison))}\n{worker.tail()}"
    assert end.problems(set(poison)) == []
    assert codes == {"worker": 0, "poller": 0}, (codes, worker.tail(), poller.tail())
    assert len(worker.kills) >= 10 and len(poller.kills) >= 10
    assert worker_kills_mid_delivery >= 10, worker.kills  # the kills fell during the delivery, not after it
    assert sum(k["in_flight"] for k in worker.kills) > 0, "no kill caught the worker holding claims"


def test_sigterm_drains_or_releases_what_the_worker_holds(tmp_path, capsys):
    """After SIGTERM no delivery stays IN_FLIGHT under the stopped worker's lease."""
    seed = 5201
    started = time.monotonic()
    folder = tmp_path / "vouchers"
    count = sc.generate_vouchers(folder, 300)
    # every call takes 150 ms, so a batch of claims is mostly still unsent when SIGTERM comes
    simulator = sc.start_simulator(sc.simulator_config(seed, latency_ms=150), tmp_path / "oa")
    # a long lease: a claim left behind would still be held when we look
    settings = sc.run_settings(tmp_path / "data", simulator.url, lease_seconds=300.0, batch_size=40, workers=4)
    adapter = sc.bootstrap(settings)
    worker = Child("worker", [sys.executable, "-m", "archive_oa.cli.main", "worker"],
                   sc.child_env(settings, ARCHIVE_OA_SYNC_DELIVERY_SCHEDULE="every 1s",
                                ARCHIVE_OA_SYNC_POLL_SCHEDULE=NEVER), tmp_path, "SIGTERM or Ctrl-C stops")
    try:
        sc.import_vouchers(adapter, [folder])
        worker.start()
        owner, snapshot = None, {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and owner is None:
            worker.ensure_running()
            snapshot = outbox_snapshot(adapter.store)
            if snapshot["delivered"] >= 20 and snapshot["in_flight"] > 0:
                with adapter.store.transaction() as conn:
                    owner = conn.execute(sa.select(deliveries.c.lease_owner)
                                         .where(deliveries.c.state == DeliveryState.IN_FLIGHT.value)).scalar()
            else:
                time.sleep(0.05)
        assert owner, f"the worker never held claims: {snapshot}\n{worker.tail()}"
        code = worker.terminate()
        assert code == 0, worker.tail()
        with adapter.store.transaction() as conn:
            held = conn.execute(sa.select(sa.func.count()).where(
                deliveries.c.state == DeliveryState.IN_FLIGHT.value, deliveries.c.lease_owner == owner)).scalar()
            per_state = outbox.counts(conn)
        assert held == 0, f"{held} deliveries still IN_FLIGHT under {owner} after SIGTERM"
        assert per_state[DeliveryState.IN_FLIGHT] == 0
        assert per_state[DeliveryState.PENDING] > 0, "SIGTERM should stop the run early, with work left"
        assert "leases handed back" in worker.tail()

        # what it released is delivered by the next worker, still exactly once
        drive, settled = sc.drive_until_settled(adapter, simulator, 0, time_limit=120)
        end = sc.count_end_state(adapter, simulator.db)
        sc.report(capsys, sc.figures(
            "SIGTERM drain", seed, end, 0, {"SIGTERM": 1}, time.monotonic() - started, adopted=drive.delivery.adopted,
            notes=f"at SIGTERM: {snapshot['delivered']} delivered, {snapshot['in_flight']} in flight; "
                  f"after: {per_state[DeliveryState.PENDING]} pending, {per_state[DeliveryState.UNCERTAIN]} uncertain",
        ))
        assert settled and end.problems(set()) == [] and end.vouchers == count
    finally:
        if worker.proc and worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(30)
        adapter.close()
        simulator.stop()
