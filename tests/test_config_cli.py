"""Configuration you can see: ``archive-oa config show`` and the shipped example file.

Every key the settings loader knows is in ``archive-oa.toml.example`` (with a comment, at its
default) and in ``docs/configuration.md``; ``config show`` names each value's source and never
prints a secret.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import tomllib
from pathlib import Path

import pytest

from archive_oa.cli.main import main
from archive_oa.settings import SECTIONS, example_config, load_settings

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def loader_keys() -> set[tuple[str, str]]:
    return {(section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}


# --- the example file -------------------------------------------------------------------------

def test_example_names_every_key_the_loader_knows_and_no_other():
    document = tomllib.loads(example_config())
    in_example = {(section, key) for section, keys in document.items() for key in keys}
    assert loader_keys() - in_example == set(), "keys missing from archive-oa.toml.example"
    assert in_example - loader_keys() == set(), "keys in the example the loader does not know"


def test_every_key_of_the_example_has_a_comment_line_above_it():
    lines = example_config().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^[a-z_]+ = ", line):
            assert lines[number - 1].startswith("# "), f"no comment above {line!r}"


def test_the_example_loads_to_the_built_in_defaults(tmp_path):
    example = tmp_path / "example.toml"
    example.write_text(example_config(), encoding="utf-8")
    from_example = load_settings(data_dir=tmp_path, config_file=example, env={})
    assert from_example == load_settings(data_dir=tmp_path, env={})
    assert from_example.source_of("oa.url")[0] == "file"


def test_config_example_prints_the_shipped_file(capsys):
    assert main(["config", "example"]) == 0
    assert capsys.readouterr().out == example_config()


def test_config_example_write_installs_it_owner_only_and_never_overwrites(tmp_path, capsys):
    old_umask = os.umask(0o022)  # the common default: without care, 0644 and 0755
    try:
        home = tmp_path / "new" / "home"
        assert main(["config", "example", "--write", "--data-dir", str(home)]) == 0
    finally:
        os.umask(old_umask)
    written = home / "archive-oa.toml"
    assert str(written) in capsys.readouterr().out
    assert written.read_text(encoding="utf-8") == example_config()
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700

    written.write_text("[oa]\nurl = \"http://mine\"\n", encoding="utf-8")
    assert main(["config", "example", "--write", "--config", str(written)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert written.read_text(encoding="utf-8") == "[oa]\nurl = \"http://mine\"\n"


@pytest.mark.parametrize("text, mode, warned", [
    ('[oa]\npassword = "pw-in-file"\n', 0o644, True),
    ('[database]\nurl = "postgresql+psycopg://u:pw@h/db"\n', 0o640, True),
    ('[oa]\npassword = "pw-in-file"\n', 0o600, False),
    ('[oa]\nurl = "http://oa"\n', 0o644, False),
])
def test_a_configuration_file_holding_a_password_others_can_read_is_one_warning(tmp_path, caplog, text, mode, warned):
    path = tmp_path / "archive-oa.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    with caplog.at_level("WARNING", logger="archive_oa.settings"):
        load_settings(data_dir=tmp_path, env={})
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == (1 if warned else 0)
    if warned:
        assert str(path) in warnings[0] and f"chmod 600 {path}" in warnings[0] and "pw-in-file" not in warnings[0] and ":pw@" not in warnings[0]


# --- the documentation ------------------------------------------------------------------------

def _doc_sections() -> dict[str, str]:
    """``{"oa": text under "## [oa]", …}`` of docs/configuration.md."""
    parts = re.split(r"^## \[(\w+)\]", DOCS.read_text(encoding="utf-8"), flags=re.M)
    return {parts[i]: parts[i + 1].split("\n## ")[0] for i in range(1, len(parts), 2)}


def test_docs_configuration_documents_every_key_in_its_section():
    sections = _doc_sections()
    missing = sorted(f"[{s}] {k}" for s, k in loader_keys() if f"`{k}`" not in sections.get(s, ""))
    assert missing == [], "keys not documented in docs/configuration.md"


def test_docs_configuration_shows_the_shipped_example_as_it_is():
    text = DOCS.read_text(encoding="utf-8")
    block = re.search(r"```toml\n(# archive-oa.toml: every setting.*?)```", text, flags=re.S)
    assert block is not None, "docs/configuration.md lacks the example file"
    assert block.group(1) == example_config()


# --- config show ------------------------------------------------------------------------------

@pytest.fixture
def show(monkeypatch, capsys):
    """show(*argv, **environment) -> the --json object; the environment holds only what is given."""
    for var in [v for v in os.environ if v.startswith("ARCHIVE_OA_")]:
        monkeypatch.delenv(var)

    def run(*argv, **env):
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        assert main(["config", "show", *argv]) == 0
        return capsys.readouterr().out

    return run


def test_config_show_names_the_source_of_each_value(show, tmp_path):
    (tmp_path / "archive-oa.toml").write_text('[oa]\nurl = "http://oa.file/ws"\ntimeout = 12\n', encoding="utf-8")
    out = json.loads(show("--json", "--data-dir", str(tmp_path), ARCHIVE_OA_OA_TIMEOUT="7", ARCHIVE_OA_PUBLIC_URL="https://gw"))
    oa, gateway = out["settings"]["oa"], out["settings"]["gateway"]
    assert out["data_dir"] == {"value": str(tmp_path), "source": "option", "from": "--data-dir"}
    assert out["config_file"] == {"path": str(tmp_path / "archive-oa.toml"), "exists": True}
    assert oa["url"] == {"value": "http://oa.file/ws", "source": "file", "from": str(tmp_path / "archive-oa.toml")}
    assert oa["timeout"] == {"value": 7.0, "source": "environment", "from": "ARCHIVE_OA_OA_TIMEOUT"}
    assert gateway["public_url"] == {"value": "https://gw", "source": "environment", "from": "ARCHIVE_OA_PUBLIC_URL"}
    assert oa["connect_timeout"] == {"value": 5.0, "source": "default", "from": ""}
    assert {(s, k) for s, keys in out["settings"].items() for k in keys} == loader_keys()


def test_config_show_data_folder_from_the_environment_and_by_default(show, tmp_path):
    out = json.loads(show("--json", ARCHIVE_OA_HOME=str(tmp_path)))
    assert out["data_dir"] == {"value": str(tmp_path), "source": "environment", "from": "ARCHIVE_OA_HOME"}
    assert out["config_file"]["exists"] is False
    assert out["database_url"] == f"sqlite:///{tmp_path / 'archive-oa.db'}"
    os.environ.pop("ARCHIVE_OA_HOME")
    assert json.loads(show("--json"))["data_dir"]["source"] == "default"


def test_config_show_masks_passwords_keys_and_the_database_url_password(show, tmp_path):
    (tmp_path / "archive-oa.toml").write_text('[security]\nsecret_key = "key-in-file"\n', encoding="utf-8")
    env = {
        "ARCHIVE_OA_OA_PASSWORD": "oa-pass-word",
        "ARCHIVE_OA_DATABASE_URL": "postgresql+psycopg://ops:db@pass/word@db.internal:5432/archive",
    }
    text = show("--data-dir", str(tmp_path), **env)
    out = json.loads(show("--json", "--data-dir", str(tmp_path)))
    for secret in ("key-in-file", "oa-pass-word", "db@pass", "pass/word"):
        assert secret not in text and secret not in json.dumps(out)
    assert out["settings"]["oa"]["password"]["value"] == "********"
    assert out["settings"]["security"]["secret_key"] == {
        "value": "********", "source": "file", "from": str(tmp_path / "archive-oa.toml")}
    masked = "postgresql+psycopg://ops:********@db.internal:5432/archive"
    assert out["settings"]["database"]["url"]["value"] == masked
    assert out["database_url"] == masked
    assert "environment ARCHIVE_OA_OA_PASSWORD" in text and masked in text


def test_config_show_masks_passwords_in_url_queries_and_in_the_oa_and_public_urls(show, tmp_path):
    env = {
        "ARCHIVE_OA_DATABASE_URL": "postgresql+psycopg://ops@db.internal/archive?sslmode=require&password=q-pass",
        "ARCHIVE_OA_OA_URL": "https://svc:oa-userinfo@oa.example/ws?access_token=oa-token",
        "ARCHIVE_OA_PUBLIC_URL": "https://gw:gw-userinfo@gateway.example",
    }
    text = show("--data-dir", str(tmp_path), **env)
    out = json.loads(show("--json", "--data-dir", str(tmp_path)))
    for secret in ("q-pass", "oa-userinfo", "oa-token", "gw-userinfo"):
        assert secret not in text and secret not in json.dumps(out)
    assert out["database_url"] == "postgresql+psycopg://ops@db.internal/archive?sslmode=require&password=********"
    assert out["settings"]["oa"]["url"]["value"] == "https://svc:********@oa.example/ws?access_token=********"
    assert out["settings"]["gateway"]["public_url"]["value"] == "https://gw:********@gateway.example"


def test_serve_records_its_host_port_and_threads_options_as_their_source(tmp_path, monkeypatch):
    from archive_oa.cli.main import build_parser
    from archive_oa.cli.serve import serve_settings

    for var in [v for v in os.environ if v.startswith("ARCHIVE_OA_")]:
        monkeypatch.delenv(var)
    config = tmp_path / "archive-oa.toml"
    config.write_text('[gateway]\nport = 9000\nhost = "0.0.0.0"\n', encoding="utf-8")
    args = build_parser().parse_args(["serve", "--data-dir", str(tmp_path), "--port", "9100", "--threads", "3"])
    settings = serve_settings(args)
    assert (settings.gateway.port, settings.source_of("gateway.port")) == (9100, ("option", "--port"))
    assert (settings.gateway.threads, settings.source_of("gateway.threads")) == (3, ("option", "--threads"))
    assert (settings.gateway.host, settings.source_of("gateway.host")) == ("0.0.0.0", ("file", str(config)))
    assert settings.source_of("data_dir") == ("option", "--data-dir")


def test_config_show_with_a_missing_config_file_is_one_line_and_exit_2(show, tmp_path, capsys):
    assert main(["config", "show", "--config", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--config" in err
