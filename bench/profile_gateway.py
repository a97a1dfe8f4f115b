"""Profile the gateway under B1's GetVoucher load with py-spy; print the heaviest frames.

    /work/venv311/bin/pip install py-spy      # not a project dependency
    python bench/profile_gateway.py [GetVoucher|QueryVouchers] [--seconds 12]
    python bench/profile_gateway.py GetVoucher --in-process [--calls 600]

Shares are of the samples taken in the waitress worker threads (idle waiting excluded):
"self" is where the CPU was, "inclusive" is a frame and everything it called.

``--in-process`` sends the same request to the WSGI app in this process, one thread, no
HTTP: CPU milliseconds per call (best of 3 rounds) and every SQL statement a call
executes, counted on the engine — the figures that do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import collections
import io
import time
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from b1_gateway import CONNECTIONS, PER_ORG, THREADS, requests_for, serve_gateway, ten_entry_voucher  # noqa: E402
from common import free_port, run_wrk, stop_process  # noqa: E402
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


def in_process(data_dir: Path, action: str, body: bytes, calls: int) -> str:
    """CPU time per call and the statements of one call, through the WSGI app in this process."""
    from sqlalchemy import event

    from archive_oa.bootstrap import bootstrap
    from archive_oa.gateway.app import make_gateway_app
    from dataset import bench_settings

    auth = basic_auth()

    with bootstrap(bench_settings(data_dir)) as adapter:
        app = make_gateway_app(adapter)

        def call() -> None:
            environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/soap/archive", "wsgi.url_scheme": "http",
                       "CONTENT_TYPE": "text/xml; charset=utf-8", "CONTENT_LENGTH": str(len(body)),
                       "wsgi.input": io.BytesIO(body), "HTTP_AUTHORIZATION": f"Basic {auth}",
                       "HTTP_SOAPACTION": f'"{action}"', "REMOTE_ADDR": "127.0.0.1"}
            status = []
            answer = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
            if not status[0].startswith("200"):
                raise RuntimeError(f"{action} answered {status[0]}: {answer[:300]!r}")

        for _ in range(20):  # warm: compiled statements, caches, the first connections
            call()
        best = min(_cpu_per_call(call, calls // 3) for _ in range(3))
        statements: collections.Counter = collections.Counter()

        def count(conn, cursor, statement, parameters, context, executemany):
            statements[" ".join(statement.split())[:100]] += 1

        def begin(conn):  # the store's listener sends BEGIN to the driver itself: counted here
            if conn.dialect.name == "sqlite":
                statements[f"BEGIN {conn.get_execution_options().get('archive_oa_begin', 'DEFERRED')}"] += 1

        def commit(conn):  # a driver call, not a statement: counted as one round trip too
            statements["COMMIT"] += 1

        listeners = (("before_cursor_execute", count), ("begin", begin), ("commit", commit))
        for name, listener in listeners:
            event.listen(adapter.store.engine, name, listener)
        try:
            call()
        finally:
            for name, listener in listeners:
                event.remove(adapter.store.engine, name, listener)
    lines = [f"{action} in-process: {best * 1000:.3f} ms CPU per call (best of 3 x {calls // 3}), "
             f"{sum(statements.values())} round trips to the database per call:"]
    lines += [f"  {n}  {statement}" for statement, n in statements.items()]
    return "\n".join(lines)


def _cpu_per_call(call, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        call()
    return (time.process_time() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", nargs="?", default="GetVoucher")
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--in-process", action="store_true",
                        help="CPU ms per call and SQL statements per call in this process (no HTTP, no py-spy)")
    parser.add_argument("--calls", type=int, default=600, help="with --in-process: calls measured")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="archive-oa-profile-"))
    try:
        data_dir = work / "data"
        prepare_store(data_dir, write_voucher_files(work / "v", PER_ORG * 3, per_batch=PER_ORG)[0].parent)
        body = requests_for(ten_entry_voucher(), catalog.ORGS[0].code)[args.action]
        if args.in_process:
            print(in_process(data_dir, args.action, body, args.calls))
            return
        port = free_port()
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
