"""Moved: ``enqueue_many`` and ``NewDelivery`` live in ``outbox`` and share ``enqueue``'s row.

Kept only for ``tests/test_store.py``, which still imports from here; delete this
module once that test imports from ``outbox``.
"""

from .outbox import NewDelivery, enqueue_many

__all__ = ["NewDelivery", "enqueue_many"]
