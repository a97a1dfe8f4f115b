"""Role × operation × scope, generated from the gateway's ``OPERATION_ACCESS`` table.

Every operation is called over loopback HTTP by a user of every role — viewer,
archivist, operator, admin, auditor — scoped to ORG1, and by a caller without
credentials, once about ORG1's data (in scope) and once about ORG2's (out of scope).
The expected outcome is computed here from the role ranking of PRODUCT.md §7, not read
back from the code under test:

- an operation that needs no role answers everyone;
- no credentials → ``Authentication``; a role below the operation's → ``AccessDenied``;
- allowed and in scope → an answer, and only ORG1's data in it;
- allowed and out of scope → ``AccessDenied`` where the operation names an organisation
  (``Access.org_arg``), ``NotFound`` where it names a record by id, and for
  ``QueryVouchers`` an empty page whose ``total`` is 0: out-of-scope data is never
  returned, nor counted.

Each cell also checks that the call left one audit record with that outcome.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid

import pytest
import requests
import sqlalchemy as sa
import zeep
from requests.auth import HTTPBasicAuth
from zeep.exceptions import Fault
from zeep.transports import Transport

from archive_oa.domain.model import AttachmentKind, AttachmentMeta, WorkflowState
from archive_oa.gateway.app import make_gateway_app
from archive_oa.gateway.auth import OPERATION_ACCESS, PasswordAuthenticator
from archive_oa.gateway.context import GatewayServices
from archive_oa.gateway.server import start_gateway
from archive_oa.services.archive import ArchiveService
from archive_oa.services.sync import SyncService
from archive_oa.services.users import UserService
from archive_oa.settings import load_settings
from archive_oa.store import outbox
from archive_oa.store import vouchers as voucher_repo
from archive_oa.store.engine import open_store
from archive_oa.transforms.pipeline import Transforms
from archive_oa.voucher_xml import canonical_hash

import factories
from factories import voucher
from fakes import FakeOa

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 3, 5, 8, 0, tzinfo=UTC)
GW = "urn:archive-oa:gateway:1"
INVOICE = b"%PDF-1.4 invoice"

#: PRODUCT.md §7: viewer < archivist < operator < admin; auditor outside the ranks.
RANK = {"viewer": 1, "archivist": 2, "operator": 3, "admin": 4}
ROLES = ("viewer", "archivist", "operator", "admin", "auditor", "none")
SCOPES = ("in", "out")
IN_ORG, OUT_ORG = "ORG1", "ORG2"


def user_of(role: str) -> str | None:
    return None if role == "none" else f"{role}-{IN_ORG.lower()}"


password = functools.partial(factories.password, pattern="pw-{}")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("matrix"),
        env={"ARCHIVE_OA_SECURITY_SLOWDOWN_AFTER": "100000", "ARCHIVE_OA_SECURITY_LOCKOUT_AFTER": "100000"},
    )
    store = open_store(settings)
    users = UserService(store, settings=settings)
    for role in ROLES:
        if role != "none":
            users.add_user(user_of(role), password(user_of(role)), {role}, {IN_ORG})
    sha = store.blobs.put(INVOICE)

    def attachment(attachment_id):
        return AttachmentMeta(attachment_id, "发票.pdf", "application/pdf", len(INVOICE), sha, AttachmentKind.INVOICE, None)

    data = {
        IN_ORG: voucher("V-IN", org=IN_ORG, no=1, attachments=[attachment("ATT-IN")]),
        OUT_ORG: voucher("V-OUT", org=OUT_ORG, no=1, attachments=[attachment("ATT-OUT")]),
    }
    with store.transaction(immediate=True) as conn:
        for org, v in data.items():
            voucher_repo.save_voucher(conn, v, canonical_hash(v), NOW)
            key = f"{v.voucher_id}:{canonical_hash(v)[:16]}"
            outbox.enqueue(conn, voucher_id=v.voucher_id, version=1, idempotency_key=key, now=NOW)
            request_id = "8001" if org == IN_ORG else "8002"
            voucher_repo.map_request(conn, external_key=key, voucher_id=v.voucher_id, version=1, oa_request_id=request_id)
            voucher_repo.set_workflow(conn, v.voucher_id, state=WorkflowState.SUBMITTED, oa_request_id=request_id)
    # One more ORG2 voucher that any unscoped query would count.
    extra = voucher("V-OUT-2", org=OUT_ORG, no=2)
    with store.transaction(immediate=True) as conn:
        voucher_repo.save_voucher(conn, extra, canonical_hash(extra), NOW)
    sync = SyncService(store, FakeOa())
    jobs = {org: sync.trigger(org_code=org).job_id for org in (IN_ORG, OUT_ORG)}
    services = GatewayServices(store=store, archive=ArchiveService(store, Transforms.from_settings()),
                               authenticator=PasswordAuthenticator(users), sync=sync)
    handle = start_gateway(make_gateway_app(settings, services), "127.0.0.1", 0)
    yield {"handle": handle, "store": store, "jobs": jobs, "clients": {}}
    handle.stop()
    store.dispose()


def arguments(operation: str, scope: str, role: str, jobs) -> dict:
    """The call's arguments: about ORG1's data (in) or ORG2's (out)."""
    org = IN_ORG if scope == "in" else OUT_ORG
    suffix = "IN" if scope == "in" else "OUT"
    finished = dt.datetime(2024, 3, 6, 10, 0, tzinfo=UTC)
    return {
        "Ping": {},
        "QueryVouchers": dict(orgCode=None if scope == "in" else org, page=1, pageSize=500),
        "GetVoucher": dict(voucherId=f"V-{suffix}"),
        "GetVoucherDocument": dict(voucherId=f"V-{suffix}"),
        "GetAttachment": dict(attachmentId=f"ATT-{suffix}"),
        "ArchiveDocument": dict(sourceSystem="matrix", sourceId=f"M-{role}-{scope}", docType="OTHER", orgCode=org,
                                period="2024-03", title="矩阵"),
        "SubmitWorkflowResult": dict(oaRequestId="8001" if scope == "in" else "8002", state="APPROVED",
                                     finishedAt=finished),
        "TriggerSync": dict(orgCode=org),
        "GetSyncStatus": dict(jobId=jobs[org]),
        "ReconcilePeriod": dict(orgCode=org, period="2024-03"),
    }[operation]


def expected(operation: str, role: str, scope: str) -> str:
    access = OPERATION_ACCESS[operation]
    if access.role is None:
        return "OK"
    if role == "none":
        return "Authentication"
    if RANK.get(role, 0) < RANK[access.role]:
        return "AccessDenied"
    if scope == "in":
        return "OK"
    if access.org_arg:
        return "AccessDenied"  # the request itself names an organisation outside the scope
    if operation == "QueryVouchers":
        return "OK"  # a filter: the page is empty and total is 0, checked below
    return "NotFound"  # a record named by id: out of scope is indistinguishable from absent


#: Known gaps: (operation, scope) → why.  Strict xfail: fixing the gap turns these red
#: until the entry is removed.
KNOWN_GAPS: dict[tuple[str, str], str] = {}  # (operation, scope) -> why it is not yet refused

CELLS = [
    pytest.param(operation, role, scope, id=f"{operation}-{role}-{scope}", marks=(
        [pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[(operation, scope)])]
        if (operation, scope) in KNOWN_GAPS and expected(operation, role, scope) == "NotFound" else []
    ))
    for operation in sorted(OPERATION_ACCESS)
    for role in ROLES
    for scope in SCOPES
]


def client(gateway, user: str | None):
    if user not in gateway["clients"]:
        session = requests.Session()
        if user:
            session.auth = HTTPBasicAuth(user, password(user))
        gateway["clients"][user] = (zeep.Client(gateway["handle"].wsdl_url, transport=Transport(session=session)),
                                    session)
    return gateway["clients"][user]


def audit_outcomes(gateway, correlation_id: str) -> list[str]:
    from archive_oa.store.audit_tables import audit_log

    with gateway["store"].transaction() as conn:
        rows = conn.execute(sa.select(audit_log.c.outcome).where(audit_log.c.correlation_id == correlation_id))
        return [row.outcome for row in rows]


@pytest.mark.parametrize("operation, role, scope", CELLS)
def test_matrix(gateway, operation, role, scope):
    zeep_client, session = client(gateway, user_of(role))
    correlation_id = uuid.uuid4().hex
    session.headers["X-Correlation-Id"] = correlation_id
    try:
        result = getattr(zeep_client.service, operation)(**arguments(operation, scope, role, gateway["jobs"]))
        outcome = "OK"
    except Fault as fault:
        result, outcome = None, fault.detail.find(f"{{{GW}}}GatewayFault/{{{GW}}}code").text
    finally:
        session.headers.pop("X-Correlation-Id", None)
    assert outcome == expected(operation, role, scope)
    assert audit_outcomes(gateway, correlation_id) == [outcome]
    if outcome == "OK":
        assert_only_in_scope_data(operation, scope, result)


def assert_only_in_scope_data(operation: str, scope: str, result) -> None:
    if operation == "QueryVouchers":
        items = result["items"]["voucher"] if result["items"] else []
        if scope == "in":
            assert result.total == len(items) == 1 and items[0].orgCode == IN_ORG
        else:
            assert result.total == 0 and not items
    elif operation in ("GetVoucher",):
        assert result.orgCode == IN_ORG
    elif operation == "GetVoucherDocument":
        assert f"<orgCode>{IN_ORG}</orgCode>" in result and OUT_ORG not in result
    elif operation == "GetAttachment":
        assert result.content == INVOICE and result.attachmentId == "ATT-IN"
    elif operation == "ReconcilePeriod":
        assert result.orgCode == IN_ORG and "V-OUT" not in str(result)
    elif operation == "TriggerSync":
        assert result.jobId


def test_matrix_covers_every_operation_and_role():
    """A new operation or role joins the matrix by itself; its arguments must be written."""
    cells = {(c.values[0], c.values[1], c.values[2]) for c in CELLS}
    assert len(cells) == len(OPERATION_ACCESS) * len(ROLES) * len(SCOPES)
    for operation in OPERATION_ACCESS:
        for scope in SCOPES:
            arguments(operation, scope, "viewer", {IN_ORG: "j1", OUT_ORG: "j2"})  # KeyError: add it above
    roles_used = {access.role for access in OPERATION_ACCESS.values()} - {None}
    assert roles_used <= set(RANK), roles_used


def test_keyword_matching_both_organisations_counts_only_the_scope(gateway):
    viewer, _ = client(gateway, user_of("viewer"))
    scoped = viewer.service.QueryVouchers(keyword="差旅", page=1, pageSize=1)
    assert scoped.total == 1  # the unscoped truth is 3: V-IN, V-OUT, V-OUT-2
    with gateway["store"].transaction() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM vouchers")).scalar_one() == 3
