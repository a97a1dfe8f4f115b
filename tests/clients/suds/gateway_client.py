"""The archive gateway called by suds-community, as a Python 2-era OA integration would:
the WSDL is loaded over HTTP, the account goes in suds' own WS-Security UsernameToken and
once in HTTP Basic (``suds.transport.http.HttpAuthenticated``, sent without a challenge).

Usage: python gateway_client.py PLAN.json — prints one JSON line per operation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import traceback
from decimal import Decimal

import suds
from suds.client import Client
from suds.transport.http import HttpAuthenticated
from suds.wsse import Security, UsernameToken


def emit(op: str, values: dict) -> None:
    print(json.dumps({"op": op, **values}, ensure_ascii=False), flush=True)


def attempt(op: str, call) -> None:
    """Run one operation; an exception becomes that operation's error line, the rest go on."""
    try:
        emit(op, call())
    except Exception as exc:  # noqa: BLE001 - reported, not hidden
        emit(op, {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=3)})


def text(value) -> str | None:
    """Decimal (or whatever suds made of a value) as the text the stack holds."""
    return None if value is None else str(value)


def items(wrapper, member: str) -> list:
    """A list element of an array wrapper: suds gives a list when the schema says unbounded."""
    found = getattr(wrapper, member, None) if wrapper is not None else None
    if found is None:
        return []
    return found if isinstance(found, list) else [found]


def client(plan: dict, **options) -> Client:
    return Client(plan["wsdl"], cache=None, timeout=60, **options)


def voucher_line(v) -> dict:
    return {
        "voucherId": v.voucherId,
        "orgName": v.orgName,
        "totalAmount": text(v.totalAmount),
        "entries": [
            {"lineNo": int(e.lineNo), "accountName": e.accountName, "debit": text(e.debit), "credit": text(e.credit)}
            for e in items(v.entries, "entry")
        ],
        "attachments": [
            {"attachmentId": a.attachmentId, "fileName": a.fileName, "size": int(a.size), "sha256": a.sha256}
            for a in items(v.attachments, "attachment")
        ],
    }


def attachment_line(service, attachment_id: str) -> dict:
    r = service.GetAttachment(attachmentId=attachment_id)
    content = base64.b64decode(r.content)  # suds hands base64Binary over as its text
    return {
        "fileName": r.fileName,
        "size": int(r.size),
        "sha256": r.sha256,
        "contentLength": len(content),
        "contentSha256": hashlib.sha256(content).hexdigest(),
    }


def main(plan: dict) -> None:
    emit("_client", {"version": f"suds-community {suds.__version__}, Python {sys.version.split()[0]}"})

    security = Security()
    security.tokens.append(UsernameToken(plan["user"], plan["password"]))
    soap = client(plan, wsse=security)
    service = soap.service

    def ping():
        r = client(plan).service.Ping()  # anonymous
        return {"version": r.version, "serverTime": r.serverTime.isoformat()}

    attempt("Ping", ping)

    def query():
        exact = service.QueryVouchers(orgCode=plan["orgCode"], amountMin=Decimal(plan["amount"]),
                                      amountMax=Decimal(plan["amount"]), page=1, pageSize=50)
        sample = service.QueryVouchers(orgCode=plan["sampleOrgCode"], page=1, pageSize=5)
        return {
            "total": int(exact.total),
            "items": [
                {"voucherId": v.voucherId, "summary": v.summary, "totalAmount": text(v.totalAmount)}
                for v in items(exact["items"], "voucher")
            ],
            "sampleTotal": int(sample.total),
            "sampleOrgCodes": [v.orgCode for v in items(sample["items"], "voucher")],
        }

    attempt("QueryVouchers", query)
    attempt("GetVoucher", lambda: voucher_line(service.GetVoucher(voucherId=plan["voucherId"])))
    attempt("GetVoucherDocument", lambda: {"document": service.GetVoucherDocument(voucherId=plan["voucherId"])})
    attempt("GetAttachment", lambda: attachment_line(service, plan["attachmentId"]))

    def archive():
        a = plan["archive"]
        fields = soap.factory.create("FieldArray")
        for f in a["fields"]:
            field = soap.factory.create("Field")
            field.name, field.value = f["name"], f["value"]
            fields.field.append(field)
        files = soap.factory.create("DocumentAttachmentArray")
        for f in a["attachments"]:
            file = soap.factory.create("DocumentAttachment")
            file.fileName, file.mimeType, file.content = f["fileName"], f["mimeType"], f["base64"]
            files.attachment.append(file)
        r = service.ArchiveDocument(
            sourceSystem=a["sourceSystem"], sourceId=a["sourceId"], docType=a["docType"], orgCode=a["orgCode"],
            period=a["period"], title=a["title"], amount=Decimal(a["amount"]), oaRequestId=a["oaRequestId"],
            fields=fields, attachments=files,
        )
        return {
            "archiveId": r.archiveId,
            "archivalCode": r.archivalCode,
            "duplicate": bool(r.duplicate),
            "readBack": attachment_line(service, f"{r.archiveId}-1"),
        }

    attempt("ArchiveDocument", archive)

    def workflow():
        w = plan["workflow"]
        approvals = soap.factory.create("ApprovalArray")
        for a in w["approvals"]:
            approval = soap.factory.create("Approval")
            for name in ("step", "approver", "action", "comment", "time"):
                setattr(approval, name, a[name])
            approvals.approval.append(approval)
        r = service.SubmitWorkflowResult(oaRequestId=w["oaRequestId"], state=w["state"],
                                         finishedAt=w["finishedAt"], approvals=approvals)
        return {"accepted": bool(r.accepted), "voucherId": r.voucherId, "voucherState": r.voucherState,
                "duplicate": bool(r.duplicate)}

    attempt("SubmitWorkflowResult", workflow)

    def basic():
        transport = HttpAuthenticated(username=plan["user"], password=plan["password"])
        return voucher_line(client(plan, transport=transport).service.GetVoucher(voucherId=plan["voucherId"]))

    attempt("HttpBasic", basic)

    def fault():
        try:
            service.GetVoucher(voucherId=plan["missingVoucherId"])
        except suds.WebFault as exc:
            return {"faultCode": exc.fault.detail.GatewayFault.code, "faultString": exc.fault.faultstring}
        return {"error": "GetVoucher of a missing voucher answered without a fault"}

    attempt("Fault", fault)


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as plan_file:
        main(json.load(plan_file))
