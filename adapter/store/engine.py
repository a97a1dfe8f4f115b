"""The store: one SQLAlchemy engine plus the blob folder, shared by every thread.

SQLite (the embedded default) runs in WAL mode with foreign keys and a busy
timeout.  The pysqlite driver normally opens transactions lazily and on its own;
here it is put in autocommit mode and the store emits ``BEGIN`` itself, so that
writers which claim work can say ``BEGIN IMMEDIATE`` and take the write lock up
front (a deferred transaction that later wants to write can fail at once with
"database is locked" instead of waiting).  PostgreSQL is reached through psycopg 3.
"""

from __future__ import annotations

import contextlib
import contextvars
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError, SQLAlchemyError

from ..environment import data_folder, writable_folder
from ..errors import ConfigurationError, DatabaseUnreachable
from ..masking import mask_url
from ..private_files import create_private_file
from ..settings import DATA_DIR_SETTING, Settings, setting_names
from .blobs import BlobStore
from .group_commit import GroupCommit

_BEGIN_OPTION = "archive_oa_begin"  # execution option read by the "begin" listener
_URL_SETTING = setting_names("database", "url")  # where an operator changes the database URL
_BEGIN_STATEMENTS = {"DEFERRED": "BEGIN DEFERRED", "IMMEDIATE": "BEGIN IMMEDIATE", "EXCLUSIVE": "BEGIN EXCLUSIVE"}


class WriteHook(Protocol):
    """Work that must commit with every write transaction of the current context (the
    gateway's audit record of the call that changes data: one commit, or neither)."""

    def before_commit(self, conn: Connection) -> None:
        """Runs inside the write transaction, after its body; raising rolls it all back."""

    def after_commit(self) -> None:
        """Runs once that transaction has committed."""


#: Hooks of the current thread / task; set by ``write_hook`` (contextvars do not leak
#: into other threads, so background workers never pick up a gateway call's hook).
_write_hooks: contextvars.ContextVar[tuple[WriteHook, ...]] = contextvars.ContextVar(
    "archive_oa_write_hooks", default=()
)


@contextlib.contextmanager
def write_hook(hook: WriteHook) -> Iterator[None]:
    """While inside, every ``Store.transaction(immediate=True)`` of this context runs ``hook``."""
    token = _write_hooks.set(_write_hooks.get() + (hook,))
    try:
        yield
    finally:
        _write_hooks.reset(token)


class Store:
    """Engine, dialect name and blob store; hands out one transaction at a time per caller."""

    def __init__(self, engine: Engine, blobs: BlobStore) -> None:
        self.engine = engine
        self.blobs = blobs
        self.dialect: str = engine.dialect.name
        # Small writes of many threads (settles, audit records of reads) share transactions.
        self.group_commit = GroupCommit(self)

    @contextlib.contextmanager
    def transaction(self, *, immediate: bool = False) -> Iterator[Connection]:
        """One transaction: commits on normal exit, rolls back on exception.

        ``immediate=True`` takes SQLite's write lock at the start (``BEGIN IMMEDIATE``);
        every transaction that writes should ask for it.  PostgreSQL ignores the flag.
        Write transactions also run the context's ``write_hook``s just before commit.
        """
        hooks = _write_hooks.get() if immediate else ()
        with self.engine.connect() as conn:
            if immediate and self.dialect == "sqlite":  # without the option the listener says DEFERRED
                conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
            with conn.begin():
                yield conn
                for hook in hooks:
                    hook.before_commit(conn)
        for hook in hooks:
            hook.after_commit()

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({mask_url(self.engine.url.render_as_string(hide_password=False))!r})"


def holds_write_lock(conn: Connection) -> bool:
    """True inside ``transaction(immediate=True)`` on SQLite; always on PostgreSQL, whose
    writers lock rows (or advisory locks) rather than the whole database."""
    return conn.dialect.name != "sqlite" or conn.get_execution_options().get(_BEGIN_OPTION) == "IMMEDIATE"


def open_store(settings: Settings, *, upgrade: bool | None = None) -> Store:
    """Create the data folder and the engine; migrate when asked or on the embedded default.

    ``upgrade=None`` upgrades only when the database is the default SQLite file in the
    data folder (zero set-up); a configured database is migrated by ``archive-oa db upgrade``.
    """
    data_folder(settings.data_dir)  # created 0700 (private_files), proven writable
    engine = create_store_engine(settings)
    store = Store(engine, BlobStore(settings.blob_dir))
    if upgrade is None:
        upgrade = not settings.database.url
    try:
        _check_connects(engine, settings)
        if upgrade:
            from .migrations import upgrade as run_upgrade

            run_upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return store


def _check_connects(engine: Engine, settings: Settings) -> None:
    """One connection up front: a database that is down or refuses us is a one-line error
    naming the setting now, not a traceback at the first request or scheduler tick."""
    try:
        with engine.connect():
            pass
    except OperationalError as exc:  # the driver's "cannot connect / cannot open"
        if settings.database.url:
            fix = f"check the database is up and accepts these credentials, or change {_URL_SETTING}"
        else:
            fix = f"the SQLite file lives in the data folder: choose another ({DATA_DIR_SETTING})"
        url = mask_url(settings.database_url)
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise DatabaseUnreachable(f"cannot connect to the database {url}: {reason}", fix=fix, url=url) from exc


def create_store_engine(settings: Settings) -> Engine:
    url_text = mask_url(settings.database_url)  # what messages show
    try:
        url = make_url(settings.database_url)
    except ArgumentError as exc:
        raise ConfigurationError(
            f"[database] url = {url_text!r} is not a database URL; "
            "use e.g. postgresql+psycopg://user:password@host/db or leave it empty for SQLite"
        ) from exc
    # Gateway threads, delivery workers and the scheduler share one engine.
    pool_size = max(5, settings.gateway.threads + settings.sync.workers + 2)
    try:
        if url.get_backend_name() == "sqlite":
            return _sqlite_engine(url, settings, pool_size)
        if url.get_backend_name() == "postgresql":
            return _postgresql_engine(url, settings, pool_size)
    except NoSuchModuleError as exc:
        raise ConfigurationError(f"[database] url {url_text!r}: no such driver ({exc})") from exc
    raise ConfigurationError(
        f"[database] url {url_text!r}: only sqlite:/// and postgresql+psycopg:// are supported"
    )


#: ``[database] sqlite_synchronous`` values (SQLite's PRAGMA synchronous, in WAL mode).
_SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")


def _sqlite_engine(url, settings: Settings, pool_size: int) -> Engine:
    if url.database and url.database != ":memory:" and not url.query.get("uri"):
        # the default file's folder is the data folder, checked by open_store already
        database = Path(url.database).expanduser()
        writable_folder(database.parent, fix=f"choose another {_URL_SETTING}")
        create_private_file(database)  # 0600, and so are its -wal and -shm
    busy_ms = settings.database.sqlite_busy_timeout_ms
    synchronous = settings.database.sqlite_synchronous.strip().upper()
    if synchronous not in _SYNCHRONOUS:
        raise ConfigurationError(
            f"[database] sqlite_synchronous = {settings.database.sqlite_synchronous!r}: "
            f"choose one of {', '.join(_SYNCHRONOUS)}"
        )
    engine = create_engine(
        url,
        echo=settings.database.echo,
        connect_args={"timeout": busy_ms / 1000.0, "check_same_thread": False},
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=busy_ms / 1000.0,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Autocommit at the driver level: the "begin" listener below owns BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        # Straight to the driver: through ``exec_driver_sql`` a BEGIN costs as much Python
        # as a whole SELECT (execution context, result object, cursor events), and every
        # gateway call opens several transactions.  The driver runs it all the same.
        statement = _BEGIN_STATEMENTS[mode]
        try:
            conn.connection.driver_connection.execute(statement).close()
        except sqlite3.Error as exc:
            # Raised as SQLAlchemy would have (e.g. "database is locked" as
            # sqlalchemy.exc.OperationalError), so callers need to know one family of errors.
            raise DBAPIError.instance(statement, None, exc, sqlite3.Error, dialect=engine.dialect) from exc

    return engine


def _postgresql_engine(url, settings: Settings, pool_size: int) -> Engine:
    if url.get_driver_name() != "psycopg":
        raise ConfigurationError(
            f"[database] url uses driver {url.get_driver_name()!r}; use postgresql+psycopg://"
        )
    try:
        import psycopg  # noqa: F401  (only to give a clear message when the extra is missing)
    except ImportError as exc:
        raise ConfigurationError(
            "PostgreSQL needs psycopg 3: pip install 'archive-oa-adapter[postgres]'"
        ) from exc
    return create_engine(
        url,
        echo=settings.database.echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,  # survive database restarts and idle-connection reaping
        pool_timeout=30,
    )

