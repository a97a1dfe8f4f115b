"""Generate the bundled sample vouchers: ``python -m archive_oa.samples.generate OUTDIR``.

Deterministic (fixed seeds): running it again writes the same bytes, so the files
committed beside this module can be regenerated and reviewed as a diff.  Writes one
``Vouchers`` batch per organisation and period (``HD01-2026-09.xml`` …) and the
attachment files they reference into ``OUTDIR/attachments/``.

What the demo relies on: about 12% of vouchers total more than 50 000.00 (the simulated
approvers reject those), several use account 6603 财务费用, about 15% carry attachment
files, two carry their attachment embedded as base64.
"""

from __future__ import annotations

import argparse
import calendar
import datetime as dt
import hashlib
import random
import sys
from decimal import Decimal
from pathlib import Path

from ..domain.model import (
    ArchiveInfo,
    AttachmentKind,
    AttachmentMeta,
    Entry,
    Retention,
    Voucher,
)
from ..voucher_xml import vouchers_to_xml
from . import catalog
from .source_documents import make_attachment
from .scenarios import SCENARIOS, Event

VOUCHERS_PER_BATCH = 42
LARGE_PER_BATCH = 5  # vouchers above the 50 000.00 approval limit in each batch
ATTACHED_PER_BATCH = 6  # vouchers with attachment files in each batch
APPROVAL_LIMIT = Decimal("50000.00")
#: (org, period) batches whose first attached voucher embeds its file instead
EMBEDDED_IN = {("HD01", "2026-09"), ("XB03", "2026-10")}
ARCHIVED_PERIODS = {"2026-09"}  # already archived (已归档): carry an archive part


def build_batch(
    org: catalog.Org, period: str, count: int = VOUCHERS_PER_BATCH
) -> tuple[list[Voucher], dict[str, bytes], dict[str, bytes]]:
    """The vouchers of one org and period, with (file name → bytes) and (attachment id → embedded bytes).

    ``count`` vouchers (at most 9999, the width of the voucher id's number); the shares of
    large and attached vouchers stay those of the bundled batches.  The default count
    writes exactly the bundled files; a larger one makes load and fault runs.
    """
    if not 1 <= count <= 9999:
        raise ValueError(f"count = {count}: a batch holds 1 to 9999 vouchers")
    rng = random.Random(f"archive-oa-samples:{org.code}:{period}")
    year, month = int(period[:4]), int(period[5:])
    days = calendar.monthrange(year, month)[1]
    dates = sorted(dt.date(year, month, rng.randint(1, days)) for _ in range(count))

    scenarios = rng.choices(SCENARIOS, weights=[s[1] for s in SCENARIOS], k=count)
    large_capable = [i for i, s in enumerate(scenarios) if s[2]]
    large = set(rng.sample(large_capable, min(len(large_capable), LARGE_PER_BATCH * count // VOUCHERS_PER_BATCH)))
    attached = sorted(rng.sample(range(count), ATTACHED_PER_BATCH * count // VOUCHERS_PER_BATCH))
    embedded_index = attached[0] if attached and (org.code, period) in EMBEDDED_IN else None

    vouchers, files, embedded = [], {}, {}
    numbers: dict[str, int] = {}
    for index, (date, scenario) in enumerate(zip(dates, scenarios)):
        function, _, _, (low, high) = scenario
        total = _amount(rng, 50_000.01, 680_000) if index in large else _amount(rng, low, high)
        event = function(rng, month, total)
        numbers[event.word] = numbers.get(event.word, 0) + 1
        voucher_id = f"{org.code}-{year}{month:02d}-{index + 1:04d}"

        attachments = []
        if index in attached:
            for n in range(1, rng.choice((1, 1, 2)) + 1):
                kind = event.attachment_kind or rng.choice(("INVOICE", "OTHER"))
                name, mime, content = make_attachment(rng, kind, voucher_id, n, org, event, date)
                meta = AttachmentMeta(
                    attachment_id=f"{voucher_id}-A{n}",
                    file_name=name,
                    mime_type=mime,
                    size=len(content),
                    sha256=hashlib.sha256(content).hexdigest(),
                    kind=AttachmentKind(kind),
                    invoice_number=f"26{rng.randint(10**17, 10**18 - 1)}" if kind == "INVOICE" else None,
                )
                attachments.append(meta)
                if index == embedded_index:
                    embedded[meta.attachment_id] = content
                else:
                    files[name] = content
        paper = rng.choice((0, 1, 1, 2, 3))  # 纸质原始凭证 that never became files

        vouchers.append(Voucher(
            voucher_id=voucher_id,
            org_code=org.code,
            org_name=org.short_name,
            fonds_code=org.fonds_code,
            fiscal_year=year,
            period=period,
            voucher_word=event.word,
            voucher_no=numbers[event.word],
            date=date,
            currency="CNY",
            attachment_count=len(attachments) + paper,
            preparer=rng.choice(org.preparers),
            reviewer=org.reviewer,
            bookkeeper=org.bookkeeper,
            cashier=org.cashier if event.word in ("收", "付") else None,
            summary=event.summary,
            entries=_entries(event),
            attachments=tuple(attachments),
            archive=_archive(org, period, index) if period in ARCHIVED_PERIODS else None,
        ))
    return vouchers, files, embedded


def _amount(rng: random.Random, low: float, high: float) -> Decimal:
    cents = rng.randint(int(low * 100), int(high * 100))
    if rng.random() < 0.3 and cents > 100_000:  # people like round sums: 3 200.00, 58 000.00
        cents = max(cents // 10_000 * 10_000, int(low * 100) // 10_000 * 10_000 + 10_000)
    return Decimal(cents) / 100


def _entries(event: Event) -> tuple[Entry, ...]:
    # 先借后贷: debit lines first, as printed vouchers show them
    ordered = sorted(event.lines, key=lambda line: line.debit == 0)
    return tuple(
        Entry(
            line_no=n,
            summary=line.summary,
            account_code=line.account,
            account_name=catalog.ACCOUNTS[line.account],
            debit=line.debit.quantize(Decimal("0.01")),
            credit=line.credit.quantize(Decimal("0.01")),
            currency=line.currency,
            exchange_rate=line.exchange_rate,
            original_amount=line.original_amount,
            auxiliary=line.auxiliary,
        )
        for n, line in enumerate(ordered, 1)
    )


def _archive(org: catalog.Org, period: str, index: int) -> ArchiveInfo:
    year = period[:4]
    return ArchiveInfo(
        archival_code=f"{org.fonds_code}-KJ·{year}-Y30-{period[5:]}{index + 1:04d}",
        category="会计凭证",
        retention=Retention.Y30,  # 会计凭证 30 年 (财政部 国家档案局令第79号)
        archived_at=dt.datetime(2026, 10, 15, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))),
    )


def generate(outdir: Path, per_batch: int = VOUCHERS_PER_BATCH) -> list[Path]:
    """Write every batch and attachment file into ``outdir``; return the batch files.

    One batch per organisation and period, ``per_batch`` vouchers each.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "attachments").mkdir(exist_ok=True)
    written = []
    for org in catalog.ORGS:
        for period in catalog.PERIODS:
            vouchers, files, embedded = build_batch(org, period, per_batch)
            for name, content in files.items():
                (outdir / "attachments" / name).write_bytes(content)
            path = outdir / f"{org.code}-{period}.xml"
            path.write_bytes(vouchers_to_xml(vouchers, embedded, pretty=True))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m archive_oa.samples.generate", description=__doc__.split("\n")[0])
    parser.add_argument("outdir", type=Path, help="folder for the batch files and attachments/")
    parser.add_argument("--per-batch", type=int, default=VOUCHERS_PER_BATCH, metavar="N",
                        help=f"vouchers per organisation and period (default {VOUCHERS_PER_BATCH}, "
                        "the bundled samples; 1 to 9999)")
    args = parser.parse_args(argv)
    if not 1 <= args.per_batch <= 9999:
        parser.error(f"--per-batch {args.per_batch}: give 1 to 9999")
    for path in generate(args.outdir, args.per_batch):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
