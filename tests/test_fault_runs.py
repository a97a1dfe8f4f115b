"""Fault runs: 2,000 vouchers against the OA simulator while it fails, per fault kind and all together.

Each run uses a fixed seed, imports the vouchers (real-time mode queues them), adds
three poison vouchers, delivers and polls until everything settles, and counts the end
state in the simulator's own database and in the archive: exactly one OA request per
voucher, every decision in the archive once, nothing stuck, and dead letters holding
the poison and nothing else.  The fault kinds alternate between the embedded SQLite
file and a real PostgreSQL (conftest's session server); all of them together run on both.  The figures of each run are printed (and appended to
``$ARCHIVE_OA_SCENARIO_LOG`` when set).
"""

from __future__ import annotations

import time

import pytest

import scenario as sc

pytestmark = pytest.mark.slow  # 2,000 vouchers per fault kind: minutes

VOUCHERS = 2000
TIME_LIMIT = 300.0  # generous: a run takes about a minute; the limit only stops a hang

#: name → (seed, simulator switches, latency spikes on)
SCENARIOS = {
    "errors-20pct": (4101, dict(error_rate=0.20), False),
    "commit-then-timeout-10pct": (4102, dict(ambiguous_rate=0.10), False),
    "dropped-connections-5pct": (4103, dict(drop_rate=0.05), False),
    "latency-spikes": (4104, dict(latency_ms=2), True),
    "all-together": (4105, dict(error_rate=0.20, ambiguous_rate=0.10, drop_rate=0.05, latency_ms=2), True),
}
#: (scenario, database backend) pairs that run
RUNS = [
    ("errors-20pct", "sqlite"),
    ("commit-then-timeout-10pct", "postgresql"),
    ("dropped-connections-5pct", "sqlite"),
    ("latency-spikes", "postgresql"),
    ("all-together", "sqlite"),
    ("all-together", "postgresql"),
]


@pytest.fixture(scope="module")
def voucher_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fault-run-vouchers")
    count = sc.generate_vouchers(folder, VOUCHERS)
    poison = sc.write_poison(folder)
    return folder, count, poison


@pytest.mark.parametrize("name, backend", RUNS, ids=[f"{name}-{backend}" for name, backend in RUNS])
def test_fault_run(name, backend, voucher_folder, tmp_path, capsys, request):
    seed, faults, spiky = SCENARIOS[name]
    folder, count, poison = voucher_folder
    database_url = sc.database_for(backend, request)
    started = time.monotonic()
    simulator = sc.start_simulator(sc.simulator_config(seed, **faults), tmp_path / "oa")
    adapter = sc.bootstrap(sc.run_settings(tmp_path / "data", simulator.url, database_url=database_url))
    spikes = None
    try:
        imported = sc.import_vouchers(adapter, [folder])
        assert imported.created == count + len(poison) == imported.queued
        assert sc.break_attachments(adapter, poison) == 2
        if spiky:
            spikes = sc.LatencySpikes(simulator, seed).start()
        drive, settled = sc.drive_until_settled(adapter, simulator, len(poison), time_limit=TIME_LIMIT)
        if spikes:
            spikes.stop()
        injected = {kind: n for kind, n in simulator.injector.counts().items() if n}
        if spikes:
            injected["latency spikes"] = spikes.spikes
        end = sc.count_end_state(adapter, simulator.db)
        sc.report(capsys, sc.figures(
            f"{name} on {backend}", seed, end, len(poison), injected, time.monotonic() - started, adopted=drive.delivery.adopted,
            notes=f"poll rounds {drive.poll_rounds} ({drive.poll_errors} met a fault), "
                  f"outcomes applied {drive.outcomes_applied}, repeats ignored {drive.repeats}",
        ))
    finally:
        if spikes:
            spikes.stop()
        adapter.close()
        simulator.stop()

    assert settled, f"not settled within {TIME_LIMIT}s: {end.problems(set(poison))}"
    assert end.problems(set(poison)) == []
    assert end.vouchers == count + len(poison)
    assert drive.delivery.anomalies == 0
    for kind in ("error_rate", "ambiguous_rate", "drop_rate"):
        if faults.get(kind):  # the run really met the faults it is named after
            assert injected[{"error_rate": "error", "ambiguous_rate": "ambiguous", "drop_rate": "drop"}[kind]] >= 0.5 * faults[kind] * count, injected
    if spiky:
        assert spikes.spikes >= 3
    assert drive.delivery.retrying > 0, "the faults never made a delivery fail"
    assert end.decided_in_oa["REJECTED"] > 0 and end.decided_in_oa["APPROVED"] > 0
