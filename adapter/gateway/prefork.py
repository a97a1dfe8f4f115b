"""``serve --processes N``: N pre-forked processes accepting on one listening socket.

A Python process runs one thread at a time, so all the gateway's threads share one core;
several processes use them all.  The parent binds the socket, forks the children and only
supervises: it holds no engine, no database connection and no thread, so a fork (at start
or to replace a child) copies nothing that cannot cross it.  Each child builds its own
adapter (its own SQLAlchemy engine and connections) after the fork, through ``serve_child``.

Slot 0 starts first and alone, so a schema upgrade runs once before the others open the
database; it is also the slot the caller gives the scheduler and the audit checkpoint
keeper, of which a data folder has one each.  A replaced child keeps its slot.

SIGTERM or SIGINT to the parent sends SIGTERM to every child (each answers the requests it
holds and hands its leases back) and waits for them.  A child that dies otherwise is logged
and started again, at most ``RESTART_LIMIT`` times in ``RESTART_WINDOW`` seconds; past that
the parent stops the rest and exits 1 rather than fork in a loop.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import signal
import sys
import time
from typing import Callable

from ..errors import AdapterError, EnvironmentRefused

log = logging.getLogger(__name__)

#: Serves slot N in this (child) process until SIGTERM; calls ``ready()`` once it accepts.
ServeChild = Callable[[int, Callable[[], None]], None]

RESTART_LIMIT = 5
RESTART_WINDOW = 60.0
#: After SIGTERM, how long children get before SIGKILL (they drain for 10 s themselves).
STOP_SECONDS = 30.0
_POLL_SECONDS = 0.1


def require_fork(processes: int) -> None:
    """Refuse several processes where there is no ``fork`` (Windows)."""
    if processes > 1 and not hasattr(os, "fork"):
        raise EnvironmentRefused(
            f"cannot serve with {processes} processes: this platform has no fork()",
            fix="set [gateway] processes / --processes / ARCHIVE_OA_GATEWAY_PROCESSES to 1",
        )


def serve_preforked(processes: int, serve_child: ServeChild) -> int:
    """Run ``processes`` children of ``serve_child`` until SIGTERM or SIGINT; the exit code."""
    require_fork(processes)
    return _Supervisor(processes, serve_child).run()


class _Supervisor:
    def __init__(self, processes: int, serve_child: ServeChild) -> None:
        self.processes = processes
        self.serve_child = serve_child
        self.children: dict[int, int] = {}  # pid -> slot
        self.stopping = False
        self.exit_code = 0
        self._restarts: collections.deque[float] = collections.deque()

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            first_code = self._start_first()
            if first_code is not None:
                return first_code
            for slot in range(1, self.processes if not self.stopping else 1):
                self._spawn(slot)
            self._supervise()
            return self.exit_code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start_first(self) -> int | None:
        """Start slot 0 and wait until it serves; its exit code if it ended before."""
        readable, writable = os.pipe()
        try:
            pid = self._spawn(0, ready_fd=writable)
        finally:
            os.close(writable)
        try:
            while not self.stopping:
                if select.select([readable], [], [], _POLL_SECONDS)[0] and os.read(readable, 1):
                    return None
                ended, status = os.waitpid(pid, os.WNOHANG)
                if ended:  # it could not start (its reason is logged): not a crash to retry
                    del self.children[pid]
                    return os.waitstatus_to_exitcode(status) or 1
            return None  # stopped while starting: _supervise waits for it
        finally:
            os.close(readable)

    def _spawn(self, slot: int, ready_fd: int | None = None) -> int:
        pid = os.fork()
        if pid == 0:  # the child never returns into the caller's stack
            os._exit(_child(slot, self.serve_child, ready_fd))
        self.children[pid] = slot
        log.info("gateway process %d started (pid %d)", slot, pid)
        if self.stopping:  # the signal came between fork and the line above
            _signal(pid, signal.SIGTERM)
        return pid

    def _supervise(self) -> None:
        # Polled rather than a blocking wait, so that stopping has a deadline.
        deadline = None
        while self.children:
            if self.stopping and deadline is None:
                deadline = time.monotonic() + STOP_SECONDS
            if deadline is not None and time.monotonic() > deadline:
                for pid in self.children:
                    log.error("gateway process %d (pid %d) did not stop; killed", self.children[pid], pid)
                    _signal(pid, signal.SIGKILL)
                deadline = float("inf")
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                time.sleep(_POLL_SECONDS)
                continue
            slot = self.children.pop(pid, None)
            if slot is not None and not self.stopping:
                self._replace(slot, pid, os.waitstatus_to_exitcode(status))

    def _replace(self, slot: int, pid: int, code: int) -> None:
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > RESTART_WINDOW:
            self._restarts.popleft()
        if len(self._restarts) >= RESTART_LIMIT:
            log.error("gateway process %d (pid %d) ended (%s); %d restarts within %.0f s already: stopping",
                      slot, pid, how, RESTART_LIMIT, RESTART_WINDOW)
            self.exit_code = 1
            self._stop_children()
            return
        self._restarts.append(now)
        log.error("gateway process %d (pid %d) ended unexpectedly (%s); starting it again", slot, pid, how)
        self._spawn(slot)

    def _on_signal(self, signum, frame) -> None:
        log.info("gateway stopping (%s)", signal.Signals(signum).name)
        self._stop_children()

    def _stop_children(self) -> None:
        self.stopping = True
        for pid in list(self.children):
            _signal(pid, signal.SIGTERM)


def _child(slot: int, serve_child: ServeChild, ready_fd: int | None) -> int:
    """Serve ``slot`` in this forked process; its exit code."""
    # Ctrl-C in a terminal reaches the whole process group: the parent alone decides, and
    # stops every child the same way, with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    def ready() -> None:
        log.info("gateway process %d serving (pid %d)", slot, os.getpid())
        if ready_fd is not None:
            os.write(ready_fd, b"!")
            os.close(ready_fd)

    try:
        serve_child(slot, ready)
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except AdapterError as exc:  # a configuration or environment refusal: one line, as the CLI prints it
        log.error("gateway process %d: %s", slot, exc)
        return 2
    except BaseException:  # noqa: BLE001 - the process ends here; its traceback is the report
        log.exception("gateway process %d failed", slot)
        return 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(0)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # already gone; waitpid will tell
        pass
