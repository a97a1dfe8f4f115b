"""B6 worker: `archive-oa worker` itself (a process of its own, default settings) delivering an
`archive-oa import` to `archive-oa oa-sim` (no faults): import → last voucher in the OA's database,
and its delivery rate against B3's floor (raw POSTs) at the worker's concurrency.

The worker is started and left idle first, so the figure includes waking it: in real-time
mode (the default) the import's commit starts delivery at once, not at the next tick of
``[sync] delivery_schedule`` (every 30 s by default).
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

from archive_oa.bootstrap import bootstrap
from archive_oa.settings import SyncSettings

from b3_delivery import RawPoster, envelopes, settings_for, start_sim
from common import PYTHON, Figure, free_port, start_process, stop_process
from dataset import bench_settings, prepare_store, write_voucher_files

ARCHIVE_OA = str(Path(PYTHON).with_name("archive-oa"))
IDLE_SECONDS = 3.0  # after its start line: the worker's first round has found nothing, it is idle


def in_oa(sim_db: Path) -> int:
    """Requests the simulator holds (its own database: what the OA has, not what we think we sent)."""
    if not sim_db.exists():
        return 0
    with sqlite3.connect(f"file:{sim_db}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute("SELECT count(*) FROM requests").fetchone()[0]


def wait_for_line(log: Path, text: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"B6: no {text!r} in {log}:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)


def floor_rate(work: Path, count: int, threads: int) -> float:
    """B3's floor: ``count`` pre-built envelopes POSTed with ``threads`` threads to a fresh simulator."""
    port = free_port()
    sim = start_sim(work / "b6-sim-floor", port, work / "b6-sim-floor.log")
    try:
        with bootstrap(settings_for(work / "b6-floor-data", port)) as adapter:
            bodies = envelopes(adapter, count + 1)
        poster = RawPoster(f"http://127.0.0.1:{port}/soap/workflow", threads=threads)
        try:
            poster.post(bodies.pop())  # warm the connection pool
            started = time.perf_counter()
            poster.post_all(bodies)
            return count / (time.perf_counter() - started)
        finally:
            poster.close()
    finally:
        stop_process(sim)


def run(work: Path, quick: bool, full: bool) -> list[Figure]:
    count = 200 if quick else 500
    workers = SyncSettings().workers  # the worker runs with default settings
    voucher_dir = write_voucher_files(work / "b6-vouchers", count, per_batch=-(-count // 3))[0].parent
    data_dir = work / "b6-data"
    prepare_store(data_dir, None)  # the database exists before the worker and the import open it
    floor = floor_rate(work, count, workers)

    port = free_port()
    sim_dir = work / "b6-sim"
    sim = start_sim(sim_dir, port, work / "b6-sim.log")
    env = {"ARCHIVE_OA_OA_URL": f"http://127.0.0.1:{port}/soap/workflow"}
    worker_log = work / "b6-worker.log"
    worker = start_process([ARCHIVE_OA, "worker", "--data-dir", str(data_dir)], env=env, log=worker_log)
    try:
        wait_for_line(worker_log, "SIGTERM or Ctrl-C stops", worker)
        time.sleep(IDLE_SECONDS)
        sim_db = sim_dir / "oa-sim.db"
        started = time.monotonic()
        importer = start_process([ARCHIVE_OA, "import", str(voucher_dir), "--data-dir", str(data_dir)],
                                 env=env, log=work / "b6-import.log")
        imported = first = None
        while True:
            held = in_oa(sim_db)
            now = time.monotonic()
            if imported is None and importer.poll() is not None:
                if importer.returncode != 0:
                    raise RuntimeError(f"B6: the import failed: {(work / 'b6-import.log').read_text()[-2000:]}")
                imported = now
            if first is None and held:
                first = now
            if held >= count:
                last = now
                break
            if now - started > 600:
                raise RuntimeError(f"B6: {held} of {count} vouchers in the OA after 600 s; see {worker_log}")
            time.sleep(0.01)
        if imported is None:
            importer.wait(60)
            imported = time.monotonic()
    finally:
        stop_process(worker)
        stop_process(sim)
    total = last - started
    rate = count / (last - first)
    wake = max(0.0, first - imported)  # the import's process ends just after its commit
    extra = {"vouchers": count, "workers": workers, "import_seconds": round(imported - started, 2),
             "first_after_import_seconds": round(wake, 2), "delivery_seconds": round(last - first, 2)}
    return [
        Figure("B6", "worker: import → last in OA", total, "s", None, "first ≤ 1 s after the import",
               wake <= 1.0, extra),
        Figure("B6", "worker delivery vouchers/s", rate, "/s", floor, "≥ 0.5 × floor", rate / floor >= 0.5,
               {"floor_threads": workers}),
    ]
