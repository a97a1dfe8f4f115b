"""``archive-oa config show|example``: the effective settings and where each came from.

``show`` lists every key with its value and its source — the built-in default, the
configuration file, an environment variable or a command-line option — with passwords,
the secret key and the password inside a database URL masked.  ``example`` prints the
shipped ``archive-oa.toml.example``, every key at its default with a one-line comment;
``example --write`` puts it in place as the configuration file, readable by its owner only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..errors import Conflict
from ..masking import MASK, mask_url
from ..settings import SECTIONS, Settings, config_file_path, example_config
from .common import add_common, settings_from
from .output import table

#: Keys whose whole value is a secret.
SECRET_KEYS = frozenset({"oa.password", "security.secret_key"})
#: Keys that are URLs which may carry a password (``scheme://user:password@host``, ``?password=``).
URL_KEYS = frozenset({"database.url", "oa.url", "gateway.public_url"})


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "config",
        help="show the effective settings and where each came from; print an example file",
        description="The configuration: archive-oa.toml, ARCHIVE_OA_* environment variables and options.",
    )
    commands = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    show = commands.add_parser(
        "show",
        help="every setting, its value and its source (default, file, environment, option); secrets masked",
        description=(
            "Print every setting the commands would use, and where each value came from: the built-in "
            "default, the configuration file, an ARCHIVE_OA_* environment variable or an option "
            "(--data-dir). Passwords and keys are masked."
        ),
    )
    show.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    add_common(show)
    show.set_defaults(func=run_show)
    example = commands.add_parser(
        "example",
        help="print archive-oa.toml.example: every key at its default, with a comment (--write: install it)",
        description="Print the example configuration file shipped with the package.  With --write, write it "
        "to <data dir>/archive-oa.toml (or --config FILE) instead, readable by its owner only (it holds "
        "[oa] password), in a folder created owner-only; an existing file is never overwritten.  Then keep "
        "the keys you change.",
    )
    example.add_argument("--write", action="store_true",
                         help="write the configuration file (mode 600) instead of printing; refuses an existing one")
    add_common(example)
    example.set_defaults(func=run_example)


def run_example(args: argparse.Namespace) -> int:
    if not args.write:
        print(example_config(), end="")
        return 0
    from ..environment import writable_folder
    from ..private_files import write_new_private_file

    path = config_file_path(args.data_dir, args.config).expanduser().absolute()
    writable_folder(path.parent, fix="choose another --data-dir / --config")  # created 0700
    try:
        write_new_private_file(path, example_config().encode("utf-8"), temp_prefix=f".{path.name}.")
    except FileExistsError:
        raise Conflict(f"{path} already exists and was left as it is: edit it, or compare it with "
                       "`archive-oa config example`") from None
    print(f"wrote {path} (readable by you only): set [oa] url, user and password there")
    return 0


def run_show(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    config_file = config_file_path(settings.data_dir, args.config)
    rows = effective(settings)
    if args.json:
        print(json.dumps(_as_json(settings, config_file, rows), ensure_ascii=False, indent=2))
        return 0
    kind, where = settings.source_of("data_dir")
    print(f"data folder:  {settings.data_dir}  ({_source_text(kind, where)})")
    print(f"config file:  {config_file}{'' if config_file.is_file() else '  (not found)'}")
    print(f"database:     {mask_url(settings.database_url)}")
    print()
    print(table(
        ["setting", "value", "source"],
        [[f"[{section}] {key}", _toml_text(value), _source_text(kind, where)]
         for section, key, value, kind, where in rows],
    ))
    return 0


def effective(settings: Settings) -> list[tuple[str, str, object, str, str]]:
    """``(section, key, shown value, source kind, source detail)`` for every key, secrets masked."""
    rows = []
    for section, cls in SECTIONS.items():
        values = getattr(settings, section)
        for f in dataclasses.fields(cls):
            name = f"{section}.{f.name}"
            rows.append((section, f.name, _masked(name, getattr(values, f.name)), *settings.source_of(name)))
    return rows


def _masked(name: str, value: object) -> object:
    if name in SECRET_KEYS:
        return MASK if value else value
    if name in URL_KEYS:
        return mask_url(str(value))
    return value


def _source_text(kind: str, where: str) -> str:
    return f"{kind} {where}" if where else kind


def _toml_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _as_json(settings: Settings, config_file: Path, rows) -> dict:
    kind, where = settings.source_of("data_dir")
    sections: dict[str, dict] = {}
    for section, key, value, kind_, where_ in rows:
        sections.setdefault(section, {})[key] = {"value": value, "source": kind_, "from": where_}
    return {
        "data_dir": {"value": str(settings.data_dir), "source": kind, "from": where},
        "config_file": {"path": str(config_file), "exists": config_file.is_file()},
        "database_url": mask_url(settings.database_url),
        "settings": sections,
    }
