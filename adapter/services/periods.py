"""The accounting period ``YYYY-MM`` as callers write it: one check and one rule name for
every service that takes a period (queries, documents, sync triggers, reconciliation)."""

from __future__ import annotations

import re

from ..errors import Issue

_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def period_issue(place: str, value: str) -> Issue | None:
    """The issue of a period that is not ``YYYY-MM`` with month 01-12; None for a good one."""
    if _PERIOD.match(value):
        return None
    return Issue(place, "period-format", f"{place} {value!r} is not a period; write YYYY-MM, e.g. 2024-03")
