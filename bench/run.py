"""Run the benchmark: ``python bench/run.py [--quick] [--full] [--only B1,B3]``.

Prints one table (each figure beside its floor, measured in the same run, and its target)
and writes it to ``bench/results/latest.json``.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_DIR, Figure, require_wrk  # noqa: E402

BENCHES = {"B1": "b1_gateway", "B2": "b2_transforms", "B3": "b3_delivery", "B4": "b4_scale", "B5": "b5_attachments",
           "B6": "b6_worker"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs and smaller sets (a smoke run, ~2 min)")
    parser.add_argument("--full", action="store_true",
                        help="B4 at the issue's full size: 100,000 imported, 1,000,000 stored (longer than 10 min)")
    parser.add_argument("--only", metavar="B1,B3", help="comma-separated subset of " + ",".join(BENCHES))
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "latest.json", help="JSON result file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder (logs, data)")
    args = parser.parse_args(argv)
    args.only = [b.strip().upper() for b in args.only.split(",")] if args.only else list(BENCHES)
    unknown = [b for b in args.only if b not in BENCHES]
    if unknown:
        parser.error(f"--only {','.join(unknown)}: unknown; choose from {','.join(BENCHES)}")
    return args


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def table(figures: list[Figure]) -> str:
    header = ("bench", "figure", "value", "floor", "ratio", "target", "result")
    rows = [header]
    for f in figures:
        rows.append((f.bench, f.name, f"{fmt(f.value)} {f.unit}", fmt(f.floor) if f.floor is not None else "—",
                     f"{f.ratio:.2f}" if f.ratio is not None else "—", f.target,
                     "" if f.passed is None else ("PASS" if f.passed else "FAIL")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "database": "SQLite (file, default settings)"}


def main(argv=None) -> int:
    args = parse_args(argv)
    if "B1" in args.only:
        require_wrk()
    work = Path(tempfile.mkdtemp(prefix="archive-oa-bench-"))
    figures: list[Figure] = []
    timings = {}
    started = time.monotonic()
    try:
        for name in args.only:
            module = importlib.import_module(BENCHES[name])
            print(f"== {name}: {module.__doc__.splitlines()[0]}", flush=True)
            t0 = time.monotonic()
            found = module.run(work, quick=args.quick, full=args.full)
            timings[name] = round(time.monotonic() - t0, 1)
            figures += found
            print(table(found), f"\n({timings[name]} s)\n", flush=True)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    total = time.monotonic() - started
    print(table(figures))
    failed = [f for f in figures if f.passed is False]
    print(f"\n{sum(f.passed is True for f in figures)} targets pass, {len(failed)} fail; {total:.0f} s in all")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(), "seconds": round(total, 1), "bench_seconds": timings,
        "figures": [{**dataclasses.asdict(f), "ratio": f.ratio} for f in figures],
    }, indent=2, ensure_ascii=False) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
