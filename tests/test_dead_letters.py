"""Dead letters: poison never blocks the rest; ``archive-oa dead-letters list|show|retry|discard``.

The poison vouchers are valid archive content that cannot reach the OA: one whose
attachment is too large for the OA, one whose stored attachment bytes were damaged, and
one whose stored file is gone.  They are queued first and delivered by
one thread one at a time, so if one of them held the queue nothing else would move.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

import scenario as sc
from archive_oa.cli.main import main
from archive_oa.domain.delivery import DeliveryState
from archive_oa.domain.model import WorkflowState
from archive_oa.store import outbox
from archive_oa.store import vouchers as repo
from archive_oa.sync.worker import DeliveryWorker

pytestmark = pytest.mark.slow  # each a delivery run against the simulator

VOUCHERS = 60


@pytest.fixture
def run(tmp_path):
    load, poison_folder = tmp_path / "vouchers", tmp_path / "poison"
    count = sc.generate_vouchers(load, VOUCHERS)
    poison = sc.write_poison(poison_folder)
    simulator = sc.start_simulator(sc.simulator_config(11, decide_after=0.2), tmp_path / "oa")
    settings = sc.run_settings(tmp_path / "data", simulator.url, workers=1, batch_size=1)
    adapter = sc.bootstrap(settings)
    sc.import_vouchers(adapter, [poison_folder])  # queued first: they are claimed before the others
    sc.import_vouchers(adapter, [load])
    sc.break_attachments(adapter, poison)
    yield adapter, simulator, poison, count, poison_folder
    adapter.close()
    simulator.stop()


def deliver(adapter, **changes):
    settings = adapter.settings.sync
    if changes:
        settings = adapter.settings.replace(sync=changes).sync
    worker = DeliveryWorker(adapter.store, adapter.oa, adapter.transforms, settings, owner="dead-letter-test")
    try:
        return worker.run_until_idle(deadline=None)
    finally:
        worker.close()


def dead_letters(adapter) -> dict[str, outbox.Delivery]:
    with adapter.store.transaction() as conn:
        return {d.voucher_id: d for d in outbox.list_deliveries(conn, states=[DeliveryState.DEAD], limit=None)}


def cli(adapter, capsys, *args) -> tuple[int, str, str]:
    code = main([*args, "--data-dir", str(adapter.settings.data_dir)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_poison_is_dead_at_once_and_never_blocks_the_rest(run):
    adapter, simulator, poison, count, _ = run
    counts = deliver(adapter)
    dead = dead_letters(adapter)
    assert set(dead) == set(poison)
    assert all(d.attempts == 1 for d in dead.values()), "a permanent failure is not retried"
    assert counts.delivered == count and counts.dead == len(poison)
    per_key = simulator.db.requests_per_external_key()
    assert len(per_key) == count and set(per_key.values()) == {1}
    reasons = {poison[v]: d.last_error for v, d in dead.items()}
    assert "NotFound" in reasons[sc.POISON_MISSING_ATTACHMENT] and "no blob" in reasons[sc.POISON_MISSING_ATTACHMENT]
    too_large = reasons[sc.POISON_TOO_LARGE]
    assert too_large.startswith("send: ") and ("Text node too long" in too_large or "OaRejected" in too_large)
    assert "IntegrityError" in reasons[sc.POISON_DAMAGED_ATTACHMENT]


def test_dead_letters_list_show_retry_discard(run, capsys):
    adapter, simulator, poison, count, poison_folder = run
    deliver(adapter)
    dead = dead_letters(adapter)
    by_kind = {poison[v]: d for v, d in dead.items()}

    code, out, _ = cli(adapter, capsys, "dead-letters", "list")
    assert code == 0
    listed = {line.split()[1] for line in out.splitlines()[2:]}
    assert listed == set(poison)
    assert "failure" in out.splitlines()[0].split()

    code, out, _ = cli(adapter, capsys, "dead-letters", "list", "--json")  # the same facts, whole errors
    assert code == 0
    rows = {row["voucher"]: row for row in json.loads(out)}
    assert set(rows) == set(poison)
    refused_row = rows[by_kind[sc.POISON_TOO_LARGE].voucher_id]
    assert set(refused_row) == {"id", "voucher", "version", "attempts", "updated", "failure", "last_error"}
    assert (refused_row["id"], refused_row["attempts"], refused_row["last_error"]) == (
        by_kind[sc.POISON_TOO_LARGE].id, 1, by_kind[sc.POISON_TOO_LARGE].last_error)
    assert rows[by_kind[sc.POISON_DAMAGED_ATTACHMENT].voucher_id]["failure"] == "content"  # damaged bytes

    refused = by_kind[sc.POISON_TOO_LARGE]
    code, out, _ = cli(adapter, capsys, "dead-letters", "show", str(refused.id))
    assert code == 0
    fields = {line[:16].strip(): line[16:].strip() for line in out.splitlines()}
    assert fields["delivery"] == str(refused.id)
    assert fields["state"].startswith("DEAD") and fields["attempts"] == "1"
    assert fields["voucher"] == f"{refused.voucher_id} version 1"
    assert f"image/png, {sc.TOO_LARGE_BYTES} bytes" in fields["attachments"]
    assert fields["last error"] == refused.last_error

    code, _, err = cli(adapter, capsys, "dead-letters", "show", "424242")
    assert code == 2 and "delivery 424242 does not exist" in err

    # the damaged file is restored from the source; the retried delivery goes through once
    damaged = by_kind[sc.POISON_DAMAGED_ATTACHMENT]
    with adapter.store.transaction() as conn:
        meta = repo.load_voucher(conn, damaged.voucher_id).attachments[0]
    for path in adapter.settings.blob_dir.rglob(f"*{meta.sha256}*"):
        path.write_bytes((poison_folder / "attachments" / meta.file_name).read_bytes())
    code, out, _ = cli(adapter, capsys, "dead-letters", "retry", str(damaged.id))
    assert (code, out.strip()) == (0, f"retry: 1 dead letters ({damaged.id})")
    deliver(adapter)
    with adapter.store.transaction() as conn:
        assert outbox.get(conn, damaged.id).state is DeliveryState.DELIVERED
    assert simulator.db.requests_per_external_key()[damaged.idempotency_key] == 1

    # the one whose file is gone is dropped: its voucher can be synced again once restored
    missing = by_kind[sc.POISON_MISSING_ATTACHMENT]
    code, out, _ = cli(adapter, capsys, "dead-letters", "discard", str(missing.id))
    assert code == 0 and out.strip() == f"discard: 1 dead letters ({missing.id})"
    with adapter.store.transaction() as conn:
        assert outbox.get(conn, missing.id) is None
        assert repo.load_voucher(conn, missing.voucher_id).state is WorkflowState.NONE

    # ids that are not dead letters are named, and nothing happens to them
    code, out, err = cli(adapter, capsys, "dead-letters", "retry", str(damaged.id), "424242")
    assert code == 1 and out.strip() == "retry: 0 dead letters" and f"{damaged.id}, 424242" in err
    code, _, err = cli(adapter, capsys, "dead-letters", "discard")
    assert code == 2 and "give delivery ids or --all" in err

    # the one too large for the OA stays so: retried, it is dead again after one attempt
    code, out, _ = cli(adapter, capsys, "dead-letters", "retry", "--all")
    assert code == 0 and out.strip() == f"retry: 1 dead letters ({refused.id})"
    deliver(adapter)
    assert set(dead_letters(adapter)) == {refused.voucher_id}
    assert len(simulator.db.requests_per_external_key()) == count + 1


def test_retrying_a_dead_letter_that_reached_the_oa_adopts_its_request(tmp_path, capsys):
    """Out of attempts after commit-then-timeout: the OA holds the request, the archive
    holds a dead letter.  Retrying asks the OA first and adopts the request it finds."""
    folder = tmp_path / "vouchers"
    sc.generate_vouchers(folder, 6)
    # every call goes wrong: Create commits then never answers, Find is dropped
    simulator = sc.start_simulator(sc.simulator_config(12, ambiguous_rate=1.0, ambiguous_hold=1.0,
                                                       decide_after=600), tmp_path / "oa")
    settings = sc.run_settings(tmp_path / "data", simulator.url, max_attempts=2, retry_base_seconds=0.01,
                               retry_max_seconds=0.05, workers=6).replace(oa={"timeout": 0.5})
    adapter = sc.bootstrap(settings)
    try:
        sc.import_vouchers(adapter, [folder])
        deliver(adapter)
        dead = dead_letters(adapter)
        assert len(dead) == 6 and all(d.attempts == 2 for d in dead.values())
        per_key = simulator.db.requests_per_external_key()
        assert {d.idempotency_key for d in dead.values()} == set(per_key) and set(per_key.values()) == {1}

        simulator.set_faults(ambiguous_rate=0.0)
        code, out, _ = cli(adapter, capsys, "dead-letters", "retry", "--all")
        assert code == 0 and out.startswith("retry: 6 dead letters")
        counts = deliver(adapter)
        assert (counts.adopted, counts.delivered, counts.dead) == (6, 0, 0)
        assert simulator.db.requests_per_external_key() == per_key  # nothing sent twice
        with adapter.store.transaction() as conn:
            rows = conn.execute(sa.select(sa.func.count()).select_from(outbox.deliveries)
                                .where(outbox.deliveries.c.state == DeliveryState.DELIVERED.value)).scalar()
        assert rows == 6
    finally:
        adapter.close()
        simulator.stop()
