"""What would lift B1: GetVoucher under wrk with what-if patches and waitress thread counts.

    python bench/experiment_gateway.py [--seconds 8]

Each variant runs the real gateway in a subprocess (bench/patched_serve.py); the figures are
requests/s and p99 against the same store as B1.  Experiments only: nothing here changes the product.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from archive_oa.samples import catalog  # noqa: E402

from b1_gateway import CONNECTIONS, PER_ORG, requests_for, ten_entry_voucher  # noqa: E402
from common import BENCH_DIR, PYTHON, free_port, run_wrk, start_process, stop_process, wait_http  # noqa: E402
from dataset import basic_auth, prepare_store, write_voucher_files  # noqa: E402

VARIANTS = [
    ("as shipped", {}, 8),
    ("no spyne gc.collect", {"BENCH_NO_SPYNE_GC": "1"}, 8),
    ("scrypt once per user", {"BENCH_CACHE_VERIFY": "1"}, 8),
    ("both", {"BENCH_NO_SPYNE_GC": "1", "BENCH_CACHE_VERIFY": "1"}, 8),
    ("both, 4 threads", {"BENCH_NO_SPYNE_GC": "1", "BENCH_CACHE_VERIFY": "1"}, 4),
    ("both, 2 threads", {"BENCH_NO_SPYNE_GC": "1", "BENCH_CACHE_VERIFY": "1"}, 2),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--action", default="GetVoucher")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="archive-oa-experiment-"))
    try:
        data_dir = work / "data"
        prepare_store(data_dir, write_voucher_files(work / "v", PER_ORG * 3, per_batch=PER_ORG)[0].parent)
        body = requests_for(ten_entry_voucher(), catalog.ORGS[0].code)[args.action]
        print(f"{'variant':24} {'threads':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for name, env, threads in VARIANTS:
            port = free_port()
            proc = start_process([PYTHON, str(BENCH_DIR / "patched_serve.py"), "serve", "--data-dir", str(data_dir),
                                  "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads),
                                  "--no-scheduler"], env=env, log=work / "gateway.log")
            try:
                wait_http(f"http://127.0.0.1:{port}/healthz")
                url = f"http://127.0.0.1:{port}/soap/archive"
                run_wrk(url, body, args.action, basic_auth(), connections=CONNECTIONS, seconds=2, workdir=work)
                r = run_wrk(url, body, args.action, basic_auth(), connections=CONNECTIONS, seconds=args.seconds,
                            workdir=work)
            finally:
                stop_process(proc)
            if r["errors"] or r["non2xx"]:
                raise RuntimeError(f"{name}: {r['errors']} socket errors, {r['non2xx']} non-2xx answers")
            print(f"{name:24} {threads:>7} {r['rps']:>8.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
