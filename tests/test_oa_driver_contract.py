"""The contract every OA driver keeps (``archive_oa.domain.ports.OaWorkflowPort``).

Each driver runs the same cases against its vendor's simulator over real HTTP on loopback;
the driver is opened the way the Adapter opens it, by name through the entry-point group
``archive_oa.oa_drivers``.  A new driver joins with one line in ``DRIVERS``: its name and
how to start its simulator (the simulator takes the shared ``SimulatorConfig`` switches).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Callable

import pytest

from archive_oa.domain.model import WorkflowState
from archive_oa.errors import (
    ConfigurationError,
    OaAmbiguous,
    OaAuthenticationFailed,
    OaRejected,
    OaServerFault,
    OaUnreachable,
)
from archive_oa.oa.drivers import installed_drivers, open_driver
from archive_oa.oa.simulator import SimulatorConfig, start_simulator
from archive_oa.settings import OaSettings
from waiting import eventually


@dataclass(frozen=True)
class DriverCase:
    name: str  # [oa] driver
    #: (config, data folder) -> a running simulator with .url, .db, .set_faults() and .stop()
    simulator: Callable[[SimulatorConfig, object], object]


DRIVERS = [
    DriverCase("generic", lambda config, folder: start_simulator(config, folder)),
]


def workflow_document(key: str, amount: str = "1200.00") -> bytes:
    """The smallest WorkflowRequest document (oa-workflow.xsd) every driver must send."""
    return f"""<WorkflowRequest xmlns="urn:archive-oa:oa-workflow:1">
  <workflowCode>FIN_VOUCHER_APPROVAL</workflowCode><title>华东公司 记字第1号 报销差旅费</title>
  <creator>archive-oa</creator><level>1</level><externalKey>{key}</externalKey>
  <mainFields>
    <field><name>pzbh</name><value>V-1</value></field><field><name>je</name><value>{amount}</value></field>
  </mainFields>
</WorkflowRequest>""".encode("utf-8")


@pytest.fixture(params=DRIVERS, ids=lambda case: case.name)
def oa(request, tmp_path):
    """``oa(**switches) -> (driver, simulator)``; both are closed after the test."""
    case: DriverCase = request.param
    opened = []

    def _open(*, settings: dict | None = None, **switches):
        switches.setdefault("decide_after", 0.1)
        simulator = case.simulator(SimulatorConfig(**switches), tmp_path / f"sim{len(opened)}")
        values = {"driver": case.name, "url": simulator.url, "connect_timeout": 1.0, "timeout": 3.0, "pool_size": 2}
        driver = open_driver(OaSettings(**{**values, **(settings or {})}))
        opened.append((driver, simulator))
        return driver, simulator

    yield _open
    for driver, simulator in opened:
        driver.close()
        simulator.stop()


def test_create_then_find_by_key_then_get(oa):
    driver, simulator = oa(decide_after=60)
    request_id = driver.create_request(workflow_document("K-1"))
    assert request_id > 0
    assert list(driver.find_requests("K-1")) == [request_id]
    assert list(driver.find_requests("no-such-key")) == []
    request = driver.get_request(request_id)
    assert (request.request_id, request.external_key, request.status) == (request_id, "K-1", WorkflowState.SUBMITTED)
    assert simulator.db.requests_per_external_key() == {"K-1": 1}


def test_completed_requests_come_back_once_and_go_when_acknowledged(oa):
    driver, _ = oa(reject_above="5000")
    approved = driver.create_request(workflow_document("OK", amount="100.00"))
    rejected = driver.create_request(workflow_document("BIG", amount="80000.00"))
    batch = eventually(lambda: len(driver.fetch_completed(0, 10).items) == 2 and driver.fetch_completed(0, 10))
    states = {item.request_id: (item.external_key, item.status) for item in batch.items}
    assert states == {approved: ("OK", WorkflowState.APPROVED), rejected: ("BIG", WorkflowState.REJECTED)}
    assert [item.cursor for item in batch.items] == sorted(item.cursor for item in batch.items)
    assert batch.next_cursor == batch.items[-1].cursor
    assert all(item.logs and item.finished_at.tzinfo is not None for item in batch.items)
    assert driver.fetch_completed(batch.next_cursor, 10).items == ()
    driver.acknowledge(batch.next_cursor)
    assert driver.fetch_completed(0, 10).items == ()


def test_call_timeout_is_the_configured_read_timeout(oa):
    driver, _ = oa(settings={"timeout": 2.5})
    assert driver.call_timeout == 2.5


def test_nothing_listening_is_unreachable(oa):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed, _ = oa(settings={"url": f"http://127.0.0.1:{port}/soap/workflow"})
    with pytest.raises(OaUnreachable):
        closed.create_request(workflow_document("K"))


def test_refused_credentials(oa):
    driver, simulator = oa(settings={"password": "wrong"})
    with pytest.raises(OaAuthenticationFailed):
        driver.create_request(workflow_document("K"))
    assert simulator.db.count_requests() == 0


def test_a_request_the_oa_refuses_is_rejected(oa):
    driver, _ = oa()
    with pytest.raises(OaRejected):
        driver.get_request(999_999)


def test_a_server_fault_commits_nothing(oa):
    driver, simulator = oa(error_rate=1.0)
    with pytest.raises(OaServerFault):
        driver.create_request(workflow_document("K"))
    assert simulator.db.count_requests() == 0


@pytest.mark.slow
def test_an_unanswered_create_is_ambiguous_and_found_by_its_key_before_any_resend(oa):
    driver, simulator = oa(ambiguous_rate=1.0, ambiguous_hold=10.0, settings={"timeout": 0.5})
    with pytest.raises(OaAmbiguous):
        driver.create_request(workflow_document("AMB"))
    simulator.set_faults(ambiguous_rate=0.0)
    assert len(driver.find_requests("AMB")) == 1  # the worker adopts it instead of sending again
    assert simulator.db.requests_per_external_key() == {"AMB": 1}


def test_every_driver_here_is_installed_and_an_unknown_name_lists_them():
    assert {case.name for case in DRIVERS} <= set(installed_drivers())
    with pytest.raises(ConfigurationError) as caught:
        open_driver(OaSettings(driver="no-such-oa"))
    message = str(caught.value)
    assert "[oa] driver" in message and "'no-such-oa'" in message
    assert all(case.name in message for case in DRIVERS)
