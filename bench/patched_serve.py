"""``archive-oa serve`` with what-if patches, for experiment_gateway.py only (never for production).

BENCH_NO_SPYNE_GC=1   spyne runs no gc.collect() after each request (its MIN_GC_INTERVAL of 1 s)
BENCH_CACHE_VERIFY=1  a verified (password, hash) pair is remembered: scrypt once per user, not per request
"""

from __future__ import annotations

import functools
import math
import os
import sys

if os.environ.get("BENCH_NO_SPYNE_GC") == "1":
    import spyne.const

    spyne.const.MIN_GC_INTERVAL = math.inf

if os.environ.get("BENCH_CACHE_VERIFY") == "1":
    import archive_oa.services.users as users

    users.verify_password = functools.lru_cache(maxsize=1024)(users.verify_password)

from archive_oa.cli.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
