"""Waiting for something another thread or process does, bounded: a test never hangs."""

from __future__ import annotations

import time


def eventually(predicate, seconds: float = 5.0):
    """``predicate()``'s first truthy result within ``seconds`` (polled every 50 ms), else AssertionError."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
