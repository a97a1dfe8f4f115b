"""Profile the gateway under B1's GetVoucher load with py-spy; print the heaviest frames.

    /work/venv311/bin/pip install py-spy      # not a project dependency
    python bench/profile_gateway.py [GetVoucher|QueryVouchers] [--seconds 12]

Shares are of the samples taken in the waitress worker threads (idle waiting excluded):
"self" is where the CPU was, "inclusive" is a frame and everything it called.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from b1_gateway import CONNECTIONS, PER_ORG, THREADS, requests_for, serve_gateway, ten_entry_voucher  # noqa: E402
from common import BENCH_DIR, PYTHON, free_port, run_wrk, start_process, stop_process, wait_http  # noqa: E402
from dataset import basic_auth, prepare_store, write_voucher_files  # noqa: E402
from archive_oa.samples import catalog  # noqa: E402

IDLE = ("wait (threading.py", "select (selectors.py", "poll (", "handler_thread", "_recv_into")


def summarize(collapsed: Path, top: int) -> str:
    self_time, inclusive, total = collections.Counter(), collections.Counter(), 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if "handler_thread" not in stack or any(m in frames[-1] for m in IDLE):
            continue
        n = int(count)
        total += n
        self_time[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} busy samples in worker threads", "", "self:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in self_time.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top * 3)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", nargs="?", default="GetVoucher")
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--what-if", action="store_true",
                        help="profile with patched_serve.py's two what-ifs on (no spyne gc, scrypt once per user)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="archive-oa-profile-"))
    try:
        data_dir = work / "data"
        prepare_store(data_dir, write_voucher_files(work / "v", PER_ORG * 3, per_batch=PER_ORG)[0].parent)
        body = requests_for(ten_entry_voucher(), catalog.ORGS[0].code)[args.action]
        port = free_port()
        if args.what_if:
            proc = start_process([PYTHON, str(BENCH_DIR / "patched_serve.py"), "serve", "--data-dir", str(data_dir),
                                  "--host", "127.0.0.1", "--port", str(port), "--threads", str(THREADS),
                                  "--no-scheduler"], env={"BENCH_NO_SPYNE_GC": "1", "BENCH_CACHE_VERIFY": "1"},
                                 log=work / "gateway.log")
            wait_http(f"http://127.0.0.1:{port}/healthz")
        else:
            proc = serve_gateway(data_dir, port, THREADS, work / "gateway.log")
        out = work / "profile.txt"
        try:
            spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--format", "raw",
                                    "-d", str(args.seconds), "-r", "200", "-p", str(proc.pid), "-o", str(out)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            load = threading.Thread(target=run_wrk, args=(f"http://127.0.0.1:{port}/soap/archive", body, args.action,
                                                          basic_auth()), kwargs={"connections": CONNECTIONS,
                                                          "seconds": args.seconds + 2, "workdir": work})
            load.start()
            spy.wait()
            load.join()
        finally:
            stop_process(proc)
        print(summarize(out, args.top))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
