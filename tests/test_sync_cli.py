"""The sync commands end to end: import → ``sync`` → ``poll`` → ``dead-letters``; ``worker`` stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archive_oa.cli.main import main
from archive_oa.oa.simulator import SimulatorConfig, start_simulator
from archive_oa.samples import samples_dir


@pytest.fixture
def simulator(tmp_path):
    handle = start_simulator(SimulatorConfig(decide_after=0.1, reject_above="50000", seed=3), tmp_path / "oa")
    yield handle
    handle.stop()


@pytest.fixture
def env(simulator, database_url, tmp_path, monkeypatch):
    """The commands' environment; ``database_url`` (tests/conftest.py) runs them on SQLite and PostgreSQL."""
    monkeypatch.setenv("ARCHIVE_OA_HOME", str(tmp_path / "home"))
    if database_url:
        monkeypatch.setenv("ARCHIVE_OA_DATABASE_URL", database_url)
    monkeypatch.setenv("ARCHIVE_OA_OA_URL", simulator.url)
    monkeypatch.setenv("ARCHIVE_OA_OA_TIMEOUT", "5")
    return dict(os.environ)


def test_sync_poll_and_dead_letters(env, simulator, capsys):
    sample = str(samples_dir() / "HD01-2026-09.xml")
    assert main(["import", "--no-queue", sample]) == 0
    capsys.readouterr()
    assert main(["sync", "--org", "HD01", "--period-from", "2026-09", "--period-to", "2026-09"]) == 0
    out = capsys.readouterr()
    assert "vouchers selected" in out.err
    job_line = out.out.splitlines()[2].split()
    # state, vouchers, delivered, retrying, dead, waiting: all of them were delivered
    assert job_line[1:] == ["FINISHED", job_line[2], job_line[2], "0", "0", "0"]
    queued = int(job_line[2])
    assert queued > 0 and sum(simulator.db.requests_per_external_key().values()) == queued

    deadline = time.monotonic() + 10
    applied = 0
    while applied < queued and time.monotonic() < deadline:
        time.sleep(0.3)
        assert main(["poll"]) == 0
        row = capsys.readouterr().out.splitlines()[2].split()
        applied += int(row[1])
    assert applied == queued

    assert main(["dead-letters", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[:3] == ["id", "voucher", "version"]
    assert main(["dead-letters", "retry"]) == 2  # neither ids nor --all
    assert main(["sync", "--period-from", "2026-13"]) == 2
    assert "periodFrom" in capsys.readouterr().err


def test_worker_runs_on_schedule_and_stops_on_sigterm(env, simulator, tmp_path):
    home = Path(env["ARCHIVE_OA_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "archive-oa.toml").write_text(
        '[sync]\ndelivery_schedule = "every 1s"\npoll_schedule = "every 1s"\n', encoding="utf-8"
    )
    exe = [sys.executable, "-m", "archive_oa.cli.main"]
    sample = str(samples_dir() / "HN02-2026-10.xml")
    subprocess.run(exe + ["import", sample], env=env, check=True, capture_output=True, timeout=60)
    proc = subprocess.Popen(exe + ["worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            decided = simulator.db.decided()
            if sum(simulator.db.requests_per_external_key().values()) and sum(decided.values()):
                break
            time.sleep(0.3)
        time.sleep(2.5)  # a poll round after the decisions
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in err and "leases handed back" in err
    assert set(simulator.db.requests_per_external_key().values()) == {1}
    capture = subprocess.run(exe + ["dead-letters", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert capture.returncode == 0


@pytest.mark.parametrize("argv, option", [
    (["import", "--batch-size", "0", "v.xml"], "--batch-size"),
    (["audit", "list", "--limit", "-3"], "--limit"),
    (["serve", "--threads", "0"], "--threads"),
    (["dead-letters", "list", "--limit", "many"], "--limit"),
])
def test_counts_on_the_command_line_must_be_whole_numbers_of_one_or_more(argv, option, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert option in err and "give a whole number, 1 or more" in err
