"""The sync commands end to end: import → ``sync`` → ``poll`` → ``dead-letters``; ``worker`` stops on SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archive_oa.cli.main import main
from archive_oa.domain.delivery import DeliveryState
from archive_oa.oa.simulator import SimulatorConfig, start_simulator
from archive_oa.samples import samples_dir
from archive_oa.settings import load_settings
from archive_oa.store import jobs, outbox
from archive_oa.store.engine import open_store

pytestmark = pytest.mark.slow  # import → sync → poll against the simulator, the worker as a process


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


# --- sync tells the truth: vouchers, failure classes, exit codes, only what it was asked ---------


def closed_port() -> int:
    """A loopback port nobody listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def oa_env(database_url, tmp_path, monkeypatch):
    """The commands' environment with ``[oa] url`` set by the test."""
    monkeypatch.setenv("ARCHIVE_OA_HOME", str(tmp_path / "home"))
    if database_url:
        monkeypatch.setenv("ARCHIVE_OA_DATABASE_URL", database_url)
    monkeypatch.setenv("ARCHIVE_OA_OA_TIMEOUT", "5")
    return lambda url: monkeypatch.setenv("ARCHIVE_OA_OA_URL", url)


def deliveries():
    store = open_store(load_settings())
    try:
        with store.transaction() as conn:
            return outbox.list_deliveries(conn, limit=None)
    finally:
        store.dispose()


def import_samples(capsys, *names, queue=True):
    for name in names:
        assert main(["import", *([] if queue else ["--no-queue"]), str(samples_dir() / name)]) == 0
    capsys.readouterr()


def sync_json(capsys, *args) -> tuple[int, dict, str]:
    code = main(["sync", "--json", *args])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def test_sync_with_the_oa_unreachable_stops_after_one_round_and_says_so(oa_env, capsys, caplog):
    oa_env(f"http://127.0.0.1:{closed_port()}/soap/workflow")
    import_samples(capsys, "HD01-2026-09.xml")  # queued by the import (realtime)
    count = len(deliveries())
    caplog.set_level(logging.WARNING)  # the command line's own level
    # 20 s would be several retry rounds (2 s, 4 s, 8 s …): one attempt each shows it stopped after one
    code, report, err = sync_json(capsys, "--timeout", "20")
    # not one line per voucher: the first failure, then the round's count per class
    first, summary = [r.getMessage() for r in caplog.records if r.name.startswith("archive_oa")]
    assert "failed in send: OaUnreachable in CreateWorkflowRequest" in first
    assert summary.startswith(f"delivery round: {count} of {count} attempts unsuccessful (unreachable: {count})")
    assert code == 1
    assert [d.attempts for d in deliveries()] == [1] * count
    assert (report["vouchers"], report["delivered"], report["retrying"], report["attempts"]) == (count, 0, count, count)
    (failure,) = report["failures"]
    assert (failure["class"], failure["vouchers"]) == ("unreachable", count)
    assert "OaUnreachable" in failure["last_error"] and "[oa] url" in failure["last_error"]
    assert "stopped after the first round: the OA is unreachable" in err


def test_sync_that_made_no_attempt_does_not_blame_the_failures_of_an_earlier_run(oa_env, capsys):
    oa_env(f"http://127.0.0.1:{closed_port()}/soap/workflow")
    import_samples(capsys, "HD01-2026-09.xml")
    assert sync_json(capsys, "--timeout", "20")[0] == 1  # the OA is down: every voucher failed once
    code, report, err = sync_json(capsys, "--timeout", "0")  # takes them over, makes no attempt
    assert (code, report["attempts"], report["retrying"]) == (1, 0, len(deliveries()))
    assert "stopped after the first round" not in err
    assert "--timeout 0s ended before their next attempt" in err


def test_sync_with_credentials_the_oa_refuses_stops_after_one_round(oa_env, tmp_path, capsys):
    oa = start_simulator(SimulatorConfig(user="another-account", password="not-our-password", seed=5), tmp_path / "oa")
    try:
        oa_env(oa.url)
        import_samples(capsys, "HN02-2026-10.xml", queue=False)
        code = main(["sync", "--timeout", "20"])
        out = capsys.readouterr()
        assert code == 1
        count = len(deliveries())
        assert [d.attempts for d in deliveries()] == [1] * count
        failure_line = next(line for line in out.out.splitlines() if line.startswith("credentials refused: "))
        assert failure_line.startswith(f"credentials refused: {count} vouchers; last error: send: OaAuthenticationFailed")
        assert "refuses our credentials" in out.err
        assert oa.db.requests_per_external_key() == {}
    finally:
        oa.stop()


def test_sync_org_delivers_that_organisation_only_and_job_and_report_agree(oa_env, tmp_path, capsys):
    oa = start_simulator(SimulatorConfig(decide_after=60, seed=6), tmp_path / "oa")
    try:
        oa_env(oa.url)
        import_samples(capsys, "HD01-2026-09.xml", "HN02-2026-09.xml")  # both queued, both due now
        hd01 = {d.voucher_id for d in deliveries() if d.voucher_id.startswith("HD01")}
        code, report, err = sync_json(capsys, "--org", "HD01")
        assert code == 0, err
        sent = {key.rpartition(":")[0] for key in oa.db.requests_per_external_key()}
        assert sent == hd01  # none of HN02's, though they were due as well
        assert {d.state for d in deliveries() if d.voucher_id not in hd01} == {DeliveryState.PENDING}
        assert report == {
            "job": report["job"], "state": "FINISHED", "vouchers": len(hd01), "delivered": len(hd01),
            "retrying": 0, "dead": 0, "waiting": 0, "queued_now": 0, "already_waiting": len(hd01),
            "dead_letters_not_resent": 0, "left_to_other_jobs": 0, "failures": [], "attempts": len(hd01),
            "anomalies": 0,
        }
        store = open_store(load_settings())
        try:
            with store.transaction() as conn:
                job = jobs.get_job(conn, report["job"])
                assert (job.voucher_count, job.queued, job.state) == (len(hd01), len(hd01), "FINISHED")
                assert {d.job_id for d in outbox.list_deliveries(conn, limit=None) if d.voucher_id in hd01} == {job.id}
        finally:
            store.dispose()
        code, report, err = sync_json(capsys, "--org", "HD01")  # again: nothing left to do
        assert (code, report["vouchers"], report["attempts"]) == (0, 0, 0)
        assert "nothing to deliver" in err
    finally:
        oa.stop()


@pytest.mark.parametrize("args, message", [
    (["--org", "XX99"], "the archive holds no voucher of organisation XX99: check --org"),
    (["--voucher", "HD01-2026-09-NOPE"], "voucher HD01-2026-09-NOPE is not in the archive: check --voucher"),
    (["--org", "HD01", "--period-from", "2030-01"], "no voucher in the archive matches (organisation HD01, periods"),
])
def test_sync_filters_that_select_nothing_say_so_and_exit_2(oa_env, capsys, args, message):
    oa_env(f"http://127.0.0.1:{closed_port()}/soap/workflow")
    import_samples(capsys, "HD01-2026-09.xml", queue=False)
    assert main(["sync", *args]) == 2
    assert message in capsys.readouterr().err
    store = open_store(load_settings())
    try:
        with store.transaction() as conn:
            assert jobs.recent_jobs(conn) == []  # no job was made
    finally:
        store.dispose()
