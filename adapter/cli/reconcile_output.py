"""``archive-oa reconcile`` output: a table for people, CSV for spreadsheets, JSON for scripts."""

from __future__ import annotations

import csv
import io
import json
from typing import Sequence

CSV_COLUMNS = ("finding", "voucher_id", "oa_request_id", "archive_state", "oa_state", "detail")


def render(report, requeued: Sequence | None, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(as_dict(report, requeued), ensure_ascii=False, indent=2)
    if fmt == "csv":
        return as_csv(report, requeued)
    return as_table(report, requeued)


def as_dict(report, requeued: Sequence | None) -> dict:
    data = {
        "orgCode": report.org_code,
        "period": report.period,
        "checked": report.checked,
        "missingInOa": list(report.missing_in_oa),
        "orphanedInOa": list(report.orphaned_in_oa),
        "stateMismatches": [
            {"voucherId": m.voucher_id, "archiveState": m.archive_state.value, "oaState": m.oa_state.value,
             "oaRequestId": m.oa_request_id}
            for m in report.state_mismatches
        ],
        "notes": list(report.notes),
    }
    if requeued is not None:
        data["requeued"] = [
            {"voucherId": r.voucher_id, "action": r.action, "deliveryId": r.delivery_id, "detail": r.detail}
            for r in requeued
        ]
    return data


def rows(report, requeued: Sequence | None) -> list[tuple]:
    """One row per finding, in CSV_COLUMNS order."""
    found = [("missing_in_oa", v, "", "", "", "the OA holds no request for the voucher's key")
             for v in report.missing_in_oa]
    found += [("orphaned_in_oa", "", r, "", "", "an OA request with one of our keys the archive does not map")
              for r in report.orphaned_in_oa]
    found += [("state_mismatch", m.voucher_id, m.oa_request_id, m.archive_state.value, m.oa_state.value, "")
              for m in report.state_mismatches]
    found += [(f"requeue_{r.action}", r.voucher_id, "", "", "", r.detail) for r in requeued or ()]
    return found


def as_csv(report, requeued: Sequence | None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows(report, requeued))
    return out.getvalue().rstrip("\n")


def as_table(report, requeued: Sequence | None) -> str:
    from .output import table as _table

    parts = [_table(["org", "period", "checked", "missing in OA", "orphaned in OA", "state mismatches"],
                    [[report.org_code, report.period, report.checked, len(report.missing_in_oa),
                      len(report.orphaned_in_oa), len(report.state_mismatches)]])]
    found = rows(report, None)
    if found:
        parts.append(_table(["finding", "voucher", "OA request", "archive", "OA"], [list(r[:5]) for r in found]))
    if requeued is not None:
        parts.append(_table(["requeue", "voucher", "delivery", "detail"],
                            [[r.action, r.voucher_id, r.delivery_id or "-", _clip(r.detail)] for r in requeued])
                     if requeued else "requeue: nothing was missing")
    return "\n\n".join(parts)


def _clip(text: str, limit: int = 110) -> str:
    """A table cell stays one readable line; csv and json carry the whole text."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
