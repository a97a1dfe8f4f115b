"""Errors of the environment are one line naming the setting to change, exit 2.

A port in use, an address this machine does not have, a data folder that cannot be
written, a database that does not answer: `serve`, `worker`, `oa-sim` and `demo` each
print ONE line on stderr, no traceback, and exit 2.  Tests run as root, so permission
bits stop nothing: an unwritable folder is one whose parent is a regular file.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys

import pytest

from archive_oa.cli.main import main
from archive_oa.environment import listening
from archive_oa.errors import CannotListen

pytestmark = pytest.mark.slow  # console scripts in child processes

NOT_OURS = "203.0.113.5"  # TEST-NET-3: bind() fails locally, nothing is ever sent

GATEWAY_PORT = "[gateway] port / --port / ARCHIVE_OA_GATEWAY_PORT"
GATEWAY_HOST = "[gateway] host / --host / ARCHIVE_OA_GATEWAY_HOST"
SIM_PORT = "--port / ARCHIVE_OA_SIM_PORT"
SIM_HOST = "--host / ARCHIVE_OA_SIM_HOST"
DATA_DIR = "--data-dir / ARCHIVE_OA_HOME"
DATABASE_URL = "[database] url / ARCHIVE_OA_DATABASE_URL"


@pytest.fixture
def taken_port():
    """A port this test holds open (listening) on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def refusing_port():
    """A loopback port bound but not listening: a connection to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run ``archive-oa ARGS`` in-process with a clean ARCHIVE_OA_* environment; {tmp}
    in an argument or environment value is this test's temporary folder."""
    for name in list(os.environ):
        if name.startswith("ARCHIVE_OA_"):
            monkeypatch.delenv(name)
    (tmp_path / "a-file").write_text("a regular file where a folder should be")
    sigterm = signal.getsignal(signal.SIGTERM)  # serve installs its own

    def run(*args, **env):
        for name, value in env.items():
            monkeypatch.setenv(name, str(value).format(tmp=tmp_path))
        code = main([str(a).format(tmp=tmp_path) for a in args])
        return code, capsys.readouterr().err

    yield run
    signal.signal(signal.SIGTERM, sigterm)


def assert_one_line(code: int, err: str, command: str, setting: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"archive-oa {command}: "), err
    assert setting in lines[0], err
    assert "Traceback" not in err


# --- a port in use, an address that cannot be bound ------------------------------------


def test_serve_port_in_use_names_the_gateway_port(cli, taken_port):
    code, err = cli("serve", "--data-dir", "{tmp}/d", "--no-scheduler", "--port", taken_port)
    assert_one_line(code, err, "serve", f"choose another {GATEWAY_PORT}")
    assert f"127.0.0.1:{taken_port}" in err and "in use" in err


def test_serve_address_not_on_this_machine_names_the_gateway_host(cli):
    code, err = cli("serve", "--data-dir", "{tmp}/d", "--no-scheduler", "--host", NOT_OURS, "--port", 0)
    assert_one_line(code, err, "serve", f"choose another {GATEWAY_HOST}")


def test_serve_port_from_the_environment_is_named_too(cli, taken_port):
    code, err = cli("serve", "--data-dir", "{tmp}/d", "--no-scheduler", ARCHIVE_OA_GATEWAY_PORT=taken_port)
    assert_one_line(code, err, "serve", "ARCHIVE_OA_GATEWAY_PORT")


def test_oa_sim_port_in_use_names_its_port(cli, taken_port):
    code, err = cli("oa-sim", "--data-dir", "{tmp}/d", "--port", taken_port)
    assert_one_line(code, err, "oa-sim", f"choose another {SIM_PORT}")


def test_oa_sim_address_not_on_this_machine_names_its_host(cli):
    code, err = cli("oa-sim", "--data-dir", "{tmp}/d", "--host", NOT_OURS, "--port", 0)
    assert_one_line(code, err, "oa-sim", f"choose another {SIM_HOST}")


def test_demo_gateway_port_in_use_names_port(cli, taken_port):
    code, err = cli("demo", "--data-dir", "{tmp}/d", "--port", taken_port)
    assert_one_line(code, err, "demo", "choose another --port")


def test_demo_simulator_port_in_use_names_oa_port(cli, taken_port):
    code, err = cli("demo", "--data-dir", "{tmp}/d", "--oa-port", taken_port)
    assert_one_line(code, err, "demo", "choose another --oa-port")


# --- a data folder that cannot be written ------------------------------------------------


@pytest.mark.parametrize("command", [["serve", "--no-scheduler", "--port", "0"], ["worker"], ["oa-sim", "--port", "0"]])
def test_data_folder_under_a_file_names_the_data_dir(cli, command):
    code, err = cli(*command, "--data-dir", "{tmp}/a-file/data")
    assert_one_line(code, err, command[0], DATA_DIR)
    assert "a-file is a file, not a folder" in err


def test_demo_data_folder_under_a_file_names_its_data_dir(cli):
    code, err = cli("demo", "--data-dir", "{tmp}/a-file/data")
    assert_one_line(code, err, "demo", "(--data-dir)")


# --- a database URL that cannot connect --------------------------------------------------
# As a separate process with a time limit: before the fix, serve and worker started anyway
# and logged a traceback per request or tick, forever.


def console(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVE_OA_")}
    return subprocess.run([sys.executable, "-m", "archive_oa.cli.main", *args], env={**environ, **(env or {})},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", [["serve", "--no-scheduler", "--port", "0"], ["worker"]])
def test_database_refusing_connections_names_the_database_url(tmp_path, command, refusing_port):
    pytest.importorskip("psycopg")
    url = f"postgresql+psycopg://archive:secret@127.0.0.1:{refusing_port}/archive"
    run = console(*command, "--data-dir", str(tmp_path / "d"), env={"ARCHIVE_OA_DATABASE_URL": url})
    assert_one_line(run.returncode, run.stderr, command[0], DATABASE_URL)
    assert "secret" not in run.stderr, "the password stays out of the message"


def test_db_upgrade_against_a_refusing_database_masks_a_password_given_in_the_query(cli, refusing_port):
    pytest.importorskip("psycopg")
    url = f"postgresql+psycopg://archive@127.0.0.1:{refusing_port}/archive?password=q-secret"
    code, err = cli("db", "upgrade", "--data-dir", "{tmp}/d", ARCHIVE_OA_DATABASE_URL=url)
    assert_one_line(code, err, "db", DATABASE_URL)
    assert "q-secret" not in err and "password=********" in err


@pytest.mark.parametrize("url, shown", [("mysql://archive:s3cret-pw@db/archive", "mysql://archive:********@db/archive"),
                                        ("archive:s3cret-pw@db/archive", "'********@db/archive'")])
def test_a_database_url_the_adapter_cannot_use_is_named_without_its_password(cli, url, shown):
    code, err = cli("db", "upgrade", "--data-dir", "{tmp}/d", ARCHIVE_OA_DATABASE_URL=url)
    assert code == 2 and err.count("\n") == 1
    assert "s3cret-pw" not in err and shown in err


@pytest.mark.parametrize("command", [["serve", "--no-scheduler", "--port", "0"], ["worker"]])
def test_sqlite_file_in_a_place_that_cannot_be_written_names_the_database_url(cli, command):
    code, err = cli(*command, "--data-dir", "{tmp}/d", ARCHIVE_OA_DATABASE_URL="sqlite:///{tmp}/a-file/x/archive.db")
    assert_one_line(code, err, command[0], DATABASE_URL)


# --- the real console entry, and what stays a traceback -----------------------------------


def test_console_entry_prints_one_line_without_traceback(tmp_path, taken_port):
    run = console("serve", "--data-dir", str(tmp_path / "d"), "--no-scheduler", "--port", str(taken_port))
    assert_one_line(run.returncode, run.stderr, "serve", GATEWAY_PORT)


def test_other_os_errors_while_listening_are_not_disguised():
    """Only the refusals a setting can cure become CannotListen; anything else keeps its traceback."""
    with pytest.raises(OSError) as raised:
        with listening("127.0.0.1", 0):
            raise OSError(errno.EMFILE, "Too many open files")
    assert not isinstance(raised.value, CannotListen)
