"""The machine's refusals (``OSError``) as the adapter's own errors, one translation per kind.

A port already taken, an address this host does not have, a folder that cannot be written:
each is translated here once, into an ``EnvironmentRefused`` the CLI prints as one line.
The code that knows which setting gave the value names it, so that line says what to change.
Any other ``OSError`` is left alone: it may be a bug, and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import CannotListen, FolderUnusable
from .private_files import make_private_dir
from .settings import DATA_DIR_SETTING

#: bind() refusals a different port cures, and those a different address cures.  Windows
#: refuses a port it reserves (Hyper-V, a service) with WSAEACCES, not EACCES.
_PORT_ERRNOS = frozenset({errno.EADDRINUSE, errno.EACCES, getattr(errno, "WSAEACCES", errno.EACCES)})
_HOST_ERRNOS = frozenset({errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})


@contextlib.contextmanager
def listening(host: str, port: int) -> Iterator[None]:
    """Around opening a listening socket on ``host``:``port``.

    A port out of range, a host name that does not resolve or a bind() the OS refuses
    becomes ``CannotListen`` whose ``data["setting"]`` says which of the two to change.
    """
    where = f"{host}:{port}"
    if not 0 <= port <= 65535:
        raise CannotListen(f"cannot listen on {where}: not a port number (0-65535)",
                           host=host, port=port, setting="port")
    try:
        # Resolved here first: waitress reports a name that does not resolve as a bare ValueError.
        socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        yield
    except socket.gaierror as exc:
        raise CannotListen(f"cannot listen on {where}: no such address on this machine ({_reason(exc)})",
                           host=host, port=port, setting="host") from exc
    except OSError as exc:
        if exc.errno in _PORT_ERRNOS:
            setting = "port"
        elif exc.errno in _HOST_ERRNOS:
            setting = "host"
        else:
            raise
        raise CannotListen(f"cannot listen on {where}: {_reason(exc)}",
                           host=host, port=port, setting=setting) from exc


@contextlib.contextmanager
def listen_settings(*, host: str = "", port: str = "") -> Iterator[None]:
    """Name the setting a ``CannotListen`` raised inside tells the operator to change,
    e.g. ``listen_settings(port="[gateway] port / --port / ARCHIVE_OA_GATEWAY_PORT")``."""
    try:
        yield
    except CannotListen as exc:
        name = port if exc.data.get("setting") == "port" else host
        if name and not exc.fix:  # the innermost naming wins
            exc.fix = f"choose another {name}"
        raise


def writable_folder(path: Path, *, fix: str) -> Path:
    """Create ``path`` if needed and prove a file can be written in it.

    A file where the folder should be, a parent the OS refuses, a read-only mount:
    ``FolderUnusable`` carrying ``fix``, the setting to change.
    """
    try:
        make_private_dir(path)  # every folder it creates is 0700
    except OSError as exc:
        blocker = next((p for p in (path, *path.parents) if p.is_file()), None)
        if blocker is None:
            reason = _reason(exc)
        else:
            reason = "it is a file, not a folder" if blocker == path else f"{blocker} is a file, not a folder"
        raise FolderUnusable(f"cannot create folder {path}: {reason}", fix=fix, path=str(path)) from exc
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise FolderUnusable(f"cannot write in folder {path}: {_reason(exc)}", fix=fix, path=str(path)) from exc
    return path


def data_folder(path: Path, *, setting: str = DATA_DIR_SETTING) -> Path:
    """The data folder, created and proven writable; ``setting`` is where it was chosen."""
    return writable_folder(path, fix=f"choose another data folder ({setting}) or make it writable")


def _reason(exc: OSError) -> str:
    """The OS's own words, as the middle of a sentence ("address already in use")."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]
