"""Test data the test modules share: vouchers, queued deliveries, passwords, SOAP envelopes.

Each helper takes as parameters what the test modules vary, so that every module builds
exactly the data it built with its own copy before; a module that needs the same values
many times binds them once (``functools.partial``) rather than copying the helper.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Iterable, Sequence

from archive_oa import voucher_xml
from archive_oa.domain.delivery import idempotency_key
from archive_oa.domain.model import AttachmentMeta, AuxiliaryItem, Entry, Voucher, WorkflowState
from archive_oa.store import outbox
from archive_oa.store import vouchers as repo

GW = "urn:archive-oa:gateway:1"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"

#: A password [security] min_password_length (12) accepts, one per user name, with Chinese
#: text in it so that every credential path carries UTF-8.
STRONG_PASSWORD = "pw-{}-密码-2026"


def password(name: str, pattern: str = STRONG_PASSWORD) -> str:
    """The test password of user (or client stack) ``name``."""
    return pattern.format(name)


def voucher(
    voucher_id: str | None = None,
    *,
    org: str = "ORG1",
    org_name: str | None = None,
    fonds: str | None = None,
    period: str = "2024-03",
    day: int = 10,
    no: int = 1,
    word: str = "记",
    preparer: str = "张三",
    summary: str | None = "报销差旅费",
    amount: str | int | Decimal = "100.00",
    debit: tuple[str, str] = ("6602", "管理费用"),
    credit: tuple[str, str] = ("1002", "银行存款"),
    lines: tuple[str, str] | None = None,
    auxiliary: Sequence[AuxiliaryItem] = (),
    attachments: Iterable[AttachmentMeta] = (),
    attachment_count: int | None = None,
    **changes,
) -> Voucher:
    """A balanced voucher of two lines: ``amount`` on the ``debit`` account against ``credit``.

    ``voucher_id`` defaults to ``{org}-{period}-J-{no:04d}`` (the samples' form), ``org_name``
    and ``fonds`` follow ``org``, the lines' texts (``lines``) default to the summary, and
    ``auxiliary`` items go on the debit line; ``attachment_count`` defaults to the number of
    ``attachments``.  Any other field of ``Voucher`` (``entries``,
    ``workflow`` …) is replaced through ``changes``.
    """
    year, month = (int(part) for part in period.split("-"))
    amount = Decimal(amount)
    attachments = tuple(attachments)
    debit_text, credit_text = lines or (summary, summary)
    made = Voucher(
        voucher_id=voucher_id or f"{org}-{period}-J-{no:04d}",
        org_code=org,
        org_name=org_name or f"{org} 有限公司",
        fonds_code=fonds or f"F-{org}",
        fiscal_year=year,
        period=period,
        voucher_word=word,
        voucher_no=no,
        date=dt.date(year, month, day),
        preparer=preparer,
        summary=summary,
        attachment_count=len(attachments) if attachment_count is None else attachment_count,
        attachments=attachments,
        entries=(
            Entry(1, debit_text, *debit, debit=amount, auxiliary=tuple(auxiliary)),
            Entry(2, credit_text, *credit, credit=amount),
        ),
    )
    return dataclasses.replace(made, **changes) if changes else made


#: HD01's travel expenses paid in cash (华东实业), the sync engine's and the importer's vouchers
TRAVEL_BY_CASH = {
    "org_name": "华东实业有限公司", "fonds": "Z001", "day": 8, "preparer": "王芳", "amount": "880.00",
    "credit": ("1001", "库存现金"), "lines": ("报销差旅费", "现金支付"),
}


def queue_vouchers(store, vouchers: Iterable[Voucher], now: dt.datetime) -> list[str]:
    """Store ``vouchers`` and queue each for delivery as the importer does; their idempotency keys."""
    keys = []
    with store.transaction(immediate=True) as conn:
        for made in vouchers:
            content = voucher_xml.canonical_hash(made)
            saved = repo.save_voucher(conn, made, content, now)
            key = idempotency_key(made.voucher_id, content)
            assert outbox.enqueue(conn, voucher_id=made.voucher_id, version=saved.version,
                                  idempotency_key=key, now=now)
            repo.set_workflow(conn, made.voucher_id, state=WorkflowState.QUEUED)
            keys.append(key)
    return keys


def envelope(
    body_xml: str,
    header_xml: str | None = "",
    *,
    namespace: str = SOAP11,
    prefix: str = "soap",
    attributes: str = "",
    declaration: bool = False,
) -> str:
    """A SOAP envelope around ``body_xml`` with the gateway's namespace bound to ``g``.

    ``header_xml`` goes into a Header element (an empty one for ``""``, none for ``None``);
    ``attributes`` are added to the Envelope element as written.
    """
    header = "" if header_xml is None else f"<{prefix}:Header>{header_xml}</{prefix}:Header>"
    start = '<?xml version="1.0" encoding="UTF-8"?>' if declaration else ""
    return (
        f'{start}<{prefix}:Envelope xmlns:{prefix}="{namespace}" xmlns:g="{GW}"{attributes}>'
        f"{header}<{prefix}:Body>{body_xml}</{prefix}:Body></{prefix}:Envelope>"
    )
