"""Shared helpers of the benchmark: data sets, subprocess servers, wrk, memory readings.

Not a test module: pytest never collects bench/ (``testpaths = tests``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PYTHON = sys.executable
WRK_SCRIPT = BENCH_DIR / "wrk_post.lua"
BENCH_USER = "bench-viewer"
BENCH_PASSWORD = "bench-viewer-pw"  # the gateway slows repeated auth failures: keep it right


@dataclass
class Figure:
    """One measured figure beside its floor and its target."""

    bench: str
    name: str
    value: float
    unit: str
    floor: float | None = None
    target: str = ""
    passed: bool | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.floor in (None, 0):
            return None
        return self.value / self.floor


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers at all (any status)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answered at {url} within {timeout:.0f} s")
            time.sleep(0.1)


def start_process(args: list[str], env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "wb") if log else subprocess.DEVNULL
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def proc_status_kb(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` line in kB (VmHWM: peak resident set, VmRSS: current)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        sys.exit("bench: wrk is not installed; install it with `apt-get install -y wrk` (Debian) and run again")
    return path


def run_wrk(url: str, body: bytes, action: str, auth_b64: str | None, *, connections: int, seconds: int,
            threads: int = 2, workdir: Path) -> dict:
    """POST ``body`` to ``url`` with wrk; requests/s, p50 and p99 (ms), errors."""
    body_file = workdir / f"wrk-body-{action}.xml"
    body_file.write_bytes(body)
    env = {**os.environ, "BENCH_BODY": str(body_file), "BENCH_ACTION": action, "BENCH_AUTH": auth_b64 or ""}
    out = subprocess.run(
        [require_wrk(), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
         "-s", str(WRK_SCRIPT), url],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    line = next((l for l in out.splitlines() if l.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    data = json.loads(line[len("BENCH "):])
    seconds_run = data["duration_us"] / 1e6
    return {
        "rps": data["requests"] / seconds_run,
        "p50_ms": data["p50_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "requests": data["requests"],
        "errors": data["errors"],
        "non2xx": data["non2xx"],
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]
