"""B4 scale: import of N vouchers (time, peak RSS, in a subprocess) and QueryVouchers p99 with
10,000 and with a larger store (rows bulk-copied with SQLAlchemy Core, not imported)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import sqlalchemy as sa

from archive_oa.bootstrap import bootstrap
from archive_oa.domain.model import VoucherQuery
from archive_oa.samples import catalog
from archive_oa.store.tables import entries, vouchers

from common import BENCH_DIR, PYTHON, Figure, percentile
from dataset import PERIODS, bench_settings, write_voucher_files

FULL_IMPORT, FULL_STORE = 100_000, 1_000_000
BASE_STORE = 10_000
DEFAULT_IMPORT = 30_000  # the full 100,000 takes ~5 min here: --full
PER_BATCH = 2000
QUERIES = 500


def import_in_child(work: Path, count: int) -> tuple[dict, Path]:
    voucher_dir = work / f"b4-vouchers-{count}"
    write_voucher_files(voucher_dir, count, per_batch=PER_BATCH)
    data_dir = work / f"b4-data-{count}"
    out = subprocess.run([PYTHON, str(BENCH_DIR / "import_child.py"), str(data_dir), str(voucher_dir)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1]), data_dir


def query_times(small, large) -> tuple[list[float], list[float]]:
    """QueryVouchers (pageSize 100, one org and period) times in ms against both stores, through the service.

    The two stores are queried alternately, so a neighbour's burst on a shared machine lands
    on both series alike instead of deciding one of them.
    """
    query = VoucherQuery(org_code=catalog.ORGS[0].code, period_from=PERIODS[0], period_to=PERIODS[0],
                         page=3, page_size=100)
    series = ([], [])
    for adapter in (small, large):
        for _ in range(20):
            page = adapter.archive.query_vouchers(query)
        if len(page.items) != 100:
            raise RuntimeError("B4: the query page is not full; the store is not what the bench expects")
    for _ in range(QUERIES):
        for adapter, times in zip((small, large), series):
            t0 = time.perf_counter()
            adapter.archive.query_vouchers(query)
            times.append((time.perf_counter() - t0) * 1000)
    return series


def grow_store(adapter, target: int) -> int:
    """Copy the latest vouchers (and their entries) into other years until ``target`` rows exist.

    Copies keep their organisation and month but move to year 1001+k, so the queried org and
    period hold the same vouchers while the tables and indexes grow around them.
    """
    engine = adapter.store.engine
    with engine.begin() as conn:
        base = conn.execute(sa.select(sa.func.count()).select_from(vouchers)).scalar_one()
        max_id = conn.execute(sa.select(sa.func.max(vouchers.c.id))).scalar_one()
        max_entry = conn.execute(sa.select(sa.func.max(entries.c.id))).scalar_one()
    rounds = -(-(target - base) // base)
    for k in range(1, rounds + 1):
        year = 1000 + k
        replaced = {
            "id": vouchers.c.id + k * max_id,
            "voucher_id": vouchers.c.voucher_id + sa.literal(f"-Y{year}"),
            "period": sa.literal(f"{year}") + sa.func.substr(vouchers.c.period, 5),
            "fiscal_year": sa.literal(year),
        }
        cols = [replaced.get(c.name, c) for c in vouchers.c]
        eplaced = {"id": entries.c.id + k * max_entry, "voucher_row": entries.c.voucher_row + k * max_id}
        ecols = [eplaced.get(c.name, c) for c in entries.c]
        with engine.begin() as conn:
            conn.execute(vouchers.insert().from_select([c.name for c in vouchers.c],
                                                       sa.select(*cols).where(vouchers.c.id <= max_id)))
            conn.execute(entries.insert().from_select([c.name for c in entries.c],
                                                      sa.select(*ecols).where(entries.c.voucher_row <= max_id)))
    with engine.begin() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(vouchers)).scalar_one()


def run(work: Path, quick: bool, full: bool) -> list[Figure]:
    n_import = FULL_IMPORT if full else (3000 if quick else DEFAULT_IMPORT)
    n_store = FULL_STORE if not quick else 50_000
    size_note = "" if full else f" (--full: {FULL_IMPORT:,})"
    result, data_dir = import_in_child(work, n_import)
    seconds, rss = result["seconds"], result["peak_rss_mb"]
    projected = seconds * FULL_IMPORT / n_import
    figures = [
        Figure("B4", f"import {n_import:,} vouchers{size_note}", seconds, "s", None,
               f"{FULL_IMPORT:,} in < 120 s" + ("" if full else f" (projected {projected:.0f} s)"),
               projected < 120, {"vouchers_per_s": n_import / seconds, "created": result["created"],
                                 "cpu_seconds": round(result["cpu_seconds"], 1)}),
        Figure("B4", f"import {n_import:,} peak RSS", rss, "MB", None, "< 300 MB", rss < 300),
    ]
    # the 10,000 store: the import above (default) or a fresh one of 10,000
    small = n_import if quick else BASE_STORE
    base_dir = data_dir if n_import == small else import_in_child(work, small)[1]
    large_dir = work / "b4-large"
    shutil.copytree(base_dir, large_dir)
    with bootstrap(bench_settings(base_dir)) as small_store, bootstrap(bench_settings(large_dir)) as large_store:
        t0 = time.perf_counter()
        stored = grow_store(large_store, n_store)
        grow_seconds = time.perf_counter() - t0
        small_times, large_times = query_times(small_store, large_store)
    small_p50, small_p99 = percentile(small_times, 50), percentile(small_times, 99)
    big_p50, big_p99 = percentile(large_times, 50), percentile(large_times, 99)
    ratio = big_p99 / small_p99
    extra = {"small_store": small, "large_store": stored, "queries": QUERIES,
             "p50_small_ms": small_p50, "p50_large_ms": big_p50, "bulk_insert_seconds": round(grow_seconds, 1)}
    figures.append(Figure("B4", f"QueryVouchers p99 at {stored:,} stored", big_p99, "ms", small_p99,
                          f"≤ 1.5 × p99 at {small:,}", ratio <= 1.5, extra))
    return figures
