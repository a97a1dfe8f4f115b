"""Which [gateway] threads to recommend: GetVoucher under wrk at 2, 4 and 8 waitress threads.

    python bench/experiment_gateway.py [--seconds 8] [--action GetVoucher|QueryVouchers] [--threads 2,4,8]

For each thread count the real gateway (``archive-oa serve``) and the floor (``floor_wsgi.py``,
the same response bytes) run in turn as subprocesses against the same store as B1, at B1's 16
connections; it prints requests/s, p50 and p99 of both.  Not part of ``run.py``: a settings study.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from archive_oa.samples import catalog  # noqa: E402

from b1_gateway import CONNECTIONS, PER_ORG, post, requests_for, serve_gateway, ten_entry_voucher  # noqa: E402
from common import BENCH_DIR, PYTHON, free_port, run_wrk, start_process, stop_process, wait_http  # noqa: E402
from dataset import basic_auth, prepare_store, write_voucher_files  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--action", default="GetVoucher", choices=("GetVoucher", "QueryVouchers"))
    parser.add_argument("--threads", default="2,4,8", help="comma-separated waitress thread counts")
    args = parser.parse_args()
    counts = [int(n) for n in args.threads.split(",")]
    work = Path(tempfile.mkdtemp(prefix="archive-oa-threads-"))
    try:
        data_dir = work / "data"
        prepare_store(data_dir, write_voucher_files(work / "v", PER_ORG * 3, per_batch=PER_ORG)[0].parent)
        body = requests_for(ten_entry_voucher(), catalog.ORGS[0].code)[args.action]
        print(f"{args.action}, {CONNECTIONS} connections, {args.seconds} s each")
        print(f"{'threads':>7} {'gateway req/s':>14} {'p50 ms':>7} {'p99 ms':>7} {'floor req/s':>12} {'ratio':>6}")
        for threads in counts:
            gateway, answer = _measure_gateway(work, data_dir, threads, body, args)
            floor = _measure_floor(work, threads, body, answer, args)
            print(f"{threads:>7} {gateway['rps']:>14,.0f} {gateway['p50_ms']:>7.1f} {gateway['p99_ms']:>7.1f} "
                  f"{floor['rps']:>12,.0f} {gateway['rps'] / floor['rps']:>6.2f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure_gateway(work: Path, data_dir: Path, threads: int, body: bytes, args):
    port = free_port()
    url = f"http://127.0.0.1:{port}/soap/archive"
    proc = serve_gateway(data_dir, port, threads, work / f"gateway-{threads}.log")
    try:
        answer = post(url, body, args.action)
        run_wrk(url, body, args.action, basic_auth(), connections=CONNECTIONS, seconds=2, workdir=work)  # warm-up
        result = run_wrk(url, body, args.action, basic_auth(), connections=CONNECTIONS, seconds=args.seconds,
                         workdir=work)
    finally:
        stop_process(proc)
    _require_clean(result, f"gateway, {threads} threads")
    return result, answer


def _measure_floor(work: Path, threads: int, body: bytes, answer: bytes, args):
    response = work / f"response-{args.action}.xml"
    response.write_bytes(answer)
    port = free_port()
    proc = start_process([PYTHON, str(BENCH_DIR / "floor_wsgi.py"), "--port", str(port), "--threads", str(threads),
                          "--response", f"{args.action}={response}"], log=work / f"floor-{threads}.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        url = f"http://127.0.0.1:{port}/soap/archive"
        run_wrk(url, body, args.action, basic_auth(), connections=CONNECTIONS, seconds=2, workdir=work)
        result = run_wrk(url, body, args.action, basic_auth(), connections=CONNECTIONS, seconds=args.seconds,
                         workdir=work)
    finally:
        stop_process(proc)
    _require_clean(result, f"floor, {threads} threads")
    return result


def _require_clean(result: dict, who: str) -> None:
    if result["errors"] or result["non2xx"]:
        raise RuntimeError(f"{who}: {result['errors']} socket errors, {result['non2xx']} non-2xx answers")


if __name__ == "__main__":
    main()
