"""Run one import in a process of its own and print its time and peak RSS as JSON (B4).

    python bench/import_child.py DATA_DIR VOUCHER_DIR
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dataset import prepare_store  # noqa: E402


def main() -> None:
    data_dir, voucher_dir = Path(sys.argv[1]), Path(sys.argv[2])
    started = time.perf_counter()
    report = prepare_store(data_dir, voucher_dir, enqueue=True)  # real-time mode: import queues deliveries
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds (all threads) beside the wall time: on a shared machine the wall time moves
    # with the neighbours' load, the CPU time much less
    print(json.dumps({"created": report.created, "seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024,
                      "cpu_seconds": usage.ru_utime + usage.ru_stime}))


if __name__ == "__main__":
    main()
