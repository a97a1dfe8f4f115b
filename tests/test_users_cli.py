"""``archive-oa users …``: round trips with passwords on stdin, every change audited, no secret shown."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys

import pytest

from archive_oa.cli.main import main
from archive_oa.security.passwords import password_digest
from archive_oa.security.secrets import KEY_FILE_NAME, generate_key, key_id
from archive_oa.services import audit
from archive_oa.services.users import UserService
from archive_oa.settings import load_settings
from archive_oa.store.engine import open_store

NONCE, CREATED = b"0123456789abcdef", "2026-01-31T08:00:00Z"


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """cli(*argv, stdin="") -> (exit code, stdout, stderr) against a data folder of its own."""
    monkeypatch.delenv("ARCHIVE_OA_SECURITY_SECRET_KEY", raising=False)

    def run(*argv, stdin="", terminal=False):
        monkeypatch.setattr(sys, "stdin", _Terminal(stdin) if terminal else io.StringIO(stdin))
        code = main(["users", *argv, "--data-dir", str(tmp_path)])
        out, err = capsys.readouterr()
        return code, out, err

    run.data_dir = tmp_path
    return run


class _Terminal(io.StringIO):
    """Standard input that says it is a terminal (the prompt path)."""

    def isatty(self) -> bool:
        return True


def service(data_dir, **env):
    settings = load_settings(data_dir=data_dir, env=env)
    return UserService(open_store(settings), settings=settings)


def check(users, name, password):
    """Both ways a gateway checks a password: scrypt hash (text) and the decrypted secret (digest)."""
    try:
        users.authenticate(name, password)
        users.authenticate_digest(name, password_digest(NONCE, CREATED, password), NONCE, CREATED)
    finally:
        users.store.dispose()


def audited(data_dir):
    store = open_store(load_settings(data_dir=data_dir, env={}))
    try:
        with store.transaction() as conn:
            return [(r.operation, r.targets, r.actor, r.source, r.details) for r in audit.find_records(conn)]
    finally:
        store.dispose()


def test_add_list_and_every_change_round_trip(cli):
    assert cli("add", "alice", "--role", "viewer", "--org", "ORG1", "--org", "ORG2", "--password-stdin",
               stdin="pw-一\n")[0] == 0
    check(service(cli.data_dir), "alice", "pw-一")
    code, out, _ = cli("list")
    assert code == 0
    header, rule, row = out.splitlines()
    assert header.split() == ["user", "roles", "scope", "status", "digest", "created", "(UTC)"]
    assert row.split()[:6] == ["alice", "viewer", "ORG1,", "ORG2", "active", "yes"]
    assert "scrypt" not in out and "pw-一" not in out

    assert cli("passwd", "alice", "--password-stdin", stdin="new-pw\r\n")[0] == 0
    check(service(cli.data_dir), "alice", "new-pw")
    assert cli("grant", "alice", "operator", "auditor")[1] == "user alice now holds: auditor, operator, viewer\n"
    assert cli("revoke", "alice", "viewer")[1] == "user alice now holds: auditor, operator\n"
    assert cli("scope", "alice", "--all-orgs")[1] == "user alice now sees: all organisations\n"
    assert cli("disable", "alice")[0] == 0
    assert "disabled" in cli("list")[1]
    assert cli("enable", "alice")[0] == 0
    assert cli("scope", "alice", "--org", "ORG3")[0] == 0
    users = service(cli.data_dir)
    (info,) = users.list_users()
    users.store.dispose()
    assert (info.roles, info.org_scope, info.disabled) == ({"auditor", "operator"}, {"ORG3"}, False)

    records = audited(cli.data_dir)
    assert [op for op, *_ in records] == [
        "UserAdd", "UserPassword", "UserGrant", "UserRevoke", "UserScope", "UserDisable", "UserEnable", "UserScope",
    ]
    assert all(targets == ("alice",) and source == "cli" and actor.startswith("os:")
               for _, targets, actor, source, _ in records)
    assert records[0][4]["roles"] == ["viewer"] and records[0][4]["org_scope"] == ["ORG1", "ORG2"]
    assert "pw-一" not in str(records) and "new-pw" not in str(records)


def test_mistakes_are_refused_with_what_to_fix_and_change_nothing(cli):
    assert cli("add", "bob", "--role", "viewer", "--all-orgs", "--password-stdin", stdin="pw\n")[0] == 0
    code, _, err = cli("add", "bob", "--role", "viewer", "--all-orgs", "--password-stdin", stdin="other\n")
    assert code == 2 and "user 'bob' already exists" in err
    code, _, err = cli("add", "carol", "--role", "superuser", "--all-orgs", "--password-stdin", stdin="pw\n")
    assert code == 2 and "must be one or more of" in err and "superuser" in err
    code, _, err = cli("passwd", "nobody", "--password-stdin", stdin="pw\n")
    assert code == 2 and "user 'nobody' does not exist" in err
    code, _, err = cli("revoke", "bob", "viewer")
    assert code == 2 and "would hold no role" in err
    code, _, err = cli("passwd", "bob", "--password-stdin", stdin="\n")
    assert code == 2 and "empty" in err
    code, _, err = cli("passwd", "bob")  # no terminal, no --password-stdin
    assert code == 2 and "--password-stdin" in err
    check(service(cli.data_dir), "bob", "pw")  # still the first password
    assert [op for op, *_ in audited(cli.data_dir)] == ["UserAdd"]


def test_the_password_is_never_an_argument(cli):
    with pytest.raises(SystemExit):
        cli("add", "eve", "--role", "viewer", "--all-orgs", "--password", "pw")


def test_prompted_password_is_asked_twice(cli, monkeypatch):
    answers = iter(["pw-a", "pw-b", "pw-c", "pw-c"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    code, _, err = cli("add", "dan", "--role", "viewer", "--all-orgs", terminal=True)
    assert code == 2 and "the two passwords differ" in err
    assert cli("add", "dan", "--role", "viewer", "--all-orgs", terminal=True)[0] == 0
    check(service(cli.data_dir), "dan", "pw-c")


def test_rotate_key_with_the_key_file(cli):
    cli("add", "alice", "--role", "viewer", "--all-orgs", "--password-stdin", stdin="pw\n")
    key_file = cli.data_dir / KEY_FILE_NAME
    old = key_file.read_text().strip()
    code, out, _ = cli("rotate-key")
    new = key_file.read_text().strip()
    assert code == 0 and new != old and f"re-encrypted with key id {key_id(new)}" in out
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    check(service(cli.data_dir), "alice", "pw")


def test_unlock_and_new_key(cli):
    cli("add", "alice", "--role", "viewer", "--all-orgs", "--password-stdin", stdin="pw\n")
    assert cli("unlock", "--source", "198.51.100.7")[1].startswith("source 198.51.100.7: was not locked")
    assert cli("unlock", "alice")[0] == 0
    key = cli("new-key")[1].strip()
    assert len(key) == 44 and key != generate_key()


def test_the_console_script_reads_the_password_from_a_pipe(tmp_path):
    env = {**os.environ, "ARCHIVE_OA_HOME": str(tmp_path)}
    env.pop("ARCHIVE_OA_SECURITY_SECRET_KEY", None)
    script = os.path.join(os.path.dirname(sys.executable), "archive-oa")
    added = subprocess.run([script, "users", "add", "ops", "--role", "operator", "--org", "HD01", "--password-stdin"],
                           input="管道-pw\n", capture_output=True, text=True, env=env, timeout=120)
    assert added.returncode == 0, added.stderr
    listed = subprocess.run([script, "users", "list"], capture_output=True, text=True, env=env, timeout=120)
    assert "ops" in listed.stdout and "HD01" in listed.stdout and "管道-pw" not in listed.stdout
    check(service(tmp_path), "ops", "管道-pw")
