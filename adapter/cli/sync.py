"""Sync commands: ``sync`` (manual), ``poll``, ``worker``, ``dead-letters``, ``reconcile``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from .output import ProgressLine as _Line, display_width as _width, table as _table
from .common import add_common, positive_int, settings_from


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sync",
        help="queue vouchers not yet sent and deliver them to the OA now (manual sync)",
        description="Queue the matching vouchers that were never sent as one sync job (with those already "
        "waiting for delivery), then deliver that job's vouchers, and only those, until none is due or "
        "--timeout passes.  It stops after the first round when the OA is unreachable or refuses the "
        "credentials.  Counts are vouchers.  Vouchers another running sync job holds are left to it.  "
        "Exit code 1 when a voucher it was asked to deliver was not delivered, 2 when the filters select no voucher of the archive.",
    )
    p.add_argument("--org", metavar="ORG", help="only this organisation (orgCode)")
    p.add_argument("--period-from", metavar="YYYY-MM")
    p.add_argument("--period-to", metavar="YYYY-MM")
    p.add_argument("--voucher", metavar="ID", action="append", dest="vouchers", help="only this voucher (repeatable)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="stop waiting for retries after this long (default 300)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    add_common(p)
    p.set_defaults(func=run_sync)

    p = subparsers.add_parser("poll", help="fetch decided requests from the OA queue once and apply them")
    add_common(p)
    p.set_defaults(func=run_poll)

    p = subparsers.add_parser(
        "worker",
        help="run delivery and polling on their schedules until SIGTERM / Ctrl-C",
        description="Runs [sync] delivery_schedule and poll_schedule. On SIGTERM or SIGINT it stops "
        "claiming, finishes the deliveries already sent and gives back the rest.",
    )
    add_common(p)
    p.set_defaults(func=run_worker)

    p = subparsers.add_parser(
        "dead-letters",
        help="list, show, retry or discard deliveries that gave up",
        description="Dead letters are deliveries that failed for good (the OA refused them, their content "
        "cannot be sent, or they ran out of attempts). Retrying asks the OA before sending again.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = actions.add_parser("list", help="list dead letters")
    a.add_argument("--limit", type=positive_int, default=100)
    a.add_argument("--json", action="store_true", help="print a JSON array on stdout")
    add_common(a)
    a.set_defaults(func=run_dead_letters)
    a = actions.add_parser("show", help="one delivery in full: its voucher, attempts and last error")
    a.add_argument("id", type=int, metavar="ID", help="delivery id (see list)")
    add_common(a)
    a.set_defaults(func=run_dead_letters)
    for name, text in (("retry", "deliver again (asks the OA first)"),
                       ("discard", "delete them; the vouchers can be synced again")):
        a = actions.add_parser(name, help=text)
        a.add_argument("ids", nargs="*", type=int, metavar="ID", help="delivery ids (see list)")
        a.add_argument("--all", action="store_true", help="every dead letter")
        add_common(a)
        a.set_defaults(func=run_dead_letters)

    p = subparsers.add_parser(
        "reconcile",
        help="compare archive and OA for an organisation and period",
        description="Lists vouchers the OA holds no request for (missing in OA), OA requests carrying our "
        "keys that the archive does not map (orphaned in OA) and vouchers whose state differs from "
        "their OA request's. Exit code 1 when something still needs attention.",
    )
    p.add_argument("--org", required=True, metavar="ORG")
    p.add_argument("--period", required=True, metavar="YYYY-MM")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table (default), csv (one row per finding) or json (one object)")
    p.add_argument("--requeue-missing", action="store_true",
                   help="send the vouchers missing in the OA again where that is safe: dead letters are "
                   "retried (asking the OA first), vouchers without a delivery are queued")
    add_common(p)
    p.set_defaults(func=run_reconcile)


def _adapter(args):
    from ..bootstrap import bootstrap

    return bootstrap(settings_from(args))


def run_sync(args: argparse.Namespace) -> int:
    from ..sync.worker import DeliveryCounts
    from .sync_output import sync_text

    with _adapter(args) as adapter:
        service = adapter.sync
        job = service.trigger(org_code=args.org, period_from=args.period_from, period_to=args.period_to,
                              voucher_ids=args.vouchers, kind="manual", take_over=True, strict=True)
        print(f"job {job.job_id}: {job.selected} vouchers selected, {job.queued} to deliver "
              f"({job.queued - job.taken_over} queued now, {job.taken_over} already waiting)", file=sys.stderr)
        counts = DeliveryCounts()
        if job.queued:
            progress = _Line(sys.stderr)
            try:
                counts = adapter.worker.run_until_idle(
                    time.monotonic() + args.timeout, job_id=job.job_id, stop_on_outage=True,
                    on_progress=lambda c: progress(f"delivering: {c.delivered + c.adopted} delivered, "
                                                   f"{c.dead} dead, {c.retrying} failed attempts to retry"),
                )
            finally:
                adapter.stop_sync()  # in-flight attempts settle, leases are handed back
                service.end_run(job.job_id)  # what is left open is the workers', or the next sync's
            progress.end()
        status = service.status(job.job_id)
    print(sync_text(job, status, counts, args.json))
    for line in _sync_notes(job, status, counts, args.timeout):
        print(line, file=sys.stderr)
    return 1 if status.undelivered or job.dead_letters or job.elsewhere or counts.anomalies else 0


def _sync_notes(job, status, counts, timeout: float) -> list[str]:
    """What the tables mean for the operator, on stderr."""
    from ..domain.delivery import FailureClass

    notes = []
    if not job.queued and not job.dead_letters and not job.elsewhere:
        notes.append("nothing to deliver: every matching voucher was delivered already")
    if job.elsewhere:
        notes.append(f"{job.elsewhere} matching vouchers belong to other sync jobs still running (a TriggerSync, "
                     "the delivery schedule or another sync), not taken over: archive-oa worker (or serve) "
                     "delivers them")
    if status.dead:
        notes.append(f"{status.dead} vouchers failed for good: see archive-oa dead-letters list")
    if job.dead_letters:
        notes.append(f"{job.dead_letters} matching vouchers are dead letters from earlier runs, not sent again "
                     "by sync: see archive-oa dead-letters list, then dead-letters retry")
    if counts.anomalies:
        notes.append(f"{counts.anomalies} vouchers have more than one OA request for their key: "
                     "see archive-oa reconcile")
    still_open = status.failed + status.waiting
    if still_open:
        outage = {cls for cls in counts.failures if cls.outage}  # this run's attempts, not earlier runs'
        if FailureClass.CREDENTIALS in outage:
            why = "stopped after the first round: the OA refuses our credentials (fix [oa] user/password)"
        elif outage:
            why = "stopped after the first round: the OA is unreachable (is it up? is [oa] url right?)"
        else:
            why = f"--timeout {timeout:g}s ended before their next attempt"
        notes.append(f"{why}; {still_open} vouchers are still queued: archive-oa worker (or serve) delivers "
                     "them, or run this sync again")
    return notes


def run_poll(args: argparse.Namespace) -> int:
    with _adapter(args) as adapter:
        counts = adapter.poller.run_once()
    print(_table(["fetched", "applied", "duplicates", "stale", "unknown", "invalid", "cursor"],
                 [[counts.fetched, counts.applied, counts.duplicates, counts.stale, counts.unknown,
                   counts.invalid, counts.cursor]]))
    return 0


def run_worker(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with _adapter(args) as adapter:
            adapter.start_sync()
            sync = adapter.settings.sync
            print(f"worker {adapter.owner}: delivery {sync.delivery_schedule}, "
                  f"polling {sync.poll_schedule}; SIGTERM or Ctrl-C stops", file=sys.stderr)
            while not stop.wait(1.0):
                pass
            print("stopping: finishing deliveries in flight …", file=sys.stderr)
            left = adapter.stop_sync()
            print(f"stopped ({left} leases handed back)", file=sys.stderr)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def run_dead_letters(args: argparse.Namespace) -> int:
    from ..domain.delivery import DeliveryState
    from ..store import outbox
    from ..domain.clock import utc_now

    with _adapter(args) as adapter:
        store = adapter.store
        if args.action == "list":
            from .sync_output import dead_letters_text

            with store.transaction() as conn:
                dead = outbox.list_deliveries(conn, states=[DeliveryState.DEAD], limit=args.limit)
            print(dead_letters_text(dead, args.json))
            return 0
        if args.action == "show":
            return _show_delivery(store, args.id)
        if not args.ids and not args.all:
            print(f"archive-oa dead-letters {args.action}: give delivery ids or --all", file=sys.stderr)
            return 2
        ids = None if args.all else list(dict.fromkeys(args.ids))
        with store.transaction(immediate=True) as conn:
            wanted = outbox.list_deliveries(conn, states=[DeliveryState.DEAD], ids=ids, limit=None)
            if args.action == "retry":
                changed = [d.id for d in wanted if outbox.retry_dead(conn, [d.id], now=utc_now())]
            else:
                changed = [d.id for d in outbox.discard_dead(conn, [d.id for d in wanted])]
                _unqueue(conn, [d.voucher_id for d in wanted])
    print(f"{args.action}: {len(changed)} dead letters" + (f" ({', '.join(map(str, changed))})" if changed else ""))
    strays = sorted(set(ids or ()) - set(changed))
    if strays:
        print(f"not dead letters (nothing done): {', '.join(map(str, strays))}; "
              "see archive-oa dead-letters list", file=sys.stderr)
        return 1
    return 0


def _unqueue(conn, voucher_ids) -> None:
    """Discarded: back to "never sent" so a later sync can pick the voucher up again."""
    from ..domain.model import WorkflowState
    from ..store import vouchers

    for voucher_id in voucher_ids:
        voucher = vouchers.load_voucher(conn, voucher_id)
        if voucher is not None and voucher.state is WorkflowState.QUEUED:
            vouchers.set_workflow(conn, voucher_id, state=WorkflowState.NONE)


def _show_delivery(store, delivery_id: int) -> int:
    from ..errors import NotFound
    from ..store import outbox, vouchers

    with store.transaction() as conn:
        delivery = outbox.get(conn, delivery_id)
        if delivery is None:
            raise NotFound(f"delivery {delivery_id} does not exist; see archive-oa dead-letters list for the ids")
        voucher = vouchers.load_voucher(conn, delivery.voucher_id, version=delivery.version)
        latest = vouchers.latest_version(conn, delivery.voucher_id)

    def when(value) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"

    rows = [
        ("delivery", delivery.id),
        ("state", delivery.state.value + ("  (dead letter)" if delivery.state.value == "DEAD" else "")),
        ("idempotency key", delivery.idempotency_key),
        ("attempts", delivery.attempts),
        ("created", when(delivery.created_at)),
        ("last change", when(delivery.updated_at)),
        ("next attempt", when(delivery.next_attempt_at) if delivery.state.value in ("PENDING", "UNCERTAIN") else "-"),
        ("OA request", delivery.oa_request_id or "-"),
        ("sync job", delivery.job_id or "-"),
        ("voucher", f"{delivery.voucher_id} version {delivery.version}"
         + ("" if latest is None or latest[0] == delivery.version else f" (latest is version {latest[0]})")),
    ]
    if voucher is None:
        rows.append(("", "this version is no longer in the archive: discard the delivery"))
    else:
        rows += [
            ("  organisation", f"{voucher.org_code} {voucher.org_name}"),
            ("  period", voucher.period),
            ("  number", f"{voucher.voucher_word}-{voucher.voucher_no}  ({voucher.date.isoformat()})"),
            ("  amount", f"{voucher.total_amount:,.2f} {voucher.currency}"),
            ("  summary", voucher.summary or "-"),
            ("  attachments", ", ".join(f"{a.file_name} ({a.mime_type}, {a.size} bytes)" for a in voucher.attachments)
             or "none"),
            ("  workflow state", voucher.state.value),
        ]
    rows.append(("last error", delivery.last_error or "-"))
    width = max(_width(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label}{' ' * (width - _width(label))}  {value}")
    return 0


def run_reconcile(args: argparse.Namespace) -> int:
    from .reconcile_output import render

    with _adapter(args) as adapter:
        service = adapter.sync
        report = service.reconcile(args.org, args.period, strict=True)
        requeued = service.requeue_missing(report) if args.requeue_missing else None
    print(render(report, requeued, args.format))
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    unhandled = [v for v in report.missing_in_oa if not any(r.voucher_id == v and r.handled for r in requeued or ())]
    return 1 if unhandled or report.orphaned_in_oa or report.state_mismatches else 0
