"""``archive-oa users …``: round trips with passwords on stdin, every change audited, no secret shown."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys

import pytest

from archive_oa.cli.main import main
from archive_oa.errors import AuthenticationFailed
from archive_oa.security.passwords import password_digest
from archive_oa.security.secrets import KEY_FILE_NAME, generate_key, key_id
from archive_oa.services import audit
from archive_oa.services.users import UserService
from archive_oa.settings import load_settings
from archive_oa.store.engine import open_store

NONCE, CREATED = b"0123456789abcdef", "2026-01-31T08:00:00Z"
PASSWORD = "pw-for-tests-2026"  # [security] min_password_length: 12 characters


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


@pytest.mark.slow
def test_add_list_and_every_change_round_trip(cli):
    assert cli("add", "alice", "--role", "viewer", "--org", "ORG1", "--org", "ORG2", "--password-stdin",
               stdin="pw-一-密码-2026!\n")[0] == 0
    check(service(cli.data_dir), "alice", "pw-一-密码-2026!")
    code, out, _ = cli("list")
    assert code == 0
    header, rule, row = out.splitlines()
    assert header.split() == ["user", "roles", "scope", "status", "digest", "failures", "created", "(UTC)"]
    assert row.split()[:7] == ["alice", "viewer", "ORG1,", "ORG2", "active", "yes", "0"]
    assert "scrypt" not in out and "pw-一-密码-2026!" not in out

    assert cli("passwd", "alice", "--password-stdin", stdin="new-pw-2026-密码\r\n")[0] == 0
    check(service(cli.data_dir), "alice", "new-pw-2026-密码")
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
    assert "pw-一-密码-2026!" not in str(records) and "new-pw-2026-密码" not in str(records)


@pytest.mark.slow
def test_mistakes_are_refused_with_what_to_fix_and_change_nothing(cli):
    assert cli("add", "bob", "--role", "viewer", "--all-orgs", "--password-stdin", stdin=PASSWORD + "\n")[0] == 0
    code, _, err = cli("add", "bob", "--role", "viewer", "--all-orgs", "--password-stdin", stdin="other-pw-2026\n")
    assert code == 2 and "user 'bob' already exists" in err
    code, _, err = cli("add", "carol", "--role", "superuser", "--all-orgs", "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 2 and "must be one or more of" in err and "superuser" in err
    code, _, err = cli("passwd", "nobody", "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 2 and "user 'nobody' does not exist" in err
    code, _, err = cli("revoke", "bob", "viewer")
    assert code == 2 and "would hold no role" in err
    code, _, err = cli("passwd", "bob", "--password-stdin", stdin="\n")
    assert code == 2 and "empty" in err
    code, _, err = cli("passwd", "bob")  # no terminal, no --password-stdin
    assert code == 2 and "--password-stdin" in err
    check(service(cli.data_dir), "bob", PASSWORD)  # still the first password
    assert [op for op, *_ in audited(cli.data_dir)] == ["UserAdd"]


def test_the_password_is_never_an_argument(cli):
    with pytest.raises(SystemExit):
        cli("add", "eve", "--role", "viewer", "--all-orgs", "--password", "pw")


def test_prompted_password_is_asked_twice(cli, monkeypatch):
    answers = iter(["prompted-pw-a", "prompted-pw-b", "prompted-pw-c", "prompted-pw-c"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    code, _, err = cli("add", "dan", "--role", "viewer", "--all-orgs", terminal=True)
    assert code == 2 and "the two passwords differ" in err
    assert cli("add", "dan", "--role", "viewer", "--all-orgs", terminal=True)[0] == 0
    check(service(cli.data_dir), "dan", "prompted-pw-c")


def test_rotate_key_with_the_key_file(cli):
    cli("add", "alice", "--role", "viewer", "--all-orgs", "--password-stdin", stdin=PASSWORD + "\n")
    key_file = cli.data_dir / KEY_FILE_NAME
    old = key_file.read_text().strip()
    code, out, _ = cli("rotate-key")
    new = key_file.read_text().strip()
    assert code == 0 and new != old and f"re-encrypted with key id {key_id(new)}" in out
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    check(service(cli.data_dir), "alice", PASSWORD)


def test_unlock_and_new_key(cli):
    cli("add", "alice", "--role", "viewer", "--all-orgs", "--password-stdin", stdin=PASSWORD + "\n")
    assert cli("unlock", "--source", "198.51.100.7")[1].startswith("source 198.51.100.7: was not locked")
    assert cli("unlock", "alice")[0] == 0
    key = cli("new-key")[1].strip()
    assert len(key) == 44 and key != generate_key()


@pytest.mark.slow
def test_short_passwords_and_the_user_name_as_password_are_refused(cli):
    code, _, err = cli("add", "carol", "--role", "viewer", "--all-orgs", "--password-stdin", stdin="short-pw\n")
    assert code == 2 and "[security] min_password_length asks for at least 12" in err
    assert "the password has 8 characters" in err and "short-pw" not in err
    code, _, err = cli("add", "carol-the-clerk", "--role", "viewer", "--all-orgs", "--password-stdin",
                       stdin="Carol-The-Clerk\n")
    assert code == 2 and "the password equals the user name (ignoring case): choose another" in err
    assert cli("add", "carol", "--role", "viewer", "--all-orgs", "--password-stdin", stdin=PASSWORD + "\n")[0] == 0
    code, _, err = cli("passwd", "carol", "--password-stdin", stdin="CAROL\n")
    assert code == 2 and "min_password_length" in err and "equals the user name" in err
    check(service(cli.data_dir), "carol", PASSWORD)
    assert [op for op, *_ in audited(cli.data_dir)] == ["UserAdd"]


def test_min_password_length_is_a_setting(cli, monkeypatch):
    monkeypatch.setenv("ARCHIVE_OA_SECURITY_MIN_PASSWORD_LENGTH", "20")
    code, _, err = cli("add", "dora", "--role", "viewer", "--all-orgs", "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 2 and "at least 20" in err
    monkeypatch.setenv("ARCHIVE_OA_SECURITY_MIN_PASSWORD_LENGTH", "4")
    assert cli("add", "dora", "--role", "viewer", "--all-orgs", "--password-stdin", stdin="dora-pw\n")[0] == 0


def _fail_logins(data_dir, attempts):
    """Failed logins as the gateway counts them: (name, address) pairs with a wrong password."""
    from archive_oa.gateway.auth import Credentials, PasswordAuthenticator
    from archive_oa.security.transport import Origin

    users = service(data_dir)
    auth = PasswordAuthenticator(users, sleep=lambda seconds: None)
    try:
        for name, address in attempts:
            with pytest.raises(AuthenticationFailed):
                auth.authenticate(Credentials(name, "wrong-password", "basic"), Origin(address, secure=True))
    finally:
        users.store.dispose()


@pytest.mark.slow
def test_list_shows_failures_and_locks_of_users_and_addresses_and_unlock_lifts_either(cli):
    cli("add", "alice", "--role", "viewer", "--all-orgs", "--password-stdin", stdin=PASSWORD + "\n")
    _fail_logins(cli.data_dir, [("ghost-user", "198.51.100.7")] * 10 + [("alice", "203.0.113.5")] * 2)
    code, out, _ = cli("list")
    users_part, addresses, names, pairs = out.split("\n\n")
    assert users_part.splitlines()[2].split()[4:7] == ["active", "yes", "2"]
    assert addresses.splitlines()[0] == "source addresses with failed logins in the last 900 s or locked:"
    assert addresses.splitlines()[3].split()[:4] == ["198.51.100.7", "0", "locked", "until"]
    assert addresses.splitlines()[4].split() == ["203.0.113.5", "2", "active"]
    # issue 9: ten failures of one name from one address lock that name from there, not everywhere
    assert names.splitlines()[3].split() == ["ghost-user", "10", "active"]
    assert pairs.splitlines()[0] == "user names from one address with failed logins in the last 900 s or locked:"
    assert pairs.splitlines()[3].split() == ["alice", "203.0.113.5", "2", "active"]
    assert pairs.splitlines()[4].split()[:5] == ["ghost-user", "198.51.100.7", "0", "locked", "until"]

    listed = json.loads(cli("list", "--json")[1])
    (alice,) = listed["users"]
    assert alice == {"username": "alice", "roles": ["viewer"], "org_scope": None, "disabled": False,
                     "digest_ready": True, "failures": 2, "locked_until": None, "created_at": alice["created_at"]}
    assert [(a["address"], a["failures"], a["locked_until"] is not None) for a in listed["addresses"]] == [
        ("198.51.100.7", 0, True), ("203.0.113.5", 2, False)]
    assert [n["name"] for n in listed["unknown_names"]] == ["ghost-user"]
    assert [(p["name"], p["address"], p["failures"], p["locked_until"] is not None) for p in listed["pairs"]] == [
        ("alice", "203.0.113.5", 2, False), ("ghost-user", "198.51.100.7", 0, True)]

    assert cli("unlock", "--address", "198.51.100.7")[1] == (  # the address and the names locked from it
        "source 198.51.100.7: lock lifted\nuser ghost-user from 198.51.100.7: lock lifted\n")
    assert cli("unlock", "ghost-user")[1] == "user ghost-user: was not locked (its failure count is reset)\n"
    listed = json.loads(cli("list", "--json")[1])
    assert [a["address"] for a in listed["addresses"]] == ["203.0.113.5"] and listed["unknown_names"] == []
    assert [p["name"] for p in listed["pairs"]] == ["alice"]
    _fail_logins(cli.data_dir, [("alice", "203.0.113.5")] * 8)  # alice from there: 10, locked there only
    assert cli("unlock", "alice")[1] == ("user alice: was not locked everywhere (its failure count is reset)\n"
                                         "user alice from 203.0.113.5: lock lifted\n")
    unlocks = [(targets, actor, details) for op, targets, actor, _, details in audited(cli.data_dir)
               if op == "AuthUnlock"]
    assert [(targets, details) for targets, _, details in unlocks] == [
        (("source:198.51.100.7",), {"was_locked": True, "pair_locks_lifted": ["ghost-user"]}),
        (("user:ghost-user",), {"was_locked": False, "pair_locks_lifted": []}),
        (("user:alice",), {"was_locked": False, "pair_locks_lifted": ["203.0.113.5"]})]
    assert all(actor.startswith("os:") for _, actor, _ in unlocks)
    locks = [targets for op, targets, *_ in audited(cli.data_dir) if op == "AuthLockout"]
    assert sorted(locks) == [("source:198.51.100.7",), ("source:203.0.113.5",),
                             ("user:alice", "source:203.0.113.5"), ("user:ghost-user", "source:198.51.100.7")]


@pytest.mark.slow
def test_the_console_script_reads_the_password_from_a_pipe(tmp_path):
    env = {**os.environ, "ARCHIVE_OA_HOME": str(tmp_path)}
    env.pop("ARCHIVE_OA_SECURITY_SECRET_KEY", None)
    script = os.path.join(os.path.dirname(sys.executable), "archive-oa")
    added = subprocess.run([script, "users", "add", "ops", "--role", "operator", "--org", "HD01", "--password-stdin"],
                           input="管道-pw-2026-密码\n", capture_output=True, text=True, env=env, timeout=120)
    assert added.returncode == 0, added.stderr
    listed = subprocess.run([script, "users", "list"], capture_output=True, text=True, env=env, timeout=120)
    assert "ops" in listed.stdout and "HD01" in listed.stdout and "管道-pw-2026-密码" not in listed.stdout
    check(service(tmp_path), "ops", "管道-pw-2026-密码")
