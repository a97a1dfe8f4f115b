"""Reconciliation: archive vs OA for one organisation and period, and its repairs.

Real parts throughout: the OA simulator over loopback, the ``archive-oa reconcile``
command in all three formats, and the gateway's ``ReconcilePeriod`` called through zeep.
The discrepancies are the ones operators meet: deliveries that gave up while the OA was
down (missing), decisions not yet polled (state mismatches), a request someone
re-submitted by hand (orphaned), a request an OA administrator deleted, and a voucher
marked queued whose delivery was lost with an older database backup.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sqlite3
import time

import pytest
import requests
import zeep
from requests.auth import HTTPBasicAuth
from zeep.exceptions import Fault
from zeep.transports import Transport

import scenario as sc
from archive_oa.cli.main import main
from archive_oa.domain.delivery import DeliveryState
from archive_oa.domain.model import WorkflowState
from archive_oa.services.sync import REQUEUE_ACTIONS
from archive_oa.store import outbox
from archive_oa.store import vouchers as repo
from archive_oa.sync.poller import Poller
from archive_oa.sync.render import render_workflow
from archive_oa.sync.worker import DeliveryWorker

ORG, PERIOD = "HD01", "2026-10"
GW = "urn:archive-oa:gateway:1"
PASSWORD = "Reconcile-Passw0rd!2026"


@pytest.fixture
def run(tmp_path, monkeypatch):
    folder = tmp_path / "vouchers"
    sc.generate_vouchers(folder, 60)  # 10 per organisation and period
    simulator = sc.start_simulator(sc.simulator_config(21, decide_after=0.2), tmp_path / "oa")
    settings = sc.run_settings(tmp_path / "data", simulator.url, max_attempts=2, retry_base_seconds=0.01,
                               retry_max_seconds=0.05)
    adapter = sc.bootstrap(settings)
    monkeypatch.setenv("ARCHIVE_OA_OA_URL", simulator.url)
    yield adapter, simulator, folder
    adapter.close()
    simulator.stop()


def fault_code(fault: Fault) -> str:
    return fault.detail.find(f"{{{GW}}}GatewayFault/{{{GW}}}code").text


def deliver(adapter) -> None:
    worker = DeliveryWorker(adapter.store, adapter.oa, adapter.transforms, adapter.settings.sync, owner="reconcile")
    try:
        worker.run_until_idle(deadline=None)
    finally:
        worker.close()


def poll_until_decided(adapter, simulator) -> None:
    deadline = time.monotonic() + 30
    while simulator.db.status_counts().get("IN_PROGRESS", 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    Poller(adapter.store, adapter.oa, adapter.settings.sync).run_once()


def reconcile(adapter, capsys, *extra) -> tuple[int, str]:
    code = main(["reconcile", "--org", ORG, "--period", PERIOD, "--data-dir", str(adapter.settings.data_dir), *extra])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    return code, captured.out


def period_vouchers(adapter) -> list[str]:
    with adapter.store.transaction() as conn:
        return [v for v, _, _ in repo.select_for_sync(conn, org_code=ORG, period_from=PERIOD, period_to=PERIOD,
                                                      states=tuple(WorkflowState))]


@pytest.mark.slow
def test_missing_mismatched_orphaned_and_their_repair(run, capsys):
    adapter, simulator, folder = run
    # the OA is down while the period is delivered: every delivery gives up (2 attempts)
    simulator.set_faults(error_rate=1.0)
    sc.import_vouchers(adapter, [folder])
    deliver(adapter)
    simulator.set_faults(error_rate=0.0)
    ours = period_vouchers(adapter)
    assert len(ours) == 10
    # one of them lost its delivery with a database restored from an older backup: the
    # voucher says QUEUED, the outbox knows nothing of it
    restored = ours[9]
    with adapter.store.transaction(immediate=True) as conn:
        lost = outbox.for_vouchers(conn, [restored])[0]
        conn.execute(outbox.deliveries.delete().where(outbox.deliveries.c.id == lost.id))

    code, out = reconcile(adapter, capsys, "--format", "json")
    report = json.loads(out)
    assert code == 1
    assert (report["orgCode"], report["period"], report["checked"]) == (ORG, PERIOD, 10)
    assert sorted(report["missingInOa"]) == sorted(ours)
    assert report["orphanedInOa"] == [] and report["stateMismatches"] == [] and "requeued" not in report

    code, out = reconcile(adapter, capsys, "--requeue-missing", "--format", "json")
    report = json.loads(out)
    assert code == 0, "every missing voucher was put back on its way"
    actions = {r["voucherId"]: r["action"] for r in report["requeued"]}
    assert actions == {**{v: "retried" for v in ours[:9]}, restored: "enqueued"}
    with adapter.store.transaction() as conn:
        period_states = {d.state for d in outbox.for_vouchers(conn, ours)}
    assert period_states == {DeliveryState.UNCERTAIN}  # each asks the OA before sending

    deliver(adapter)
    time.sleep(0.5)  # decided in the OA, not polled yet: the archive still says SUBMITTED
    while simulator.db.status_counts().get("IN_PROGRESS", 0):
        time.sleep(0.1)
    code, out = reconcile(adapter, capsys, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 1
    assert {r["finding"] for r in rows} == {"state_mismatch"}
    assert sorted(r["voucher_id"] for r in rows) == sorted(ours)
    assert {r["archive_state"] for r in rows} == {"SUBMITTED"}
    assert {r["oa_state"] for r in rows} <= {"APPROVED", "REJECTED"}

    poll_until_decided(adapter, simulator)
    code, out = reconcile(adapter, capsys)
    assert code == 0
    assert out.splitlines()[2].split() == [ORG, PERIOD, "10", "0", "0", "0"]

    # someone re-submits a voucher by hand in the OA with the adapter's key: an orphan
    doubled = ours[0]
    with adapter.store.transaction() as conn:
        delivery = outbox.for_vouchers(conn, [doubled])[0]
    extra = adapter.oa.create_request(render_workflow(adapter.store, adapter.transforms, repo, doubled,
                                                      delivery.version, delivery.idempotency_key))
    # an OA administrator deletes the request of another one: missing, and not ours to resend
    deleted = ours[1]
    with adapter.store.transaction() as conn:
        gone = outbox.for_vouchers(conn, [deleted])[0]
    with sqlite3.connect(simulator.db.path) as oa_db:
        oa_db.execute("DELETE FROM completed WHERE request_id = ?", (int(gone.oa_request_id),))
        oa_db.execute("DELETE FROM logs WHERE request_id = ?", (int(gone.oa_request_id),))
        oa_db.execute("DELETE FROM requests WHERE id = ?", (int(gone.oa_request_id),))
    code, out = reconcile(adapter, capsys, "--requeue-missing")
    assert code == 1, "the deleted request needs a person"
    assert ["orphaned_in_oa", str(extra)] in [line.split()[:2] for line in out.splitlines()]
    findings = [line.split() for line in out.splitlines()]
    assert ["missing_in_oa", deleted] in findings
    actions = {line[1]: line[0] for line in findings if line and line[0] in REQUEUE_ACTIONS}
    assert actions == {deleted: "needs-operator"}
    assert f"delivered as OA request {gone.oa_request_id}, but the OA finds no request" in out

    deliver(adapter)
    poll_until_decided(adapter, simulator)
    code, out = reconcile(adapter, capsys, "--format", "json")
    report = json.loads(out)
    assert (report["missingInOa"], report["orphanedInOa"]) == ([deleted], [str(extra)])
    per_key = simulator.db.requests_per_external_key()
    assert per_key[delivery.idempotency_key] == 2  # the hand-made one; the adapter added none
    assert sum(per_key.values()) == 10 + 1 - 1  # one per voucher of the period, one by hand, one deleted by the OA


def test_reconcile_of_an_organisation_the_archive_does_not_know_names_the_ones_it_does(run, capsys):
    adapter, simulator, folder = run
    sc.import_vouchers(adapter, [folder])
    data = str(adapter.settings.data_dir)
    assert main(["reconcile", "--org", "HD1", "--period", PERIOD, "--data-dir", data]) == 2
    err = capsys.readouterr().err
    assert "no voucher of organisation HD1: check --org (the orgCode of the imported vouchers); " \
           "organisations it holds: HD01, HN02, XB03" in err
    # a known organisation with an empty period is an answer, not a mistake
    assert main(["reconcile", "--org", ORG, "--period", "2020-01", "--data-dir", data]) == 0
    assert capsys.readouterr().out.splitlines()[2].split() == [ORG, "2020-01", "0", "0", "0", "0"]


@pytest.mark.slow
def test_reconcile_asks_the_oa_again_after_a_dropped_call(run, capsys, caplog):
    adapter, simulator, folder = run
    sc.import_vouchers(adapter, [folder])
    deliver(adapter)
    simulator.injector.fail_next("drop")  # the first call of the reconciliation gets no answer
    code, out = reconcile(adapter, capsys, "--format", "json")
    assert json.loads(out)["checked"] == 10
    assert simulator.injector.counts()["drop"] == 1
    (retry,) = [r for r in caplog.records if "asking again" in r.getMessage()]
    assert (retry.levelno, retry.exc_info) == (logging.WARNING, None)
    assert retry.getMessage().startswith("OaAmbiguous in FindWorkflowRequests: the OA at")


@pytest.mark.slow
def test_reconcile_gives_up_on_an_oa_that_keeps_failing_with_one_line(run, capsys):
    adapter, simulator, folder = run
    sc.import_vouchers(adapter, [folder])
    deliver(adapter)
    simulator.injector.fail_next("error", 3)
    code = main(["reconcile", "--org", ORG, "--period", PERIOD, "--data-dir", str(adapter.settings.data_dir)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("archive-oa reconcile: gave up after 3 attempts: the OA at ")
    assert "(FindWorkflowRequests) failed:" in line


@pytest.mark.slow
def test_reconcile_period_over_the_gateway(run):
    from archive_oa.gateway.app import make_gateway_app
    from archive_oa.gateway.server import start_gateway

    adapter, simulator, folder = run
    sc.import_vouchers(adapter, [folder])
    deliver(adapter)
    while simulator.db.status_counts().get("IN_PROGRESS", 0):
        time.sleep(0.1)  # decided in the OA, not polled: every voucher of the period disagrees
    adapter.users.add_user("ops-hd01", PASSWORD, {"operator"}, {ORG})
    adapter.users.add_user("viewer-hd01", PASSWORD, {"viewer"}, {ORG})
    gateway = start_gateway(make_gateway_app(adapter), "127.0.0.1", 0)
    try:
        def client(user):
            session = requests.Session()
            session.auth = HTTPBasicAuth(user, PASSWORD)
            return zeep.Client(gateway.wsdl_url, transport=Transport(session=session)).service

        answer = client("ops-hd01").ReconcilePeriod(orgCode=ORG, period=PERIOD)
        expected = adapter.sync.reconcile(ORG, PERIOD)
        assert (answer.orgCode, answer.period) == (ORG, PERIOD)
        assert (answer.missingCount, answer.orphanedCount, answer.mismatchCount) == (0, 0, 10)
        mismatches = answer.stateMismatches.mismatch
        assert sorted((m.voucherId, m.archiveState, m.oaState, m.oaRequestId) for m in mismatches) == sorted(
            (m.voucher_id, m.archive_state.value, m.oa_state.value, m.oa_request_id) for m in expected.state_mismatches)

        poll_until_decided(adapter, simulator)
        answer = client("ops-hd01").ReconcilePeriod(orgCode=ORG, period=PERIOD)
        assert (answer.missingCount, answer.orphanedCount, answer.mismatchCount) == (0, 0, 0)

        for user, org, period, code in (
            ("viewer-hd01", ORG, PERIOD, "AccessDenied"),  # reconciling is for operators
            ("ops-hd01", "HN02", PERIOD, "AccessDenied"),  # outside the caller's organisations
            ("ops-hd01", ORG, "2026-13", "Validation"),
        ):
            with pytest.raises(Fault) as refused:
                client(user).ReconcilePeriod(orgCode=org, period=period)
            assert fault_code(refused.value) == code, (user, org, period)
    finally:
        gateway.stop()
