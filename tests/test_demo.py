"""The demo end to end, as a user runs it: the installed console script, its exit code, its JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the installed console script, a whole demo run


def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("archive-oa")
    if script.exists():
        return [str(script)]
    found = shutil.which("archive-oa")
    if not found:
        pytest.fail("the archive-oa console script is not installed beside this interpreter")
    return [found]


def test_demo_under_faults_ends_with_nothing_lost_or_doubled(tmp_path):
    run = subprocess.run(
        [*_console_script(), "demo", "--data-dir", str(tmp_path / "demo"), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    for key in ("vouchers", "delivered", "approved", "rejected", "pending", "duplicates", "lost", "seconds"):
        assert key in summary
    assert summary["vouchers"] >= 200
    assert summary["duplicates"] == 0
    assert summary["lost"] == 0
    assert summary["pending"] == 0
    assert summary["mismatched"] == 0
    assert summary["delivered"] == summary["vouchers"]
    assert summary["approved"] + summary["rejected"] + summary["withdrawn"] == summary["vouchers"]
    assert summary["rejected"] > 0, "the sample data has vouchers above the approvers' limit"
    assert summary["retries"] > 0, "faults were injected, so some deliveries must have been retried"
    assert summary["via_callback"] > 0 and summary["via_poll"] > 0
    assert summary["repeats_ignored"] > 0, "callback and polling overlap; repeats must be recognised"
    # progress went to stderr while it ran
    assert "approved" in run.stderr


def test_cli_lists_every_command():
    run = subprocess.run([*_console_script(), "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0
    for command in ("demo", "serve", "worker", "oa-sim", "import", "sync", "poll", "transform", "validate", "db"):
        assert command in run.stdout, f"archive-oa --help does not list {command}"
