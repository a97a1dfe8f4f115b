"""Voucher files from the bundled generator, and data folders holding them."""

from __future__ import annotations

import base64
from pathlib import Path

from archive_oa.samples import catalog
from archive_oa.samples.generate import build_batch
from archive_oa.voucher_xml import vouchers_to_xml

from common import BENCH_PASSWORD, BENCH_USER

# Periods beyond the two bundled ones, so large sets keep batches under the generator's
# 9,999-voucher limit and stay spread over periods as a real archive is.
PERIODS = [f"{year}-{month:02d}" for year in (2026, 2025, 2024, 2023) for month in range(12, 0, -1)]


def write_voucher_files(outdir: Path, total: int, per_batch: int = 2000) -> list[Path]:
    """``total`` generated vouchers as batch files (one org and period each) in ``outdir``."""
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "attachments").mkdir(exist_ok=True)
    written, left = [], total
    batches = [(org, period) for period in PERIODS for org in catalog.ORGS]
    for org, period in batches:
        if left <= 0:
            break
        count = min(per_batch, left)
        vouchers, files, embedded = build_batch(org, period, count)
        for name, content in files.items():
            (outdir / "attachments" / name).write_bytes(content)
        path = outdir / f"{org.code}-{period}.xml"
        path.write_bytes(vouchers_to_xml(vouchers, embedded))
        written.append(path)
        left -= count
    if left > 0:
        raise ValueError(f"total = {total}: more than {len(batches) * per_batch} vouchers; raise per_batch")
    return written


def bench_settings(data_dir: Path):
    from archive_oa.settings import load_settings

    return load_settings(data_dir=data_dir, env={})


def prepare_store(data_dir: Path, voucher_dir: Path | None, *, enqueue: bool = False):
    """A data folder with the bench user and (optionally) the vouchers of ``voucher_dir``; the import report."""
    from archive_oa.bootstrap import bootstrap
    from archive_oa.services.importer import import_paths

    report = None
    with bootstrap(bench_settings(data_dir)) as adapter:
        adapter.users.add_user(BENCH_USER, BENCH_PASSWORD, {"viewer"}, None)
        if voucher_dir is not None:
            report = import_paths(adapter.store, adapter.transforms, [str(voucher_dir)], enqueue=enqueue)
            if not report.ok:
                raise RuntimeError(f"bench vouchers did not import: {report.issues[:3]}")
    return report


def basic_auth() -> str:
    return base64.b64encode(f"{BENCH_USER}:{BENCH_PASSWORD}".encode()).decode()
