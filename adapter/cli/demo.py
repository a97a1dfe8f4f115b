"""``archive-oa demo``: the whole adapter end to end on loopback, under injected faults."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from decimal import Decimal
from pathlib import Path

from ..demo import DEMO_ROLES, Demo, DemoOptions, DemoSummary
from .output import display_width


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the adapter end to end against the OA simulator, with faults injected",
        description=(
            "Starts the OA simulator and the gateway on loopback, imports the bundled sample "
            "vouchers, delivers them while the simulator fails, drops connections and commits "
            "then times out, brings the approvers' decisions back by polling and by callback, "
            "and checks that nothing was lost or doubled. Exits 1 if anything is off."
        ),
    )
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help="keep the demo's data here (default: a new temporary folder)")
    parser.add_argument("--port", type=int, default=0, metavar="N", help="gateway port (default: a free port)")
    parser.add_argument("--oa-port", type=int, default=0, metavar="M", help="OA simulator port (default: a free port)")
    parser.add_argument("--keep-running", action="store_true", help="stay up afterwards for SoapUI and scripts; Ctrl-C stops")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    parser.add_argument("--seed", type=int, default=DemoOptions.seed, help="seed of the injected faults")
    parser.add_argument("--oa-error-rate", type=float, default=DemoOptions.error_rate, metavar="R")
    parser.add_argument("--oa-drop-rate", type=float, default=DemoOptions.drop_rate, metavar="R")
    parser.add_argument("--oa-ambiguous-rate", type=float, default=DemoOptions.ambiguous_rate, metavar="R")
    parser.add_argument("--oa-latency-ms", type=int, default=DemoOptions.latency_ms, metavar="N")
    parser.add_argument("--oa-decide-after", type=float, default=DemoOptions.decide_after, metavar="SECONDS")
    parser.add_argument("--oa-reject-above", type=Decimal, default=DemoOptions.reject_above, metavar="AMOUNT")
    parser.add_argument("--oa-reject-account", action="append", default=[], metavar="CODE")
    # The injected faults make the sync engine warn all the time; the progress lines
    # already tell the story.  ARCHIVE_OA_LOG_LEVEL=INFO shows everything.
    parser.set_defaults(func=run, log_level="ERROR")


def run(args: argparse.Namespace) -> int:
    options = DemoOptions(
        data_dir=args.data_dir,
        port=args.port,
        oa_port=args.oa_port,
        seed=args.seed,
        error_rate=args.oa_error_rate,
        drop_rate=args.oa_drop_rate,
        ambiguous_rate=args.oa_ambiguous_rate,
        latency_ms=args.oa_latency_ms,
        decide_after=args.oa_decide_after,
        reject_above=args.oa_reject_above,
        reject_accounts=tuple(args.oa_reject_account),
    )
    demo = Demo(options, progress=lambda line: print(line, file=sys.stderr, flush=True))
    try:
        demo.start()
        summary = demo.run()
        if args.json:
            print(json.dumps(summary.as_dict(), ensure_ascii=False))
        else:
            print(format_summary(summary))
        if args.keep_running:
            _stay_up(demo)
        return 0 if summary.ok else 1
    finally:
        demo.stop()


def _stay_up(demo: Demo) -> None:
    gateway, simulator = demo.gateway, demo.simulator
    # From here on people explore by hand: a simulator failing one call in five would
    # only get in their way.  `archive-oa oa-sim` offers every fault switch.
    simulator.set_faults(error_rate=0.0, drop_rate=0.0, ambiguous_rate=0.0, latency_ms=0)
    users = "\n".join(f"    demo-{role:<10} password demo-{role}" for role in DEMO_ROLES)
    print(
        f"\nThe demo keeps running (Ctrl-C stops it).\n"
        f"  gateway WSDL:       {gateway.url}?wsdl\n"
        f"  SOAP 1.2 WSDL:      {gateway.url.replace('/soap/', '/soap12/')}?wsdl\n"
        f"  OA simulator WSDL:  {simulator.wsdl_url}\n"
        f"  health:             http://127.0.0.1:{demo.gateway_port}/healthz\n"
        f"  data folder:        {demo.data_dir}\n"
        f"  the simulator's fault injection is now off\n"
        f"  users (HTTP Basic or WS-Security UsernameToken, all organisations):\n{users}\n",
        file=sys.stderr,
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    demo.adapter.start_sync()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        demo.adapter.stop_sync()


def format_summary(summary: DemoSummary) -> str:
    rows = [
        ("vouchers imported", summary.vouchers),
        ("delivered to the OA", summary.delivered),
        ("  adopted after an ambiguous failure", summary.adopted),
        ("  retries", summary.retries),
        ("OA requests in the simulator", summary.oa_requests),
        ("approved (审批通过)", summary.approved),
        ("rejected (驳回)", summary.rejected),
        ("withdrawn (撤回)", summary.withdrawn),
        ("pending", summary.pending),
        ("outcomes via polling", summary.via_poll),
        ("outcomes via callback", summary.via_callback),
        ("repeated outcomes ignored", summary.repeats_ignored),
        ("dead letters", summary.dead),
        ("duplicates (must be 0)", summary.duplicates),
        ("lost (must be 0)", summary.lost),
        ("archive ≠ OA (must be 0)", summary.mismatched),
        ("seconds", f"{summary.seconds:.1f}"),
        ("vouchers per second", f"{summary.vouchers_per_second:.1f}"),
    ]
    width = max(display_width(label) for label, _ in rows)
    lines = [f"{label}{' ' * (width - display_width(label))}  {value:>8}" for label, value in rows]
    rule = "-" * (width + 10)
    verdict = "OK: nothing lost, nothing doubled" if summary.ok else "FAILED: see the counts above"
    return "\n".join([rule, *lines, rule, verdict])
