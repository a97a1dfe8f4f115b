"""The composition root: ``bootstrap(settings) -> Adapter`` and its one way to stop."""

from __future__ import annotations

import datetime as dt

from archive_oa.bootstrap import bootstrap
from archive_oa.cli.main import main
from archive_oa.domain.delivery import DeliveryState
from archive_oa.samples import samples_dir
from archive_oa.services.importer import import_paths
from archive_oa.settings import load_settings
from archive_oa.store import outbox


def test_an_unknown_oa_driver_is_one_line_naming_the_setting_and_the_installed_drivers(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARCHIVE_OA_OA_DRIVER", "ecology-9")
    assert main(["dead-letters", "list", "--data-dir", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "[oa] driver = 'ecology-9'" in line and "installed drivers: generic" in line


def test_the_oa_driver_opens_on_first_use_only(tmp_path):
    with bootstrap(load_settings(data_dir=tmp_path, env={}), upgrade=True) as adapter:
        assert adapter._oa is None
        assert adapter.archive is not None and adapter.users is not None  # reading needs no OA
        assert adapter._oa is None
        assert adapter.oa is adapter.oa  # one driver, one connection pool


def test_close_hands_back_every_lease_the_adapter_holds(tmp_path):
    settings = load_settings(data_dir=tmp_path, env={})
    with bootstrap(settings, upgrade=True) as adapter:
        report = import_paths(adapter.store, adapter.transforms, [str(samples_dir() / "HD01-2026-09.xml")])
        assert report.queued > 2
        assert adapter.worker.owner == adapter.owner  # as under a scheduler: the worker runs, claims are in flight
        now = dt.datetime.now(dt.timezone.utc)
        claims = outbox.claim(adapter.store, adapter.owner, 2, 60.0, now)
        assert len(claims) == 2
    with bootstrap(settings) as again, again.store.transaction() as conn:
        released = [outbox.get(conn, claim.delivery_id) for claim in claims]
    assert [(d.state, d.lease_owner) for d in released] == [(DeliveryState.UNCERTAIN, None)] * 2
