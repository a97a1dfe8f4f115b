"""Column types that behave the same on SQLite and PostgreSQL.

SQLite has neither a decimal nor a time-zone-aware timestamp type: without these
decorators a ``Numeric`` column round-trips through ``float`` (and SQLAlchemy warns)
and a ``DateTime(timezone=True)`` comes back naive.  Every table of the store uses
``Money`` for amounts and ``UtcDateTime`` for instants.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import BigInteger, DateTime, Numeric, String
from sqlalchemy.types import TypeDecorator

_CENT = Decimal("0.01")


class Money(TypeDecorator):
    """An amount with at most 2 fraction digits, exact: ``NUMERIC(20, 2)``.

    On SQLite the value is stored as integer cents (exact, comparable, indexable),
    elsewhere as ``NUMERIC(20, 2)``.  Python side it is always a ``Decimal``.
    """

    impl = Numeric(20, 2, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(20, 2, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        amount = Decimal(value)
        if amount != amount.quantize(_CENT):
            raise ValueError(f"amount {amount} has more than 2 fraction digits")
        if dialect.name == "sqlite":
            return int(amount.scaleb(2))
        return amount

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-2).quantize(_CENT)
        return Decimal(value).quantize(_CENT)


class DecimalText(TypeDecorator):
    """A decimal of any scale kept exactly as text (rates, foreign amounts): never compared in SQL."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else str(Decimal(value))

    def process_result_value(self, value, dialect):
        return None if value is None else Decimal(value)


class UtcDateTime(TypeDecorator):
    """A time-zone-aware instant, stored as UTC, read back as an aware UTC ``datetime``.

    Naive values are refused: an instant without a zone is a bug waiting to happen.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"datetime {value!r} has no time zone; pass an aware datetime")
        value = value.astimezone(dt.timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)  # stored as ISO text, in UTC by convention
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)
