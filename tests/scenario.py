"""Shared driver of the fault and crash runs: vouchers in, OA requests and decisions out, counted.

A run: generate N vouchers with the deterministic sample generator (fixed seeds), add a
few truly undeliverable ("poison") vouchers, import them (real-time mode queues each
one), start the OA simulator with the run's faults, deliver and poll until everything
has settled, then count the end state in the simulator's own database and in the
archive.  ``EndState.problems()`` lists every way the run broke the promise — nothing
lost, nothing doubled, every decision in the archive once, nothing stuck outside dead
letters, and dead letters only for the poison.

Used by tests/test_fault_runs.py, tests/test_crash_runs.py, tests/test_dead_letters.py
and tests/test_reconcile.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from archive_oa.bootstrap import Adapter, bootstrap
from archive_oa.domain.delivery import DeliveryState
from archive_oa.domain.model import AttachmentKind, AttachmentMeta, WorkflowState
from archive_oa.errors import OaError
from archive_oa.oa.simulator import SimulatorConfig, SimulatorHandle, start_simulator
from archive_oa.samples import catalog
from archive_oa.samples.generate import build_batch, generate
from archive_oa.services.importer import ImportReport, import_paths
from archive_oa.settings import Settings, load_settings
from archive_oa.store import outbox
from archive_oa.store.sync_tables import deliveries, workflow_results
from archive_oa.store.tables import approvals, vouchers
from archive_oa.sync.poller import Poller
from archive_oa.sync.worker import DeliveryCounts, DeliveryWorker

APPROVAL_LIMIT = "50000"  # the simulated approvers reject vouchers above it
OPEN_STATES = (DeliveryState.PENDING, DeliveryState.UNCERTAIN, DeliveryState.IN_FLIGHT)
#: The batch files of ``archive_oa.samples.generate`` (3 organisations × 2 periods).
BATCHES = len(catalog.ORGS) * len(catalog.PERIODS)

# --- vouchers ---------------------------------------------------------------------------


def generate_vouchers(folder: Path, count: int) -> int:
    """At least ``count`` sample vouchers as batch files in ``folder``; returns how many."""
    per_batch = math.ceil(count / BATCHES)
    generate(folder, per_batch)
    return per_batch * BATCHES


#: Kinds of poison: each is undeliverable for a reason no retry can fix.
#: too large for the OA: a 16 MB attachment travels as 21 MB of base64, above the 20 MiB
#: the OA reads (the adapter's client already refuses to parse a text node that large)
POISON_TOO_LARGE = "too-large"
TOO_LARGE_BYTES = 16_000_000
POISON_DAMAGED_ATTACHMENT = "damaged-attachment"  # the archived bytes no longer match their sha256
POISON_MISSING_ATTACHMENT = "missing-attachment"  # the archived file is gone from the blob folder
POISON_PERIOD = "2026-12"  # poison vouchers live in their own period, apart from the load

# No poison of the kind "the stylesheet's output breaks oa-workflow.xsd": every voucher
# field that reaches the OA form is bounded by voucher.xsd (and the database) within what
# the form takes, so valid archive content always makes a valid workflow request.


def write_poison(folder: Path, seed: int = 7) -> dict[str, str]:
    """Write ``poison.xml`` (one voucher of each poison kind) into ``folder``; voucher id → kind.

    The vouchers themselves are valid archive content — they import — which is what
    makes them poison rather than input errors: they fail only on the way to the OA.
    Call ``break_attachments`` after importing to damage / remove the stored files.
    """
    from archive_oa.voucher_xml import vouchers_to_xml

    rng = random.Random(seed)
    base, _, _ = build_batch(catalog.ORGS[0], POISON_PERIOD, 3)
    (folder / "attachments").mkdir(parents=True, exist_ok=True)
    kinds = (POISON_TOO_LARGE, POISON_DAMAGED_ATTACHMENT, POISON_MISSING_ATTACHMENT)
    made, by_id = [], {}
    for voucher, kind in zip(base, kinds):
        if kind == POISON_TOO_LARGE:
            content, name = rng.randbytes(TOO_LARGE_BYTES), f"{voucher.voucher_id}-scan.png"
        else:
            content, name = rng.randbytes(4000), f"{voucher.voucher_id}-receipt.png"
        meta = AttachmentMeta(f"{voucher.voucher_id}-P1", name, "image/png", len(content),
                              hashlib.sha256(content).hexdigest(), AttachmentKind.OTHER)
        (folder / "attachments" / name).write_bytes(content)
        made.append(dataclasses.replace(voucher, attachments=(meta,),
                                        attachment_count=max(voucher.attachment_count, 1)))
        by_id[voucher.voucher_id] = kind
    (folder / "poison.xml").write_bytes(vouchers_to_xml(made, None, pretty=True))
    return by_id


def break_attachments(adapter: Adapter, poison: dict[str, str]) -> int:
    """Damage (a disk fault) or remove (a careless clean-up) the poison vouchers' stored
    attachment files; returns the files hit."""
    hit = 0
    for voucher_id, kind in poison.items():
        if kind not in (POISON_DAMAGED_ATTACHMENT, POISON_MISSING_ATTACHMENT):
            continue
        with adapter.store.transaction() as conn:
            shas = [meta.sha256 for meta in _load(conn, voucher_id).attachments]
        for sha in shas:
            for path in adapter.settings.blob_dir.rglob(f"*{sha}*"):
                if not path.is_file():
                    continue
                if kind == POISON_DAMAGED_ATTACHMENT:
                    path.write_bytes(b"\0" * path.stat().st_size)
                else:
                    path.unlink()
                hit += 1
    return hit


def _load(conn, voucher_id):
    from archive_oa.store import vouchers as repo

    voucher = repo.load_voucher(conn, voucher_id)
    if voucher is None:
        raise LookupError(f"voucher {voucher_id} is not in the archive")
    return voucher


# --- settings and parts -------------------------------------------------------------------


def run_settings(data_dir: Path, oa_url: str, *, database_url: str = "", **sync) -> Settings:
    """Short timeouts and retry delays, several delivery threads: a fault run converges in
    seconds per thousand vouchers on a 2-core machine."""
    values = {
        "workers": 12,
        "batch_size": 48,
        "poll_batch_size": 200,
        "lease_seconds": 20.0,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.8,
        "max_attempts": 60,
    }
    values.update(sync)
    base = load_settings(data_dir=data_dir, env={})
    return base.replace(
        database={"url": database_url},
        oa={"url": oa_url, "timeout": 1.0, "connect_timeout": 2.0, "pool_size": 16},
        sync=values,
    )


def simulator_config(seed: int, **faults) -> SimulatorConfig:
    # decide_after above the client's timeout: a commit-then-timeout is settled by asking
    # the OA (FindWorkflowRequests) more often than by its decision arriving first
    defaults = dict(seed=seed, decide_after=1.5, reject_above=APPROVAL_LIMIT, ambiguous_hold=1.4)
    defaults.update(faults)
    return SimulatorConfig(**defaults)


def import_vouchers(adapter: Adapter, folders) -> ImportReport:
    report = import_paths(adapter.store, adapter.transforms, [str(f) for f in folders])
    if not report.ok:
        raise AssertionError(f"the scenario's vouchers did not import: {report.issues[:3]}")
    return report


class LatencySpikes:
    """Every 3–6 s the OA stalls: latency jumps to 0.4–1.6 s (past the client's 1 s
    timeout at the top) for 0.2–0.5 s, then drops back.  A call that times out in a spike still
    runs on the OA afterwards — the commit-after-timeout case, timing-made."""

    def __init__(self, simulator: SimulatorHandle, seed: int) -> None:
        self.simulator = simulator
        self.rng = random.Random(seed)
        self.base = simulator.config.latency_ms
        self.spikes = 0
        self.spike_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-spikes", daemon=True)

    def start(self) -> "LatencySpikes":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.simulator.set_faults(latency_ms=self.base)

    def _run(self) -> None:
        while not self._stop.wait(self.rng.uniform(3.0, 6.0)):
            length = self.rng.uniform(0.2, 0.5)
            self.simulator.set_faults(latency_ms=self.rng.randint(400, 1600))
            self.spikes += 1
            self.spike_seconds += length
            self._stop.wait(length)
            self.simulator.set_faults(latency_ms=self.base)


# --- driving a run in one process -------------------------------------------------------


@dataclass
class DriveCounts:
    delivery: DeliveryCounts = field(default_factory=DeliveryCounts)
    poll_rounds: int = 0
    poll_errors: int = 0  # rounds that met an injected fault (retried next round)
    outcomes_applied: int = 0
    repeats: int = 0  # outcomes seen again: nothing changed


def drive_until_settled(adapter: Adapter, simulator: SimulatorHandle, expected_dead: int, *,
                        time_limit: float) -> tuple[DriveCounts, bool]:
    """Deliver (worker threads) and poll (this thread) until the run settles or time runs out."""
    counts = DriveCounts()
    worker = DeliveryWorker(adapter.store, adapter.oa, adapter.transforms, adapter.settings.sync, owner="fault-run")
    poller = Poller(adapter.store, adapter.oa, adapter.settings.sync, max_batches=50)
    deadline = time.monotonic() + time_limit
    done = threading.Event()

    def deliver() -> None:
        while not done.is_set() and time.monotonic() < deadline:
            counts.delivery += worker.run_until_idle(min(deadline, time.monotonic() + 2.0))
            done.wait(0.1)

    thread = threading.Thread(target=deliver, name="fault-run-delivery", daemon=True)
    thread.start()
    settled = False
    try:
        while time.monotonic() < deadline:
            try:
                round_ = poller.run_once()
                counts.outcomes_applied += round_.applied
                counts.repeats += round_.duplicates
            except OaError:
                counts.poll_errors += 1
            counts.poll_rounds += 1
            if is_settled(adapter, simulator, expected_dead):
                settled = True
                break
            time.sleep(0.3)
    finally:
        done.set()
        worker.stop()
        thread.join(60)
        worker.close()
    return counts, settled


def is_settled(adapter: Adapter, simulator: SimulatorHandle, expected_dead: int) -> bool:
    """Nothing open in the outbox, every OA request decided, every decision in the archive."""
    with adapter.store.transaction() as conn:
        per_state = outbox.counts(conn)
        states = Counter(dict(conn.execute(
            sa.select(vouchers.c.state, sa.func.count()).where(vouchers.c.is_latest).group_by(vouchers.c.state)
        ).all()))
    if any(per_state[s] for s in OPEN_STATES) or per_state[DeliveryState.DEAD] < expected_dead:
        return False
    if simulator.db.status_counts().get("IN_PROGRESS", 0):
        return False
    return states[WorkflowState.SUBMITTED.value] == 0


# --- the end state ----------------------------------------------------------------------


@dataclass
class EndState:
    vouchers: int  # in the archive (latest versions)
    deliveries: int
    oa_requests: int  # rows in the simulator's own database
    duplicates: int  # OA requests beyond the first for one externalKey
    lost: list[str]  # vouchers whose delivery is not dead but the OA holds no request
    strangers: list[str]  # externalKeys in the OA that no delivery of ours carries
    dead: list[str]  # vouchers whose delivery is a dead letter
    dead_with_request: list[str]  # dead letters the OA holds a request for (should have been adopted)
    stuck: list[str]  # vouchers waiting (QUEUED/SUBMITTED) without a dead letter, or open deliveries
    decided_in_oa: dict[str, int]
    outcome_mismatches: list[str]  # OA decisions the archive does not hold (state, time, request, trail)
    applied_twice: list[str]  # vouchers a decision was applied to more than once
    attempts: int  # delivery attempts made in all (from the outbox)
    retries: int  # attempts beyond the first per delivery
    adopted_by_outcome: int  # deliveries an OA decision settled before the worker asked the OA
    adopted_by_worker_after_outcome: int  # … of which the worker found the decision when it failed

    def problems(self, poison: set[str]) -> list[str]:
        found = []
        if self.duplicates:
            found.append(f"{self.duplicates} duplicate OA requests")
        if self.lost:
            found.append(f"{len(self.lost)} lost: {self.lost[:5]}")
        if self.strangers:
            found.append(f"{len(self.strangers)} OA requests with keys not ours: {self.strangers[:5]}")
        if set(self.dead) != poison:
            found.append(f"dead letters {sorted(self.dead)} are not exactly the poison {sorted(poison)}")
        if self.dead_with_request:
            found.append(f"dead letters the OA holds a request for: {self.dead_with_request[:5]}")
        if self.stuck:
            found.append(f"{len(self.stuck)} stuck outside dead letters: {self.stuck[:5]}")
        if self.outcome_mismatches:
            found.append(f"{len(self.outcome_mismatches)} OA decisions not in the archive as decided: "
                         f"{self.outcome_mismatches[:5]}")
        if self.applied_twice:
            found.append(f"decisions applied twice: {self.applied_twice[:5]}")
        if self.oa_requests != self.deliveries - len(self.dead):
            found.append(f"{self.oa_requests} OA requests for {self.deliveries - len(self.dead)} deliverable vouchers")
        return found


def count_end_state(adapter: Adapter, simulator_db) -> EndState:
    """Count in the simulator's database and in the archive (never in the worker's memory)."""
    per_key = simulator_db.requests_per_external_key()
    completed = simulator_db.fetch_completed(0, 10_000_000, include_acknowledged=True)
    with adapter.store.transaction() as conn:
        rows = conn.execute(sa.select(deliveries)).all()
        latest = {r.voucher_id: r for r in conn.execute(
            sa.select(vouchers.c.id, vouchers.c.voucher_id, vouchers.c.state, vouchers.c.oa_request_id,
                      vouchers.c.decided_at).where(vouchers.c.is_latest)
        ).all()}
        trail = dict(conn.execute(
            sa.select(approvals.c.voucher_row, sa.func.count()).group_by(approvals.c.voucher_row)
        ).all())
        applied = Counter(dict(conn.execute(
            sa.select(workflow_results.c.voucher_id, sa.func.count())
            .where(workflow_results.c.applied).group_by(workflow_results.c.voucher_id)
        ).all()))
    ours = {r.idempotency_key: r for r in rows}
    dead = sorted(r.voucher_id for r in rows if r.state == DeliveryState.DEAD.value)
    dead_set = set(dead)
    stuck = sorted({r.voucher_id for r in rows if DeliveryState(r.state) in OPEN_STATES} | {
        vid for vid, v in latest.items()
        if v.state in (WorkflowState.QUEUED.value, WorkflowState.SUBMITTED.value) and vid not in dead_set
    })
    mismatches = []
    for entry in completed:
        delivery = ours.get(entry.external_key)
        voucher = latest.get(delivery.voucher_id) if delivery else None
        if voucher is None:
            mismatches.append(f"request {entry.request_id}: no voucher for key {entry.external_key}")
            continue
        same = (
            voucher.state == entry.status
            and voucher.oa_request_id == str(entry.request_id)
            and voucher.decided_at == entry.finished_at
            and trail.get(voucher.id, 0) == len(entry.logs)
        )
        if not same:
            mismatches.append(f"{voucher.voucher_id}: archive {voucher.state} {voucher.oa_request_id} "
                              f"{voucher.decided_at} trail {trail.get(voucher.id, 0)}; OA {entry.status} "
                              f"{entry.request_id} {entry.finished_at} trail {len(entry.logs)}")
    attempts = sum(r.attempts for r in rows)
    return EndState(
        vouchers=len(latest),
        deliveries=len(rows),
        oa_requests=simulator_db.count_requests(),
        duplicates=sum(n - 1 for n in per_key.values() if n > 1),
        lost=sorted(r.voucher_id for r in rows if r.voucher_id not in dead_set and not per_key.get(r.idempotency_key)),
        strangers=sorted(k for k in per_key if k not in ours),
        dead=dead,
        dead_with_request=sorted(r.voucher_id for r in rows if r.voucher_id in dead_set and per_key.get(r.idempotency_key)),
        stuck=stuck,
        decided_in_oa=simulator_db.decided(),
        outcome_mismatches=mismatches,
        applied_twice=sorted(vid for vid, n in applied.items() if n > 1),
        attempts=attempts,
        retries=attempts - len(rows),
        # the notes outbox.adopt and DeliveryWorker._failed leave on the delivery
        adopted_by_outcome=sum(1 for r in rows if (r.last_error or "").startswith("adopted")),
        adopted_by_worker_after_outcome=sum(1 for r in rows if (r.last_error or "").startswith("adopted request")),
    )


# --- figures for the report ---------------------------------------------------------------


@dataclass
class Figures:
    scenario: str
    seed: int
    vouchers: int
    poison: int
    injected: dict[str, int]  # fault kind → count (error, drop, ambiguous, spikes, kills …)
    attempts: int
    retries: int
    adopted: int | None  # by asking the OA (FindWorkflowRequests); None when not counted
    adopted_by_outcome: int
    oa_requests: int
    approved: int
    rejected: int
    dead: int
    duplicates: int
    lost: int
    stuck: int
    seconds: float
    notes: str = ""

    def line(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in self.injected.items())
        asked = "" if self.adopted is None else f"{self.adopted} after asking the OA, "
        return (f"[{self.scenario}] seed {self.seed}: {self.vouchers} vouchers (+{self.poison} poison); "
                f"injected: {faults or 'none'}; attempts {self.attempts}, retries {self.retries}, "
                f"adopted: {asked}{self.adopted_by_outcome} from an OA decision; "
                f"OA requests {self.oa_requests}, approved {self.approved}, "
                f"rejected {self.rejected}, dead {self.dead}; duplicates {self.duplicates}, lost {self.lost}, "
                f"stuck {self.stuck}; {self.seconds:.1f}s" + (f"; {self.notes}" if self.notes else ""))


def figures(scenario: str, seed: int, end: EndState, poison: int, injected: dict, seconds: float,
            adopted: int | None = None, notes: str = "") -> Figures:
    return Figures(
        scenario=scenario, seed=seed, vouchers=end.vouchers - poison, poison=poison, injected=injected,
        attempts=end.attempts, retries=end.retries, oa_requests=end.oa_requests,
        adopted=None if adopted is None else adopted - end.adopted_by_worker_after_outcome,
        adopted_by_outcome=end.adopted_by_outcome,
        approved=end.decided_in_oa.get("APPROVED", 0), rejected=end.decided_in_oa.get("REJECTED", 0),
        dead=len(end.dead), duplicates=end.duplicates, lost=len(end.lost), stuck=len(end.stuck),
        seconds=seconds, notes=notes,
    )


def report(capsys, result: Figures) -> None:
    """Print the figures past pytest's capture and append them to $ARCHIVE_OA_SCENARIO_LOG (JSON lines)."""
    with capsys.disabled():
        print("\n" + result.line(), flush=True)
    target = os.environ.get("ARCHIVE_OA_SCENARIO_LOG")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(json.dumps(dataclasses.asdict(result), ensure_ascii=False) + "\n")



# --- separate processes -------------------------------------------------------------------


def database_for(backend: str, request) -> str:
    """A fresh database URL on ``backend`` ("" = the SQLite file in the data folder),
    dropped after the test (``request`` is the test's pytest request)."""
    if backend == "sqlite":
        return ""
    cluster = request.getfixturevalue("postgres")
    url = cluster.create_database()
    request.addfinalizer(lambda: cluster.drop_database(url))
    return url


def child_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment that makes ``archive-oa`` in a child process use these settings.

    Every ``ARCHIVE_OA_*`` of the test's own environment is dropped first, so only what
    the run chose reaches the child (``ARCHIVE_OA_<SECTION>_<KEY>``, see settings.py).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVE_OA_")}
    env["ARCHIVE_OA_HOME"] = str(settings.data_dir)
    if settings.database.url:
        env["ARCHIVE_OA_DATABASE_URL"] = settings.database.url
    for section in ("oa", "sync"):
        for f in dataclasses.fields(getattr(settings, section)):
            value = getattr(getattr(settings, section), f.name)
            env[f"ARCHIVE_OA_{section.upper()}_{f.name.upper()}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
