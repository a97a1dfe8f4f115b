"""``archive-oa users …``: the gateway's users, their roles, scope and credentials.

Passwords come from an interactive prompt (asked twice) or, for scripts, from the
first line of standard input with ``--password-stdin`` — never from the command line,
where ``ps`` and shell histories would show them.  Every change is written to the
audit log with the operating-system user who made it.
"""

from __future__ import annotations

import getpass
import json
import sys
from contextlib import contextmanager

from ..errors import ValidationFailed
from .common import add_common, settings_from
from .output import table as _table

_ROLES_HELP = "viewer, archivist, operator, admin (each includes the ones before) or auditor"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "users", help="gateway users: add, list, passwords, roles, organisation scope, keys",
        description="Manage who may call the gateway. Roles: " + _ROLES_HELP + ".",
    )
    commands = parser.add_subparsers(dest="users_command", metavar="SUBCOMMAND", required=True)

    add = _command(commands, "add", run_add, "create a user (password from a prompt or --password-stdin)")
    add.add_argument("username")
    add.add_argument("--role", dest="roles", action="append", required=True, metavar="ROLE",
                     help=f"repeatable: {_ROLES_HELP}")
    _scope_options(add, required=True)
    add.add_argument("--disabled", action="store_true", help="create the user disabled")
    _password_option(add)

    listing = _command(commands, "list", run_list,
                       "list users (roles, scope, status, failed logins) and addresses that failed or are locked")
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")

    passwd = _command(commands, "passwd", run_passwd, "set a user's password")
    passwd.add_argument("username")
    _password_option(passwd)

    for name, text in (("disable", "refuse every login of the user"),
                       ("enable", "allow the user again and lift a lockout of the name")):
        sub = _command(commands, name, run_enable if name == "enable" else run_disable, text)
        sub.add_argument("username")

    for name, text, func in (("grant", "give roles to a user", run_grant),
                             ("revoke", "take roles from a user", run_revoke)):
        sub = _command(commands, name, func, text)
        sub.add_argument("username")
        sub.add_argument("roles", nargs="+", metavar="ROLE", help=_ROLES_HELP)

    scope = _command(commands, "scope", run_scope, "set the organisations (orgCode) a user may see")
    scope.add_argument("username")
    _scope_options(scope, required=True)

    unlock = _command(commands, "unlock", run_unlock,
                      "lift the locks of a user name or a source address and forget its failures")
    target = unlock.add_mutually_exclusive_group(required=True)
    target.add_argument("username", nargs="?",
                        help="the locked user name: its lock everywhere and from every address")
    target.add_argument("--address", "--source", dest="address", metavar="ADDRESS",
                        help="the locked source address instead (as users list shows it): its lock and "
                             "those of every user name from it")

    _command(commands, "rotate-key", run_rotate_key,
             "re-encrypt the stored PasswordDigest secrets with a new key (docs/security.md: rotating the key)")
    _command(commands, "new-key", run_new_key, "print a new encryption key for [security] secret_key")


def _command(commands, name, func, text):
    parser = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
    add_common(parser)
    parser.set_defaults(func=func)
    return parser


def _scope_options(parser, *, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--org", dest="orgs", action="append", metavar="ORG",
                       help="an organisation code the user may see (repeatable)")
    group.add_argument("--all-orgs", action="store_true", help="every organisation")


def _password_option(parser) -> None:
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input (for scripts)")


# --- handlers ------------------------------------------------------------------------------------


def run_add(args) -> int:
    password = _read_password(args)
    with _users(args) as users:
        principal = users.add_user(args.username, password, args.roles, _scope(args), disabled=args.disabled,
                                   replace=False, actor=_actor())
    print(f"user {principal.username} added: roles {_roles(principal.roles)}, scope {_scope_text(principal.org_scope)}"
          + (" (disabled)" if args.disabled else ""))
    return 0


def run_list(args) -> int:
    with _users(args) as users:
        listed, addresses, pairs = users.list_users(), users.list_addresses(), users.list_pairs()
        unknown = users.list_unknown_names()
        window = users.security.failure_window_seconds
    if args.json:
        print(json.dumps({"users": [_user_json(u) for u in listed],
                          "addresses": [_throttled_json(a, "address") for a in addresses],
                          "unknown_names": [_throttled_json(n, "name") for n in unknown],
                          "pairs": [_pair_json(p) for p in pairs],
                          "failure_window_seconds": window}, ensure_ascii=False, indent=2))
        return 0
    rows = [
        [u.username, _roles(u.roles), _scope_text(u.org_scope), _status(u), "yes" if u.digest_ready else "no",
         u.failures, u.created_at.strftime("%Y-%m-%d %H:%M")]
        for u in listed
    ]
    print(_table(["user", "roles", "scope", "status", "digest", "failures", "created (UTC)"], rows)
          if rows else "no users")
    for title, header, entries in (("source addresses", ["address"], addresses),
                                   ("names that are no user", ["name"], unknown),
                                   ("user names from one address", ["name", "address"], pairs)):
        if entries:
            print(f"\n{title} with failed logins in the last {window} s or locked:")
            print(_table([*header, "failures", "status"],
                         [[t.subject, *([t.address] if t.address else []), t.failures, _lock_text(t.locked_until)]
                          for t in entries]))
    return 0


def run_passwd(args) -> int:
    password = _read_password(args)
    with _users(args) as users:
        users.set_password(args.username, password, actor=_actor())
    print(f"password of user {args.username} changed")
    return 0


def run_disable(args) -> int:
    with _users(args) as users:
        users.set_disabled(args.username, True, actor=_actor())
    print(f"user {args.username} disabled")
    return 0


def run_enable(args) -> int:
    with _users(args) as users:
        users.set_disabled(args.username, False, actor=_actor())
    print(f"user {args.username} enabled")
    return 0


def run_grant(args) -> int:
    with _users(args) as users:
        roles = users.grant(args.username, args.roles, actor=_actor())
    print(f"user {args.username} now holds: {_roles(roles)}")
    return 0


def run_revoke(args) -> int:
    with _users(args) as users:
        roles = users.revoke(args.username, args.roles, actor=_actor())
    print(f"user {args.username} now holds: {_roles(roles)}")
    return 0


def run_scope(args) -> int:
    scope = _scope(args)
    with _users(args) as users:
        users.set_scope(args.username, scope, actor=_actor())
    print(f"user {args.username} now sees: {_scope_text(scope)}")
    return 0


def run_unlock(args) -> int:
    kind, subject = ("source", args.address) if args.address else ("user", args.username)
    with _users(args) as users:
        lifted = users.unlock(kind, subject, actor=_actor())
    from ..store.users import split_pair

    if not any(lock.subject_kind == kind for lock in lifted):
        everywhere = " everywhere" if kind == "user" and lifted else ""  # only from some addresses
        print(f"{kind} {subject}: was not locked{everywhere} (its failure count is reset)")
    for lock in lifted:  # its own lock first, then the name's from one address / the address's names'
        what = f"{kind} {subject}" if lock.subject_kind == kind else "user {} from {}".format(*split_pair(lock.subject))
        print(f"{what}: lock lifted")
    return 0


def run_rotate_key(args) -> int:
    with _users(args) as users:
        count, key_id = users.rotate_key(actor=_actor())
        where = users.keys.key_file if users.keys.from_file else "security.secret_key"
    print(f"{count} secret(s) re-encrypted with key id {key_id}")
    if users.keys.from_file:
        print(f"{where} now holds only the new key (back it up with the database)")
    else:
        print("every secret now uses the first key of security.secret_key: remove the old keys from it")
    return 0


def run_new_key(args) -> int:
    from ..security.secrets import generate_key

    print(generate_key())
    return 0


# --- helpers -------------------------------------------------------------------------------------


@contextmanager
def _users(args):
    from ..services.users import UserService
    from ..store.engine import open_store

    settings = settings_from(args)
    store = open_store(settings)
    try:
        yield UserService(store, settings=settings)
    finally:
        store.dispose()


def _read_password(args) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
        if not password:
            raise ValidationFailed("--password-stdin read an empty first line: pipe the password, then a newline")
        return password
    if not sys.stdin.isatty():
        raise ValidationFailed("no terminal to ask for the password: pipe it with --password-stdin")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("password again: "):
        raise ValidationFailed("the two passwords differ: nothing changed, try again")
    if not first:
        raise ValidationFailed("the password must not be empty")
    return first


def _actor():
    from ..services.users import Actor

    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        name = "unknown"
    return Actor(name=f"os:{name}", source="cli")


def _scope(args):
    return None if args.all_orgs else list(args.orgs)


def _roles(roles) -> str:
    return ", ".join(sorted(roles))


def _scope_text(scope) -> str:
    return "all organisations" if scope is None else ", ".join(sorted(scope))


def _status(user) -> str:
    return "disabled" if user.disabled else _lock_text(user.locked_until)


def _lock_text(locked_until) -> str:
    return "active" if locked_until is None else "locked until " + locked_until.strftime("%Y-%m-%d %H:%M UTC")


def _user_json(user) -> dict:
    return {"username": user.username, "roles": sorted(user.roles),
            "org_scope": None if user.org_scope is None else sorted(user.org_scope),
            "disabled": user.disabled, "digest_ready": user.digest_ready, "failures": user.failures,
            "locked_until": _iso(user.locked_until), "created_at": _iso(user.created_at)}


def _throttled_json(entry, key: str) -> dict:
    return {key: entry.subject, "failures": entry.failures, "locked_until": _iso(entry.locked_until)}


def _pair_json(entry) -> dict:
    return {"name": entry.subject, "address": entry.address, "failures": entry.failures,
            "locked_until": _iso(entry.locked_until)}


def _iso(moment) -> str | None:
    return None if moment is None else moment.isoformat()
