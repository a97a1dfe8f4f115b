"""The adapter's one clock: aware UTC now.

Every ``clock=`` default and every "now" the adapter takes for itself comes from here, so
a test that injects its own clock replaces the only source of time.  (The OA simulator
keeps its own: it plays another system, whose clock is in the OA's time zone.)
"""

from __future__ import annotations

import datetime as dt


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
