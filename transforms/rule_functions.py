"""XPath functions the business rules call where XPath 1.0 itself falls short: exact money.

XPath 1.0 numbers are binary doubles.  ``sum()`` of amounts above ~9×10^13 loses cents, so
a balanced voucher could be refused (and one a cent off could pass) although voucher.xsd
allows amounts of 18 digits.  voucher-rules.sch therefore adds amounts with
``arc:exact-sum`` (``xmlns:arc="urn:archive-oa:rules:1"``), computed in ``Decimal``; the
Schematron XSLT and the pre-check compiled from the same file both get it from
``EXTENSIONS``, and so does the mapping stylesheet, whose voucher total the OA receives.
"""

from __future__ import annotations

import decimal
from decimal import Decimal

RULES_NS = "urn:archive-oa:rules:1"

_CENT = Decimal("0.01")
#: Wide enough for any sum of schema-valid amounts; whatever would still round raises instead.
_EXACT = decimal.Context(prec=64, traps=[decimal.Inexact, decimal.InvalidOperation])


def exact_sum(_context, amounts) -> str:
    """The exact total of ``amounts`` (schema-valid amount elements: xs:decimal, at most two
    decimals) with exactly two decimals, e.g. ``12345678901234567.89``.

    Equal totals give equal text, so a rule compares two sums with ``=``; the same text
    reads well in the rule's message.
    """
    total = Decimal(0)
    for amount in amounts:
        total = _EXACT.add(total, Decimal(amount.text))
    return format(_EXACT.quantize(total, _CENT), "f")


#: The ``extensions`` argument of ``etree.XSLT`` and ``etree.XPath`` for the rules.
EXTENSIONS = {(RULES_NS, "exact-sum"): exact_sum}
