"""Archive repository: vouchers with their versions, workflow state and OA request map.

Functions take a ``Connection`` inside the caller's transaction (``Store.transaction``)
so that saving a voucher, enqueueing its delivery and updating its state commit together.
Saving writes with ``executemany`` and statements built once (``insert(table)`` plus a
list of parameter rows): SQLAlchemy then compiles each statement once per process, and
a batch of vouchers costs a few round trips, not a few per voucher.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from sqlalchemy import Connection, bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..domain.model import (
    Approval,
    ArchiveInfo,
    AttachmentKind,
    AttachmentMeta,
    AuxiliaryItem,
    Entry,
    Page,
    Retention,
    Voucher,
    VoucherQuery,
    VoucherSummary,
    WorkflowInfo,
    WorkflowState,
)
from ..errors import Issue, NotFound, ValidationFailed
from .tables import LATEST, attachments, entries, request_map, vouchers
from .tables import approvals as trail_table  # ``approvals`` is also a parameter name

MAX_PAGE_SIZE = 500
_CENT = Decimal("0.01")
_IN_CHUNK = 500  # ids per IN (...) list: far below every driver's parameter limit


@dataclass(frozen=True)
class SaveResult:
    voucher_id: str
    version: int
    created: bool  # False: the same content was already the latest version, nothing written
    row_id: int | None = field(default=None, compare=False)  # the stored version's row (``mark_queued``)


@dataclass(frozen=True)
class RequestMapping:
    external_key: str
    voucher_id: str
    version: int
    oa_request_id: str


# --- writing ---------------------------------------------------------------------------


def save_voucher(conn: Connection, voucher: Voucher, content_hash: str, now: dt.datetime) -> SaveResult:
    """Store ``voucher`` as its newest version unless its content is already the latest."""
    return save_vouchers(conn, [(voucher, content_hash)], now)[0]


def save_vouchers(
    conn: Connection, items: Sequence[tuple[Voucher, str]], now: dt.datetime
) -> list[SaveResult]:
    """``save_voucher`` for each (voucher, content hash) in order, in a few statements.

    The same as saving them one after another: a voucher that comes twice with the same
    content is stored once, with changed content it gets one version per change, in order.
    The latest rows of every voucher id are locked first, in id order (PostgreSQL: savers
    of the same vouchers queue up instead of deadlocking; an id not stored yet is guarded
    by the unique indexes, and the loser of that race gets an IntegrityError to retry).
    """
    latest = _lock_latest(conn, [voucher.voucher_id for voucher, _ in items])
    superseded: list[dict] = []  # stored rows that stop being the latest
    headers: list[dict] = []  # new version rows, in order
    planned: list[tuple[Voucher, _Latest, bool]] = []  # (voucher, its version, created)
    for voucher, content_hash in items:
        known = latest.get(voucher.voucher_id)
        if known is not None and known.content_hash == content_hash:
            planned.append((voucher, known, False))
            continue
        if known is not None and known.header is None:
            superseded.append({"row_id": known.row_id})
        elif known is not None:  # a version of this same batch: it is stored as already superseded
            headers[known.header]["is_latest"] = False
        version = _Latest(known.version + 1 if known else 1, content_hash, header=len(headers))
        headers.append(_header_row(voucher, version.version, content_hash, now))
        latest[voucher.voucher_id] = version
        planned.append((voucher, version, True))
    if superseded:
        conn.execute(_SUPERSEDE, superseded)
    if headers:
        # in id order, as the locks above: two savers inserting the same new ids wait for
        # each other in one order instead of deadlocking (PostgreSQL's unique-index waits)
        conn.execute(insert(vouchers), sorted(headers, key=lambda h: (h["voucher_id"], h["version"])))
        row_ids = _new_row_ids(conn, [(h["voucher_id"], h["version"]) for h in headers])
        for voucher, version, created in planned:
            if created:
                version.row_id = row_ids[voucher.voucher_id, version.version]
    _insert_parts(conn, [(version.row_id, voucher) for voucher, version, created in planned if created])
    return [SaveResult(voucher.voucher_id, v.version, created, v.row_id) for voucher, v, created in planned]


def mark_queued(conn: Connection, row_ids: Sequence[int]) -> None:
    """Set the versions ``row_ids`` (``SaveResult.row_id``) to QUEUED: their delivery is enqueued."""
    if row_ids:
        conn.execute(_MARK_QUEUED, [{"row_id": row_id} for row_id in row_ids])


def set_workflow(
    conn: Connection,
    voucher_id: str,
    *,
    state: WorkflowState,
    oa_request_id: str | None = None,
    decided_at: dt.datetime | None = None,
    approvals: Sequence[Approval] | None = None,
) -> None:
    """Update the workflow part of the latest version; ``approvals`` replace the stored trail."""
    row_id = conn.execute(select(vouchers.c.id).where(vouchers.c.voucher_id == voucher_id, LATEST)).scalar()
    if row_id is None:
        raise NotFound(f"voucher {voucher_id!r} is not in the archive", voucher_id=voucher_id)
    values: dict = {"state": WorkflowState(state).value}
    if oa_request_id is not None:
        values["oa_request_id"] = oa_request_id
    if decided_at is not None:
        values["decided_at"] = decided_at
    conn.execute(update(vouchers).where(vouchers.c.id == row_id).values(**values))
    if approvals is not None:
        conn.execute(delete(trail_table).where(trail_table.c.voucher_row == row_id))
        _insert_approvals(conn, row_id, approvals)


def mark_submitted(conn: Connection, voucher_id: str, *, version: int, oa_request_id: str) -> bool:
    """The delivery of ``version`` reached the OA as ``oa_request_id``: the voucher is SUBMITTED.

    Only while ``version`` is still the latest and undecided (NONE, QUEUED, SUBMITTED):
    a newer version has a delivery of its own, and an outcome that overtook the settle
    is never moved back.  One conditional UPDATE instead of reading the voucher first;
    on PostgreSQL it re-checks its condition after waiting for a concurrent writer's
    row lock.  True when the voucher changed."""
    result = conn.execute(
        _MARK_SUBMITTED, {"b_voucher_id": voucher_id, "b_version": version, "b_oa_request_id": str(oa_request_id)}
    )
    return result.rowcount == 1


def map_request(conn: Connection, *, external_key: str, voucher_id: str, version: int, oa_request_id: str) -> None:
    """Remember which OA request carries which voucher version (idempotent for the same triple).

    One upsert: a new key is inserted, a key mapped to another request is remapped, a key
    already mapped to this request is left as it is."""
    statement = _MAP_REQUEST_PG if conn.dialect.name == "postgresql" else _MAP_REQUEST_SQLITE
    conn.execute(statement, {
        "external_key": external_key, "voucher_id": voucher_id, "version": version,
        "oa_request_id": str(oa_request_id),
    })


# --- reading ---------------------------------------------------------------------------


def load_voucher(conn: Connection, voucher_id: str, *, version: int | None = None) -> Voucher | None:
    """The full voucher (latest version unless ``version`` is given), or None.

    At most four statements whatever the voucher holds, each built once (``_LOAD_*``):
    its row, which also says whether it has attachments and an approval trail, then by
    row id its entries and — only when there are any — its attachment metadata and its
    trail.  No blob is read: attachments are metadata here."""
    if version is None:
        row = conn.execute(_LOAD_LATEST, {"voucher_id": voucher_id}).first()
    else:
        row = conn.execute(_LOAD_VERSION, {"voucher_id": voucher_id, "version": version}).first()
    if row is None:
        return None
    parts = {"row_id": row.id}
    return _voucher(
        row,
        conn.execute(_LOAD_ENTRIES, parts).all(),
        conn.execute(_LOAD_ATTACHMENTS, parts).all() if row.has_attachments else (),
        conn.execute(_LOAD_APPROVALS, parts).all() if row.has_trail else (),
    )


def latest_version(conn: Connection, voucher_id: str) -> tuple[int, str] | None:
    """(version, content_hash) of the latest version, or None."""
    row = conn.execute(
        select(vouchers.c.version, vouchers.c.content_hash).where(vouchers.c.voucher_id == voucher_id, LATEST)
    ).first()
    return (row.version, row.content_hash) if row else None


def voucher_org(conn: Connection, voucher_id: str) -> str | None:
    return conn.execute(
        select(vouchers.c.org_code).where(vouchers.c.voucher_id == voucher_id, LATEST)
    ).scalar()


def org_codes(conn: Connection) -> list[str]:
    """Every organisation the archive holds a voucher of, sorted."""
    query = select(vouchers.c.org_code).where(LATEST).distinct().order_by(vouchers.c.org_code)
    return list(conn.execute(query).scalars())


def count_by_state(conn: Connection, *, org_codes: frozenset[str] | None = None) -> dict[WorkflowState, int]:
    """How many vouchers (latest versions) are in each workflow state; absent states are left out."""
    where = [LATEST]
    if org_codes is not None:
        where.append(vouchers.c.org_code.in_(sorted(org_codes)))
    rows = conn.execute(select(vouchers.c.state, func.count()).where(*where).group_by(vouchers.c.state))
    return {WorkflowState(state): n for state, n in rows}


def workflow_of_latest(conn: Connection) -> dict[str, tuple[WorkflowState, str | None]]:
    """voucher_id -> (state, oa_request_id) of every latest version: for audits and the demo's verdict."""
    rows = conn.execute(select(vouchers.c.voucher_id, vouchers.c.state, vouchers.c.oa_request_id).where(LATEST))
    return {voucher_id: (WorkflowState(state), request_id) for voucher_id, state, request_id in rows}


def find_attachment(conn: Connection, attachment_id: str) -> tuple[AttachmentMeta, str, str] | None:
    """(meta, voucher_id, org_code) of an attachment, preferring the newest version that has it."""
    row = conn.execute(
        select(attachments, vouchers.c.voucher_id, vouchers.c.org_code)
        .join(vouchers, vouchers.c.id == attachments.c.voucher_row)
        .where(attachments.c.attachment_id == attachment_id)
        .order_by(vouchers.c.is_latest.desc(), vouchers.c.version.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return _attachment(row), row.voucher_id, row.org_code


def lookup_request(
    conn: Connection, *, oa_request_id: str | None = None, external_key: str | None = None
) -> RequestMapping | None:
    if (oa_request_id is None) == (external_key is None):
        raise ValueError("give exactly one of oa_request_id and external_key")
    if oa_request_id is not None:
        where = request_map.c.oa_request_id == str(oa_request_id)
    else:
        where = request_map.c.external_key == external_key
    row = conn.execute(select(request_map).where(where)).first()
    if row is None:
        return None
    return RequestMapping(row.external_key, row.voucher_id, row.version, row.oa_request_id)


def query_vouchers(conn: Connection, q: VoucherQuery) -> Page:
    """One page of latest-version summaries matching ``q`` within the caller's scope."""
    issues = paging_issues(q)
    if issues:
        raise ValidationFailed("the query's paging is out of range", issues)
    if q.org_codes is not None and (not q.org_codes or (q.org_code and q.org_code not in q.org_codes)):
        return Page(total=0, page=q.page, page_size=q.page_size, items=())
    where = _query_filters(q, conn.dialect.name)
    total = conn.execute(select(func.count()).select_from(vouchers).where(*where)).scalar_one()
    rows = conn.execute(
        select(
            vouchers.c.voucher_id,
            vouchers.c.org_code,
            vouchers.c.period,
            vouchers.c.voucher_word,
            vouchers.c.voucher_no,
            vouchers.c.date,
            vouchers.c.summary,
            vouchers.c.total_amount,
            vouchers.c.attachment_count,
            vouchers.c.state,
            vouchers.c.archival_code,
        )
        .where(*where)
        .order_by(
            vouchers.c.org_code,
            vouchers.c.period,
            vouchers.c.voucher_word,
            vouchers.c.voucher_no,
            vouchers.c.voucher_id,
        )
        .limit(q.page_size)
        .offset((q.page - 1) * q.page_size)
    ).all()
    items = tuple(
        VoucherSummary(
            voucher_id=r.voucher_id,
            org_code=r.org_code,
            period=r.period,
            voucher_word=r.voucher_word,
            voucher_no=r.voucher_no,
            date=r.date,
            summary=r.summary,
            total_amount=r.total_amount,
            attachment_count=r.attachment_count,
            state=WorkflowState(r.state),
            archival_code=r.archival_code,
        )
        for r in rows
    )
    return Page(total=total, page=q.page, page_size=q.page_size, items=items)


def select_for_sync(
    conn: Connection,
    *,
    org_code: str | None = None,
    period_from: str | None = None,
    period_to: str | None = None,
    voucher_ids: Iterable[str] | None = None,
    states: Iterable[WorkflowState] = (WorkflowState.NONE,),
) -> list[tuple[str, int, str]]:
    """(voucher_id, version, content_hash) of latest versions to deliver, in archive order."""
    where = [LATEST, vouchers.c.state.in_([WorkflowState(s).value for s in states])]
    if org_code:
        where.append(vouchers.c.org_code == org_code)
    if period_from:
        where.append(vouchers.c.period >= period_from)
    if period_to:
        where.append(vouchers.c.period <= period_to)
    order = (vouchers.c.org_code, vouchers.c.period, vouchers.c.voucher_word, vouchers.c.voucher_no)
    columns = (vouchers.c.voucher_id, vouchers.c.version, vouchers.c.content_hash, *order)
    if voucher_ids is None:
        rows = conn.execute(select(*columns).where(*where).order_by(*order)).all()
    else:
        ids = list(dict.fromkeys(voucher_ids))
        rows = []
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            rows.extend(conn.execute(select(*columns).where(*where, vouchers.c.voucher_id.in_(chunk))).all())
        rows.sort(key=lambda r: (r.org_code, r.period, r.voucher_word, r.voucher_no))
    return [(r.voucher_id, r.version, r.content_hash) for r in rows]


# --- helpers ---------------------------------------------------------------------------


def paging_issues(q: VoucherQuery) -> list[Issue]:
    """The paging rule, checked here and reported by QueryVouchers' request check (one rule, one name)."""
    issues = []
    if q.page is None or q.page < 1:
        issues.append(Issue("page", "range", f"page {q.page} must be 1 or more (pages are 1-based)"))
    if q.page_size is None or not 1 <= q.page_size <= MAX_PAGE_SIZE:
        issues.append(Issue("pageSize", "range", f"pageSize {q.page_size} must be between 1 and {MAX_PAGE_SIZE}"))
    return issues


def _query_filters(q: VoucherQuery, dialect: str) -> list:
    c = vouchers.c
    where = [LATEST]
    if q.org_codes is not None:
        where.append(c.org_code.in_(sorted(q.org_codes)))
    if q.org_code:
        where.append(c.org_code == q.org_code)
    if q.period_from:
        where.append(c.period >= q.period_from)
    if q.period_to:
        where.append(c.period <= q.period_to)
    if q.voucher_word:
        where.append(c.voucher_word == q.voucher_word)
    if q.voucher_no_from is not None:
        where.append(c.voucher_no >= q.voucher_no_from)
    if q.voucher_no_to is not None:
        where.append(c.voucher_no <= q.voucher_no_to)
    if q.state is not None:
        where.append(c.state == WorkflowState(q.state).value)
    # Amounts are whole cents: round the bounds inwards, exactly equivalent and bindable.
    if q.amount_min is not None:
        where.append(c.total_amount >= Decimal(q.amount_min).quantize(_CENT, rounding=ROUND_CEILING))
    if q.amount_max is not None:
        where.append(c.total_amount <= Decimal(q.amount_max).quantize(_CENT, rounding=ROUND_FLOOR))
    if q.keyword:
        where.append(
            or_(
                _contains(c.summary, q.keyword, dialect),
                # one pass over the entries (a semi-join), not one probe per voucher
                c.id.in_(select(entries.c.voucher_row).where(_contains(entries.c.summary, q.keyword, dialect))),
            )
        )
    return where


def _contains(column, keyword: str, dialect: str):
    """Case-insensitive substring match; ``%`` and ``_`` in the keyword are literal (autoescape).

    SQLite's LIKE already ignores ASCII case, and ``lower()`` on every row would only slow it.
    """
    if dialect == "sqlite":
        return column.contains(keyword, autoescape=True)
    return column.icontains(keyword, autoescape=True)


# Statements of ``save_vouchers``, built once; executed with lists of parameter rows.
_SUPERSEDE = update(vouchers).where(vouchers.c.id == bindparam("row_id")).values(is_latest=False)
_MARK_QUEUED = (
    update(vouchers).where(vouchers.c.id == bindparam("row_id")).values(state=WorkflowState.QUEUED.value)
)
_VERSION_ROWS = select(vouchers.c.id, vouchers.c.voucher_id, vouchers.c.version).where(
    vouchers.c.voucher_id.in_(bindparam("ids", expanding=True))
)
_LATEST_ROWS = (
    select(vouchers.c.id, vouchers.c.voucher_id, vouchers.c.version, vouchers.c.content_hash)
    .where(vouchers.c.voucher_id.in_(bindparam("ids", expanding=True)), LATEST)
    .order_by(vouchers.c.voucher_id)
    .with_for_update()  # PostgreSQL locks in the sorted order; SQLite's BEGIN IMMEDIATE already excludes
)


# Statements of the delivery settle (``mark_submitted``, ``map_request``), built once.
_UNDECIDED = [state.value for state in WorkflowState if not state.decided]
_MARK_SUBMITTED = (
    update(vouchers)
    .where(
        vouchers.c.voucher_id == bindparam("b_voucher_id"),
        LATEST,
        vouchers.c.version == bindparam("b_version"),
        vouchers.c.state.in_(_UNDECIDED),
    )
    .values(state=WorkflowState.SUBMITTED.value, oa_request_id=bindparam("b_oa_request_id"))
)


def _map_request_upsert(dialect_insert):
    statement = dialect_insert(request_map)  # the values come as parameters named by column
    return statement.on_conflict_do_update(
        index_elements=[request_map.c.external_key],
        set_={
            "voucher_id": statement.excluded.voucher_id,
            "version": statement.excluded.version,
            "oa_request_id": statement.excluded.oa_request_id,
        },
        where=request_map.c.oa_request_id != statement.excluded.oa_request_id,
    )


_MAP_REQUEST_SQLITE = _map_request_upsert(sqlite_insert)
_MAP_REQUEST_PG = _map_request_upsert(postgresql_insert)


# Statements of ``load_voucher``, built once.  Separate statements by row id beat one
# joined statement on SQLite (measured: a join repeats the voucher's columns on every
# entry row); each is a cached execution, no compilation.  They read only the columns a
# ``Voucher`` holds; the row says whether the parts many vouchers lack exist (an index
# probe each), so those are not asked for in vain.
_HEADER_COLUMNS = [
    *(column for column in vouchers.c if column.name not in ("is_latest", "content_hash", "version", "created_at")),
    exists().where(attachments.c.voucher_row == vouchers.c.id).label("has_attachments"),
    exists().where(trail_table.c.voucher_row == vouchers.c.id).label("has_trail"),
]
_LOAD_LATEST = select(*_HEADER_COLUMNS).where(vouchers.c.voucher_id == bindparam("voucher_id"), LATEST)
_LOAD_VERSION = select(*_HEADER_COLUMNS).where(
    vouchers.c.voucher_id == bindparam("voucher_id"), vouchers.c.version == bindparam("version")
)
#: The columns ``_entry`` unpacks, in its order.
_ENTRY_COLUMNS = (
    entries.c.line_no,
    entries.c.summary,
    entries.c.account_code,
    entries.c.account_name,
    entries.c.debit,
    entries.c.credit,
    entries.c.currency,
    entries.c.exchange_rate,
    entries.c.original_amount,
    entries.c.auxiliary,
)
_LOAD_ENTRIES = (
    select(*_ENTRY_COLUMNS)
    .where(entries.c.voucher_row == bindparam("row_id"))
    .order_by(entries.c.line_no, entries.c.id)
)
_LOAD_ATTACHMENTS = (
    select(attachments).where(attachments.c.voucher_row == bindparam("row_id")).order_by(attachments.c.position)
)
_LOAD_APPROVALS = (
    select(trail_table.c.step, trail_table.c.approver, trail_table.c.action, trail_table.c.comment, trail_table.c.time)
    .where(trail_table.c.voucher_row == bindparam("row_id"))
    .order_by(trail_table.c.step, trail_table.c.id)
)


@dataclass
class _Latest:
    """A voucher's latest version while ``save_vouchers`` plans: stored, or new in the batch."""

    version: int
    content_hash: str
    row_id: int | None = None  # known once stored (a new row: after its insert)
    header: int | None = None  # a new row: its place in the batch's header rows


def _lock_latest(conn: Connection, voucher_ids: Iterable[str]) -> dict[str, _Latest]:
    """The latest stored version of each voucher id that has one, locked until commit."""
    ordered = sorted(set(voucher_ids))
    found: dict[str, _Latest] = {}
    for start in range(0, len(ordered), _IN_CHUNK):
        for row in conn.execute(_LATEST_ROWS, {"ids": ordered[start : start + _IN_CHUNK]}):
            found[row.voucher_id] = _Latest(row.version, row.content_hash, row_id=row.id)
    return found


def _new_row_ids(conn: Connection, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """(voucher_id, version) -> row id of rows just inserted.

    Read back rather than RETURNING: SQLite can return ids of a many-row insert in order
    only one row at a time, and a read of a few hundred rows by index is cheaper.
    """
    wanted = set(keys)
    ordered = sorted({voucher_id for voucher_id, _ in wanted})
    found = {}
    for start in range(0, len(ordered), _IN_CHUNK):
        for row in conn.execute(_VERSION_ROWS, {"ids": ordered[start : start + _IN_CHUNK]}):
            if (row.voucher_id, row.version) in wanted:
                found[row.voucher_id, row.version] = row.id
    return found


def _insert_parts(conn: Connection, stored: Sequence[tuple[int, Voucher]]) -> None:
    """Entries, attachment metadata and approval trails of new version rows, one executemany each."""
    entry_rows, attachment_rows, approval_rows = [], [], []
    for row_id, voucher in stored:
        entry_rows.extend(_entry_row(row_id, entry) for entry in voucher.entries)
        attachment_rows.extend(
            _attachment_row(row_id, position, meta) for position, meta in enumerate(voucher.attachments)
        )
        if voucher.workflow:
            approval_rows.extend(_approval_row(row_id, a) for a in voucher.workflow.approvals)
    for table, rows in ((entries, entry_rows), (attachments, attachment_rows), (trail_table, approval_rows)):
        if rows:
            conn.execute(insert(table), rows)


def _header_row(voucher: Voucher, version: int, content_hash: str, now: dt.datetime) -> dict:
    workflow = voucher.workflow or WorkflowInfo()
    archive = voucher.archive or ArchiveInfo()
    return {
        "voucher_id": voucher.voucher_id,
        "version": version,
        "is_latest": True,
        "content_hash": content_hash,
        "org_code": voucher.org_code,
        "org_name": voucher.org_name,
        "fonds_code": voucher.fonds_code,
        "fiscal_year": voucher.fiscal_year,
        "period": voucher.period,
        "voucher_word": voucher.voucher_word,
        "voucher_no": voucher.voucher_no,
        "date": voucher.date,
        "currency": voucher.currency,
        "total_amount": voucher.total_amount,
        "attachment_count": voucher.attachment_count,
        "preparer": voucher.preparer,
        "reviewer": voucher.reviewer,
        "bookkeeper": voucher.bookkeeper,
        "cashier": voucher.cashier,
        "summary": voucher.summary,
        "state": WorkflowState(workflow.state).value,
        "oa_request_id": workflow.oa_request_id,
        "decided_at": workflow.decided_at,
        "archival_code": archive.archival_code,
        "archive_category": archive.category,
        "retention": archive.retention.value if archive.retention else None,
        "archived_at": archive.archived_at,
        "created_at": now,
    }


def _entry_row(row_id: int, entry: Entry) -> dict:
    auxiliary = None
    if entry.auxiliary:
        auxiliary = json.dumps(
            [{"type": a.type, "code": a.code, "name": a.name} for a in entry.auxiliary], ensure_ascii=False
        )
    return {
        "voucher_row": row_id,
        "line_no": entry.line_no,
        "summary": entry.summary,
        "account_code": entry.account_code,
        "account_name": entry.account_name,
        "debit": entry.debit,
        "credit": entry.credit,
        "currency": entry.currency,
        "exchange_rate": entry.exchange_rate,
        "original_amount": entry.original_amount,
        "auxiliary": auxiliary,
    }


def _attachment_row(row_id: int, position: int, meta: AttachmentMeta) -> dict:
    return {
        "voucher_row": row_id,
        "position": position,
        "attachment_id": meta.attachment_id,
        "file_name": meta.file_name,
        "mime_type": meta.mime_type,
        "size": meta.size,
        "sha256": meta.sha256,
        "kind": AttachmentKind(meta.kind).value,
        "invoice_number": meta.invoice_number,
    }


def _insert_approvals(conn: Connection, row_id: int, trail: Sequence[Approval]) -> None:
    if trail:
        conn.execute(insert(trail_table), [_approval_row(row_id, a) for a in trail])


def _approval_row(row_id: int, approval: Approval) -> dict:
    return {
        "voucher_row": row_id,
        "step": approval.step,
        "approver": approval.approver,
        "action": approval.action,
        "comment": approval.comment,
        "time": approval.time,
    }


def _attachment(row) -> AttachmentMeta:
    return AttachmentMeta(
        attachment_id=row.attachment_id,
        file_name=row.file_name,
        mime_type=row.mime_type,
        size=row.size,
        sha256=row.sha256,
        kind=AttachmentKind(row.kind),
        invoice_number=row.invoice_number,
    )


def _voucher(row, entry_rows, attachment_rows, approval_rows) -> Voucher:
    trail = tuple(
        Approval(step, approver, action, comment, time) for step, approver, action, comment, time in approval_rows
    )
    workflow = WorkflowInfo(WorkflowState(row.state), row.oa_request_id, row.decided_at, trail)
    archive = ArchiveInfo(
        archival_code=row.archival_code,
        category=row.archive_category,
        retention=Retention(row.retention) if row.retention else None,
        archived_at=row.archived_at,
    )
    return Voucher(
        voucher_id=row.voucher_id,
        org_code=row.org_code,
        org_name=row.org_name,
        fonds_code=row.fonds_code,
        fiscal_year=row.fiscal_year,
        period=row.period,
        voucher_word=row.voucher_word,
        voucher_no=row.voucher_no,
        date=row.date,
        preparer=row.preparer,
        entries=tuple(_entry(e) for e in entry_rows),
        currency=row.currency,
        attachment_count=row.attachment_count,
        reviewer=row.reviewer,
        bookkeeper=row.bookkeeper,
        cashier=row.cashier,
        summary=row.summary,
        attachments=tuple(_attachment(a) for a in attachment_rows),
        # An untouched part reads back as absent, the way a voucher without it was saved.
        archive=None if archive == ArchiveInfo() else archive,
        workflow=None if workflow == WorkflowInfo() else workflow,
    )


def _entry(row) -> Entry:
    """An entry from a row of ``_ENTRY_COLUMNS``."""
    line_no, summary, account_code, account_name, debit, credit, currency, rate, original, auxiliary = row
    return Entry(
        line_no=line_no,
        summary=summary,
        account_code=account_code,
        account_name=account_name,
        debit=debit,
        credit=credit,
        currency=currency,
        exchange_rate=rate,
        original_amount=original,
        auxiliary=_auxiliary(auxiliary) if auxiliary else (),
    )


@functools.lru_cache(maxsize=4096)
def _auxiliary(text: str) -> tuple[AuxiliaryItem, ...]:
    """An entry's 辅助核算 items from their JSON.  The same few combinations (department,
    project, employee) recur on many entries and the items are immutable: each text is
    decoded once per process, not once per entry read."""
    return tuple(AuxiliaryItem(a["type"], a["code"], a["name"]) for a in json.loads(text))
