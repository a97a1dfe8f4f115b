"""``archive-oa serve --processes 2``: real processes on loopback.

Which child answered is told apart without touching the answers: every child but one is
stopped (SIGSTOP), so the kernel can hand a new connection only to the one left running.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from archive_oa.bootstrap import bootstrap
from archive_oa.settings import load_settings

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="serve --processes N needs fork"),
    pytest.mark.slow,  # real serve --processes 2 in child processes
]

USER, PASSWORD, NEW_PASSWORD = "viewer-p", "pw-for-prefork-2026", "pw-changed-prefork-2026"
QUERY = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
         ' xmlns:arc="urn:archive-oa:gateway:1"><soapenv:Body><arc:QueryVouchers><arc:page>1</arc:page>'
         '<arc:pageSize>5</arc:pageSize></arc:QueryVouchers></soapenv:Body></soapenv:Envelope>').encode()
ARCHIVE_OA = str(Path(sys.executable).with_name("archive-oa"))


def _settings(data_dir: Path):
    return load_settings(data_dir=data_dir, env={})


class Served:
    """``archive-oa serve --processes 2`` and what the test needs of it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.log = data_dir / "serve.log"
        env = {**os.environ, "ARCHIVE_OA_LOG_LEVEL": "INFO", "ARCHIVE_OA_HOME": str(data_dir)}
        env.pop("ARCHIVE_OA_DATABASE_URL", None)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [ARCHIVE_OA, "serve", "--data-dir", str(data_dir), "--port", "0", "--processes", "2", "--threads", "4"],
                stdout=subprocess.PIPE, stderr=log, env=env)
        self.url = self.proc.stdout.readline().decode().split()[1]
        self.wait_serving(2)

    def serving(self) -> dict[int, int]:
        """slot -> pid of each child that said it serves, the latest per slot."""
        found = re.findall(r"gateway process (\d) serving \(pid (\d+)\)", self.log.read_text())
        return {int(slot): int(pid) for slot, pid in found}

    def wait_serving(self, count: int, *, besides: set[int] = frozenset(), timeout: float = 30) -> dict[int, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = {slot: pid for slot, pid in self.serving().items() if pid not in besides}
            if len(pids) >= count:
                return pids
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.1)
        raise AssertionError(f"not {count} children serving:\n{self.log.read_text()}")

    def children(self) -> set[int]:
        out = subprocess.run(["ps", "--ppid", str(self.proc.pid), "-o", "pid="], capture_output=True, text=True).stdout
        return {int(pid) for pid in out.split()}

    @contextlib.contextmanager
    def only(self, pid: int):
        """Every child but ``pid`` stopped: connections meanwhile reach ``pid`` alone."""
        others = self.children() - {pid}
        for other in others:
            os.kill(other, signal.SIGSTOP)
        try:
            yield
        finally:
            for other in others:
                os.kill(other, signal.SIGCONT)

    def call(self, password: str = PASSWORD) -> int | bytes:
        """200, or the fault answered."""
        token = base64.b64encode(f"{USER}:{password}".encode()).decode()
        request = urllib.request.Request(self.url, data=QUERY, headers={
            "Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"QueryVouchers"', "Authorization": f"Basic {token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status
        except urllib.error.HTTPError as exc:
            return exc.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self.proc.stdout.close()


@pytest.fixture
def served(tmp_path):
    with bootstrap(_settings(tmp_path)) as adapter:
        adapter.users.add_user(USER, PASSWORD, {"viewer"}, None)
    server = Served(tmp_path)
    yield server
    server.stop()


def test_both_children_answer(served):
    for pid in served.wait_serving(2).values():
        with served.only(pid):
            assert served.call() == 200


def test_a_password_change_acts_at_once_in_every_child(served):
    pids = served.wait_serving(2).values()
    for pid in pids:  # each child remembers the password it verified
        with served.only(pid):
            assert served.call() == 200
    with bootstrap(_settings(served.data_dir)) as adapter:
        adapter.users.set_password(USER, NEW_PASSWORD)
    for pid in pids:
        with served.only(pid):
            assert b"Authentication" in served.call(PASSWORD)
            assert served.call(NEW_PASSWORD) == 200


def test_the_audit_chain_verifies_after_concurrent_calls_into_two_children(served):
    served.wait_serving(2)
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda: statuses.extend(served.call() for _ in range(10))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 80
    assert served.stop() == 0
    with bootstrap(_settings(served.data_dir)) as adapter:
        from archive_oa.services import audit
        with adapter.store.engine.connect() as conn:
            assert audit.head(conn)[0] >= 80
    verified = subprocess.run([ARCHIVE_OA, "audit", "verify", "--data-dir", str(served.data_dir)],
                              capture_output=True, text=True, env={**os.environ, "ARCHIVE_OA_HOME": str(served.data_dir)})
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_killed_child_is_replaced(served):
    before = served.wait_serving(2)
    os.kill(before[1], signal.SIGKILL)
    after = served.wait_serving(1, besides=set(before.values()))
    assert set(after) == {1} and served.children() == {before[0], after[1]}
    assert "gateway process 1 (pid %d) ended unexpectedly (killed by signal 9)" % before[1] in served.log.read_text()
    with served.only(after[1]):
        assert served.call() == 200


def test_sigterm_stops_every_process_cleanly(served):
    children = set(served.wait_serving(2).values())
    assert served.children() == children
    assert served.stop() == 0
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "Traceback" not in served.log.read_text()
