"""Sync commands: ``sync`` (manual), ``poll``, ``worker``, ``dead-letters``, ``reconcile``."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time

from .common import add_common, settings_from


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sync",
        help="queue vouchers not yet sent and deliver them to the OA now (manual sync)",
        description="Queue the matching vouchers that were never sent (state NONE) as one sync job, "
        "then deliver everything due until the outbox is idle or --timeout passes.",
    )
    p.add_argument("--org", metavar="ORG", help="only this organisation (orgCode)")
    p.add_argument("--period-from", metavar="YYYY-MM")
    p.add_argument("--period-to", metavar="YYYY-MM")
    p.add_argument("--voucher", metavar="ID", action="append", dest="vouchers", help="only this voucher (repeatable)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="stop waiting for retries after this long (default 300)")
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

    p = subparsers.add_parser("dead-letters", help="list, retry or discard deliveries that gave up")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("list", "list dead letters"), ("retry", "deliver again (asks the OA first)"),
                       ("discard", "delete them; the vouchers can be synced again")):
        a = actions.add_parser(name, help=text)
        if name != "list":
            a.add_argument("ids", nargs="*", type=int, metavar="ID", help="delivery ids (see list)")
            a.add_argument("--all", action="store_true", help="every dead letter")
        else:
            a.add_argument("--limit", type=int, default=100)
        add_common(a)
        a.set_defaults(func=run_dead_letters)

    p = subparsers.add_parser("reconcile", help="compare archive and OA for an organisation and period")
    p.add_argument("--org", required=True, metavar="ORG")
    p.add_argument("--period", required=True, metavar="YYYY-MM")
    add_common(p)
    p.set_defaults(func=run_reconcile)


@contextlib.contextmanager
def _wired(args, *, oa: bool = True):
    from ..store.engine import open_store

    settings = settings_from(args)
    store = open_store(settings)
    client = None
    try:
        if oa:
            from ..oa.client import OaClient

            client = OaClient(settings.oa)
        yield settings, store, client
    finally:
        if client is not None:
            client.close()
        store.dispose()


def run_sync(args: argparse.Namespace) -> int:
    from ..services.sync import SyncService
    from ..sync.worker import DeliveryWorker
    from ..transforms.pipeline import Transforms

    with _wired(args) as (settings, store, oa):
        service = SyncService(store, oa)
        job = service.trigger(org_code=args.org, period_from=args.period_from, period_to=args.period_to,
                              voucher_ids=args.vouchers, kind="manual")
        print(f"job {job.job_id}: {job.selected} vouchers selected, {job.queued} queued", file=sys.stderr)
        worker = DeliveryWorker(store, oa, Transforms.from_settings(settings.workflow), settings.sync,
                                owner=None)
        progress = _Line(sys.stderr)
        try:
            counts = worker.run_until_idle(
                time.monotonic() + args.timeout,
                on_progress=lambda c: progress(f"delivering: {c.delivered + c.adopted} delivered, "
                                               f"{c.retrying} retrying, {c.dead} dead"),
            )
        finally:
            worker.close()
        progress.end()
        status = service.status(job.job_id)
    print(_table(["job", "state", "queued", "delivered", "retrying", "dead"],
                 [[status.job_id, status.state, status.queued, status.delivered, status.failed, status.dead]]))
    print(_table(["this run", "claimed", "delivered", "adopted", "retrying", "dead", "anomalies"],
                 [["", counts.claimed, counts.delivered, counts.adopted, counts.retrying, counts.dead,
                   counts.anomalies]]))
    return 1 if status.dead or counts.anomalies else 0


def run_poll(args: argparse.Namespace) -> int:
    from ..sync.poller import Poller

    with _wired(args) as (settings, store, oa):
        counts = Poller(store, oa, settings.sync).run_once()
    print(_table(["fetched", "applied", "duplicates", "stale", "unknown", "invalid", "cursor"],
                 [[counts.fetched, counts.applied, counts.duplicates, counts.stale, counts.unknown,
                   counts.invalid, counts.cursor]]))
    return 0


def run_worker(args: argparse.Namespace) -> int:
    import logging

    from ..store import outbox
    from ..sync.scheduler import sync_scheduler
    from ..sync.worker import utcnow
    from ..transforms.pipeline import Transforms

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with _wired(args) as (settings, store, oa):
            scheduler, worker = sync_scheduler(store, oa, Transforms.from_settings(settings.workflow), settings)
            scheduler.start()
            print(f"worker {worker.owner}: delivery {settings.sync.delivery_schedule}, "
                  f"polling {settings.sync.poll_schedule}; SIGTERM or Ctrl-C stops", file=sys.stderr)
            while not stop.wait(1.0):
                pass
            print("stopping: finishing deliveries in flight …", file=sys.stderr)
            scheduler.stop(timeout=settings.sync.lease_seconds)
            worker.close()
            with store.transaction(immediate=True) as conn:  # anything still leased: next holder asks first
                left = outbox.release_owner(conn, worker.owner, now=utcnow())
            print(f"stopped ({left} leases handed back)", file=sys.stderr)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def run_dead_letters(args: argparse.Namespace) -> int:
    from ..domain.delivery import DeliveryState
    from ..domain.model import WorkflowState
    from ..store import outbox
    from ..store import vouchers
    from ..sync.worker import utcnow

    with _wired(args, oa=False) as (settings, store, _):
        if args.action == "list":
            with store.transaction() as conn:
                dead = outbox.list_deliveries(conn, states=[DeliveryState.DEAD], limit=args.limit)
            print(_table(["id", "voucher", "version", "attempts", "updated", "last error"],
                         [[d.id, d.voucher_id, d.version, d.attempts, d.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
                           (d.last_error or "")[:80]] for d in dead]))
            return 0
        if not args.ids and not args.all:
            print(f"archive-oa dead-letters {args.action}: give delivery ids or --all", file=sys.stderr)
            return 2
        ids = None if args.all else args.ids
        with store.transaction(immediate=True) as conn:
            if args.action == "retry":
                changed = outbox.retry_dead(conn, ids, now=utcnow())
            else:
                gone = outbox.discard_dead(conn, ids)
                for delivery in gone:  # back to "never sent" so a later sync can pick it up
                    voucher = vouchers.load_voucher(conn, delivery.voucher_id)
                    if voucher is not None and voucher.state is WorkflowState.QUEUED:
                        vouchers.set_workflow(conn, delivery.voucher_id, state=WorkflowState.NONE)
                changed = len(gone)
        print(f"{args.action}: {changed} dead letters")
        return 0


def run_reconcile(args: argparse.Namespace) -> int:
    from ..services.sync import SyncService

    with _wired(args) as (settings, store, oa):
        report = SyncService(store, oa).reconcile(args.org, args.period)
    print(_table(["org", "period", "checked", "missing in OA", "orphaned in OA", "state mismatches"],
                 [[report.org_code, report.period, report.checked, len(report.missing_in_oa),
                   len(report.orphaned_in_oa), len(report.state_mismatches)]]))
    for voucher_id in report.missing_in_oa:
        print(f"missing in OA: voucher {voucher_id}")
    for request_id in report.orphaned_in_oa:
        print(f"orphaned in OA: request {request_id}")
    for m in report.state_mismatches:
        print(f"state mismatch: voucher {m.voucher_id} archive {m.archive_state.value} "
              f"OA {m.oa_state.value} (request {m.oa_request_id})")
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    return 1 if report.missing_in_oa or report.orphaned_in_oa or report.state_mismatches else 0


class _Line:
    """A progress line rewritten in place on a terminal, at most one line a second otherwise."""

    def __init__(self, stream) -> None:
        self.stream, self.tty, self.last, self.shown = stream, stream.isatty(), 0.0, False

    def __call__(self, text: str) -> None:
        now = time.monotonic()
        if now - self.last < (0.2 if self.tty else 1.0):
            return
        self.last, self.shown = now, True
        self.stream.write(f"\r{text}\033[K" if self.tty else text + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        return "  ".join(c + " " * (w - _width(c)) for c, w in zip(row, widths)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def _width(text: str) -> int:
    """Display width: CJK characters take two columns."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
