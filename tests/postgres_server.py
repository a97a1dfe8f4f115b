"""A throw-away PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` into a temporary folder.

The server runs as an unprivileged OS user (PostgreSQL refuses to run as root: when
the tests run as root it runs as ``postgres`` through ``runuser``), listens only on
127.0.0.1 on a free port (its unix socket lives in the temporary folder, not in
/var/run), trades durability for speed (``fsync=off``: the data is thrown away) and
is stopped with ``pg_ctl stop -m fast``.

Tests get a fresh database each: ``CREATE DATABASE … TEMPLATE`` a database migrated
once per session, which copies a few hundred kilobytes instead of running every
migration again.  ``ARCHIVE_OA_TEST_POSTGRES_URL`` points the tests at an existing
server instead (its role needs CREATEDB).
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

#: The OS user the server runs as when the tests run as root.
SERVER_OS_USER = "postgres"
#: Name of the migrated database every test database is copied from.
TEMPLATE = "archive_oa_template"


class PostgresUnavailable(Exception):
    """No PostgreSQL to test against; the message says what is missing and how to get it."""


def _version_key(path: str) -> tuple[int, ...]:
    found = re.search(r"/postgresql/([0-9.]+)/bin", path)
    return tuple(int(p) for p in found.group(1).split(".") if p) if found else ()


def find_bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Looked for in ``pg_config --bindir``, then the newest ``/usr/lib/postgresql/*/bin``
    (Debian and Ubuntu keep the server there, off PATH), then ``initdb`` on PATH.
    """
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        answer = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if answer.returncode == 0:
            candidates.append(answer.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for folder in candidates:
        if all(os.access(Path(folder, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) in `pg_config --bindir`, "
        "/usr/lib/postgresql/*/bin or on PATH; install them (Debian: apt-get install postgresql) "
        "or set ARCHIVE_OA_TEST_POSTGRES_URL to a server whose role may CREATE DATABASE"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresCluster:
    """A server the tests may create databases on; hands out one fresh database per test."""

    def __init__(self, admin_url: str | URL, *, version: str = "") -> None:
        self.admin_url = make_url(admin_url).set(drivername="postgresql+psycopg")
        self.version = version
        self._admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        self._template_ready = False
        self._prefix = f"t{os.getpid()}_{secrets.token_hex(3)}"
        self._count = 0
        self._version_num: int | None = None

    def url(self, database: str) -> str:
        """A SQLAlchemy URL (password included) for ``database`` on this server."""
        return self.admin_url.set(database=database).render_as_string(hide_password=False)

    def execute(self, sql: str) -> None:
        with self._admin.connect() as conn:
            conn.exec_driver_sql(sql)

    def create_database(self, *, migrated: bool = True) -> str:
        """A new database (migrated to the newest schema, or empty); returns its URL."""
        self._count += 1
        name = f"{self._prefix}_{self._count}"
        template = self._template() if migrated else "template0"
        # FILE_COPY (PostgreSQL 15+) copies the small template's files: several times faster
        # than the default WAL_LOG, and the checkpoint it costs is cheap with fsync off
        strategy = " STRATEGY FILE_COPY" if self.server_version_num() >= 150000 else ""
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{strategy}')
        return self.url(name)

    def server_version_num(self) -> int:
        if self._version_num is None:
            with self._admin.connect() as conn:
                self._version_num = int(conn.exec_driver_sql("SHOW server_version_num").scalar_one())
        return self._version_num

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _template(self) -> str:
        if not self._template_ready:
            from archive_oa.store import migrations

            self.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
            self.execute(f'CREATE DATABASE "{TEMPLATE}" TEMPLATE template0 ENCODING \'UTF8\'')
            engine = sa.create_engine(self.url(TEMPLATE), poolclass=sa.NullPool)
            try:
                migrations.upgrade(engine)
            finally:
                engine.dispose()  # CREATE DATABASE … TEMPLATE needs it without connections
            self._template_ready = True
        return TEMPLATE

    def close(self) -> None:
        self._admin.dispose()


class TemporaryPostgres(PostgresCluster):
    """A server of our own in a temporary folder, started by :meth:`start`, removed by :meth:`stop`."""

    def __init__(self, bindir: Path, root: Path, port: int, password: str, version: str) -> None:
        self.bindir = bindir
        self.root = root
        self.port = port
        super().__init__(
            URL.create("postgresql+psycopg", username="archive", password=password,
                       host="127.0.0.1", port=port, database="postgres"),
            version=version,
        )

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @classmethod
    def start(cls, bindir: Path | None = None, *, attempts: int = 3) -> "TemporaryPostgres":
        bindir = bindir or find_bindir()
        version = _run([str(bindir / "postgres"), "--version"], as_server=False).strip()
        root = Path(tempfile.mkdtemp(prefix="archive-oa-pg-"))
        try:
            password = secrets.token_urlsafe(18)
            (root / "pwfile").write_text(password + "\n", encoding="utf-8")
            _hand_over(root)
            _run([str(bindir / "initdb"), "-D", str(root / "data"), "-U", "archive",
                  "--pwfile", str(root / "pwfile"), "-A", "scram-sha-256", "-E", "UTF8",
                  "--locale=C", "--no-sync"])
            for attempt in range(1, attempts + 1):
                server = cls(bindir, root, _free_port(), password, version)
                try:
                    server._pg_ctl_start()
                    server._watch(os.getpid())
                    return server
                except PostgresUnavailable:
                    # another process may have taken the port between probe and bind
                    if attempt == attempts or "could not bind" not in server.log_text():
                        raise
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        raise AssertionError("unreachable")

    def _pg_ctl_start(self) -> None:
        options = " ".join([
            "-c listen_addresses=127.0.0.1",
            f"-c port={self.port}",
            f"-c unix_socket_directories={shlex.quote(str(self.root))}",
            "-c max_connections=300",  # every test store has its own pool; three worker processes too
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",  # throw-away data
            "-c shared_buffers=32MB",
        ])
        try:
            _run([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                  "-w", "-t", "60", "-o", options, "start"])
        except PostgresUnavailable as exc:
            raise PostgresUnavailable(f"{exc}\n--- server log ---\n{self.log_text()}") from None

    def _watch(self, pid: int) -> None:
        """A watchdog that stops the server and removes the folder once process ``pid`` is gone.

        ``stop()`` does that on a normal end; the watchdog covers a test run that is
        killed (SIGKILL, a CI timeout's SIGTERM), which runs no finalizer.
        """
        stop = shlex.join(_as_server([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate",
                                      "stop"]))
        script = (f"while kill -0 {pid} 2>/dev/null; do sleep 2; done; "
                  f"{stop} >/dev/null 2>&1; rm -rf {shlex.quote(str(self.root))}")
        self._watchdog = subprocess.Popen(["/bin/sh", "-c", script], start_new_session=True,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """``pg_ctl stop -m fast`` (immediate if that does not work), then remove the folder."""
        self.close()
        try:
            if (self.data_dir / "postmaster.pid").exists():
                pg_ctl = str(self.bindir / "pg_ctl")
                try:
                    _run([pg_ctl, "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop"])
                except PostgresUnavailable:
                    _run([pg_ctl, "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "30", "stop"])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            watchdog = getattr(self, "_watchdog", None)
            if watchdog is not None and watchdog.poll() is None:
                watchdog.kill()
                watchdog.wait(10)

    def __repr__(self) -> str:
        return f"TemporaryPostgres({self.version!r}, port={self.port}, root={str(self.root)!r})"


def _server_user_prefix() -> list[str]:
    """How to run a server tool as an unprivileged user: nothing unless we are root."""
    if os.geteuid() != 0:
        return []
    try:
        import pwd

        pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root and there is no OS user {SERVER_OS_USER!r} to run PostgreSQL as "
            "(root may not run it); create one (useradd --system postgres) or run the tests as a normal user"
        ) from None
    if shutil.which("runuser"):
        return ["runuser", "-u", SERVER_OS_USER, "--"]
    return ["su", SERVER_OS_USER, "-s", "/bin/sh", "-c"]  # the command follows as one string


def _as_server(command: list[str]) -> list[str]:
    """``command`` run as the server's OS user."""
    prefix = _server_user_prefix()
    if prefix and prefix[0] == "su":
        return prefix + [shlex.join(command)]
    return prefix + command


def _run(command: list[str], *, as_server: bool = True, timeout: float = 120) -> str:
    full = _as_server(command) if as_server else command
    started = time.monotonic()
    try:
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PostgresUnavailable(f"{shlex.join(full)} failed: {exc}") from exc
    if done.returncode != 0:
        raise PostgresUnavailable(
            f"{shlex.join(full)} exited {done.returncode} after {time.monotonic() - started:.1f}s:\n"
            f"{done.stdout}{done.stderr}"
        )
    return done.stdout


def _hand_over(root: Path) -> None:
    """Give the temporary folder to the server's OS user (only needed when we are root)."""
    if os.geteuid() != 0:
        return
    import pwd

    entry = pwd.getpwnam(SERVER_OS_USER)
    for path in (root, *root.rglob("*")):
        os.chown(path, entry.pw_uid, entry.pw_gid)
