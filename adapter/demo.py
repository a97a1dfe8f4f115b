"""``archive-oa demo``: the whole adapter, end to end, under injected faults.

It starts the OA simulator and the gateway on loopback ports, imports the bundled
sample vouchers (real-time mode queues them at once), delivers them to the simulator
while it fails, drops connections and commits-then-times-out, lets the simulated
approvers decide, and brings the outcomes back by polling and by the simulator
calling the gateway.  Then it counts, in the simulator's own database and in the
archive, what arrived: duplicates and lost must both be 0.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Callable

from .bootstrap import Adapter, bootstrap
from .domain.model import WorkflowState
from .environment import data_folder, listen_settings
from .errors import OaError
from .oa.simulator import SimulatorConfig, start_simulator
from .samples import samples_dir
from .services.importer import import_paths
from .settings import Settings, load_settings

DEMO_ROLES = ("viewer", "archivist", "operator", "admin")
CALLBACK_USER = "demo-archivist"


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path | None = None
    port: int = 0  # gateway; 0 picks a free port
    oa_port: int = 0  # simulator; 0 picks a free port
    seed: int = 20261128
    error_rate: float = 0.10
    drop_rate: float = 0.05
    ambiguous_rate: float = 0.05
    latency_ms: int = 5
    decide_after: float = 1.0
    reject_above: Decimal = Decimal("50000")
    reject_accounts: tuple[str, ...] = ()
    oa_timeout: float = 1.5  # the client's read timeout; the simulator holds longer when ambiguous
    time_limit: float = 300.0


@dataclass(frozen=True)
class DemoSummary:
    vouchers: int
    delivered: int
    approved: int
    rejected: int
    withdrawn: int
    pending: int
    dead: int
    duplicates: int
    lost: int
    mismatched: int
    oa_requests: int
    retries: int
    adopted: int
    via_poll: int
    via_callback: int
    repeats_ignored: int
    seconds: float

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.lost or self.pending or self.mismatched or self.dead)

    @property
    def vouchers_per_second(self) -> float:
        return self.vouchers / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["seconds"] = round(self.seconds, 2)
        data["vouchers_per_second"] = round(self.vouchers_per_second, 1)
        data["ok"] = self.ok
        return data


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def demo_settings(data_dir: Path, options: DemoOptions, gateway_port: int, oa_port: int) -> Settings:
    """Embedded defaults, tuned so a fault-heavy run converges in seconds, not minutes."""
    base = load_settings(data_dir=data_dir, env={})
    return base.replace(
        gateway={"host": "127.0.0.1", "port": gateway_port, "public_url": f"http://127.0.0.1:{gateway_port}"},
        oa={
            "url": f"http://127.0.0.1:{oa_port}/soap/workflow",
            "connect_timeout": 1.0,
            "timeout": options.oa_timeout,
        },
        sync={
            "retry_base_seconds": 0.1,
            "retry_max_seconds": 1.0,
            "max_attempts": 40,
            "lease_seconds": 30.0,
            "workers": 8,
            "batch_size": 64,
        },
    )


class Demo:
    """One demo run; ``start`` brings everything up, ``run`` drives the vouchers through."""

    def __init__(self, options: DemoOptions, progress: Callable[[str], None]) -> None:
        self.options = options
        self.say = progress
        self.data_dir = Path(options.data_dir or tempfile.mkdtemp(prefix="archive-oa-demo-"))
        self.gateway_port = options.port or free_port()
        self.oa_port = options.oa_port or free_port()
        self.settings = demo_settings(self.data_dir, options, self.gateway_port, self.oa_port)
        self.adapter: Adapter | None = None
        self.simulator = None
        self.gateway = None
        self._callback = None

    # --- start and stop --------------------------------------------------------------

    def start(self) -> None:
        """Bring up store, gateway and simulator; a folder or port the machine refuses is an
        ``EnvironmentRefused`` naming the ``archive-oa demo`` option to change."""
        from .gateway.app import make_gateway_app
        from .gateway.server import start_gateway

        data_folder(self.data_dir, setting="--data-dir")
        self.adapter = bootstrap(self.settings)
        for role in DEMO_ROLES:
            name = f"demo-{role}"
            self.adapter.users.add_user(name, name, {role}, None, password_policy=False)  # password = name
        with listen_settings(port="--port"):
            self.gateway = start_gateway(make_gateway_app(self.adapter), "127.0.0.1", self.gateway_port)
        with listen_settings(port="--oa-port"):
            self.simulator = start_simulator(
                self._simulator_config(), self.data_dir / "oa-sim", port=self.oa_port, on_decided=self._on_decided
            )
        from .oa.simulator.callback import GatewayCallback

        self._callback = GatewayCallback(f"{self.gateway.url}", CALLBACK_USER, CALLBACK_USER)

    def _simulator_config(self) -> SimulatorConfig:
        o = self.options
        return SimulatorConfig(
            seed=o.seed,
            error_rate=o.error_rate,
            drop_rate=o.drop_rate,
            ambiguous_rate=o.ambiguous_rate,
            ambiguous_hold=o.oa_timeout + 2.0,
            latency_ms=o.latency_ms,
            decide_after=o.decide_after,
            reject_above=o.reject_above,
            reject_accounts=o.reject_accounts,
            amount_field=self.settings.workflow.field_amount,
            account_field=self.settings.workflow.field_account_code,
        )

    def _on_decided(self, entry) -> None:
        # Half of the decisions are also pushed to the gateway (as an OA calling back
        # would); polling sees all of them, so the callback half arrives twice and
        # proves that a repeat changes nothing.
        if self._callback is not None and entry.request_id % 2 == 0:
            self._callback(entry)

    def stop(self) -> None:
        if self._callback is not None and hasattr(self._callback, "close"):
            self._callback.close()
        if self.simulator is not None:
            self.simulator.stop()
        if self.gateway is not None:
            self.gateway.stop()
        if self.adapter is not None:
            self.adapter.close()
        if self.options.data_dir is None:  # a temporary folder of our own
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # --- the run -----------------------------------------------------------------------

    def run(self) -> DemoSummary:
        adapter = self.adapter
        started = time.monotonic()
        deadline = started + self.options.time_limit

        self.say(f"importing the sample vouchers from {samples_dir()} …")
        report = import_paths(adapter.store, adapter.transforms, [str(samples_dir())])
        if not report.ok:
            raise RuntimeError(f"the bundled samples did not import: {report.issues[:3]}")
        self.say(
            f"imported {report.created} vouchers from {report.files} files; "
            f"all queued for approval (real-time mode)"
        )

        # the adapter's own worker and poller (the scheduler of --keep-running uses them too);
        # retries, adoptions and repeats are read from the adapter's metrics
        last_line = 0.0
        while time.monotonic() < deadline:
            counts = adapter.worker.run_once()
            try:
                adapter.poller.run_once()
            except OaError as exc:  # the simulator dropped or failed the poll: next round
                self.say(f"poll failed ({type(exc).__name__}); trying again next round")
            states = self.archive_states()
            open_work = states.get(WorkflowState.QUEUED, 0) + states.get(WorkflowState.SUBMITTED, 0)
            if time.monotonic() - last_line >= 1.0 or not open_work:
                last_line = time.monotonic()
                self.say(self._progress_line(states, self._attempts("retrying"), time.monotonic() - started))
            if not open_work:
                break
            if not counts.claimed:
                time.sleep(0.2)
        repeats = int(adapter.metrics.value("archive_oa_poll_items_total", result="duplicates"))
        # the approvers are done; wait for pending callbacks to land
        if self._callback is not None:
            self._callback.drain(30.0)
            # a callback that arrived after polling had applied the decision was a repeat too
            repeats += self._callback.sent - self._first_by_callback()
        return self.summary(report.created, self._attempts("retrying"), self._attempts("adopted"), repeats,
                            time.monotonic() - started)

    def _attempts(self, result: str) -> int:
        return int(self.adapter.metrics.value("archive_oa_delivery_attempts_total", result=result))

    def _progress_line(self, states, retries: int, seconds: float) -> str:
        faults = self.simulator.injector.counts() if hasattr(self.simulator.injector, "counts") else {}
        fault_text = ", ".join(f"{k} {v}" for k, v in sorted(faults.items()) if v)
        return (
            f"[{seconds:5.1f}s] queued {states.get(WorkflowState.QUEUED, 0):3d} · "
            f"awaiting approval {states.get(WorkflowState.SUBMITTED, 0):3d} · "
            f"approved {states.get(WorkflowState.APPROVED, 0):3d} · "
            f"rejected {states.get(WorkflowState.REJECTED, 0):3d} · retries {retries}"
            + (f" · injected: {fault_text}" if fault_text else "")
        )

    def _first_by_callback(self) -> int:
        with self.adapter.store.transaction() as conn:
            return _outcome_sources(conn).get("callback", 0)

    def archive_states(self) -> dict[WorkflowState, int]:
        from .store.vouchers import count_by_state

        with self.adapter.store.transaction() as conn:
            return count_by_state(conn)

    # --- the verdict, counted in the simulator's database and the archive ---------------

    def summary(self, vouchers: int, retries: int, adopted: int, repeats: int, seconds: float) -> DemoSummary:
        from .store import outbox
        from .store.vouchers import workflow_of_latest
        from .domain.delivery import DeliveryState

        sim_db = self.simulator.db
        per_key = sim_db.requests_per_external_key()
        with self.adapter.store.transaction() as conn:
            deliveries = outbox.counts(conn)
            keys = {d.idempotency_key: d for d in outbox.list_deliveries(conn, limit=None)}
            archive = workflow_of_latest(conn)  # voucher_id -> (state, oa_request_id)
            via = _outcome_sources(conn)
        duplicates = sum(n - 1 for n in per_key.values() if n > 1)
        lost = sum(1 for key in keys if per_key.get(key, 0) == 0)
        mismatched = 0
        for entry in sim_db.fetch_completed(0, 1_000_000, include_acknowledged=True):
            state = archive.get(_voucher_of(keys, entry.external_key))
            if state is None or state[0].value != entry.status:
                mismatched += 1
        states: dict[WorkflowState, int] = {}
        for state, _ in archive.values():
            states[state] = states.get(state, 0) + 1
        return DemoSummary(
            vouchers=vouchers,
            delivered=deliveries.get(DeliveryState.DELIVERED, 0),
            approved=states.get(WorkflowState.APPROVED, 0),
            rejected=states.get(WorkflowState.REJECTED, 0),
            withdrawn=states.get(WorkflowState.WITHDRAWN, 0),
            pending=states.get(WorkflowState.QUEUED, 0) + states.get(WorkflowState.SUBMITTED, 0),
            dead=deliveries.get(DeliveryState.DEAD, 0),
            duplicates=duplicates,
            lost=lost,
            mismatched=mismatched,
            oa_requests=sim_db.count_requests(),
            retries=retries,
            adopted=adopted,
            via_poll=via.get("poll", 0),
            via_callback=via.get("callback", 0),
            repeats_ignored=repeats,
            seconds=seconds,
        )


def _voucher_of(deliveries: dict, external_key: str | None) -> str | None:
    delivery = deliveries.get(external_key)
    return delivery.voucher_id if delivery else None


def _outcome_sources(conn) -> dict[str, int]:
    """How each decision first arrived: {"poll": n, "callback": m}."""
    import sqlalchemy as sa

    from .store.sync_tables import workflow_results

    query = sa.select(workflow_results.c.via, sa.func.count()).group_by(workflow_results.c.via)
    return {via: count for via, count in conn.execute(query)}
