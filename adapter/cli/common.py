"""Options and plumbing shared by the commands."""

from __future__ import annotations

import argparse

from ..settings import Settings, load_settings


def add_common(parser: argparse.ArgumentParser) -> None:
    """--data-dir and --config, accepted by every command."""
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="data folder: SQLite file, blobs, archive-oa.toml (default $ARCHIVE_OA_HOME or ~/.archive-oa)",
    )
    parser.add_argument("--config", metavar="FILE", help="configuration file (default <data dir>/archive-oa.toml)")


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(data_dir=getattr(args, "data_dir", None), config_file=getattr(args, "config", None))


def positive_int(text: str) -> int:
    """argparse type of a count: a whole number of 1 or more (argparse names the option)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number, 1 or more")
    return value
