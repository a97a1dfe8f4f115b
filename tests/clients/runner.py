"""The external SOAP stacks of the compatibility suite: is each one installed, how it is
built (JAX-WS only: wsimport + javac, once per session) and how its client program runs.

A client program takes one argument, the path of a JSON *plan* (WSDL URL, account, what
to call with which values), and prints one JSON object per line: first
``{"op": "_client", "version": …}``, then one per operation, either the values the stack
handed back (``{"op": "GetVoucher", "totalAmount": "0.10", …}``) or
``{"op": …, "error": "…"}``.  Amounts travel as text so no float ever touches them.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

CLIENTS = Path(__file__).resolve().parent
#: JDK 17 has no JAX-WS of its own: Debian's jaxws-rt.jar names its dependencies in its
#: manifest's Class-Path, so this one jar is the whole runtime classpath.
JAXWS_RUNTIME = Path("/usr/share/java/jaxws-rt.jar")
#: generous: two cores are shared by several engineers' test runs
BUILD_TIMEOUT = 200
RUN_TIMEOUT = 150


class Unavailable(Exception):
    """The stack is not installed here; the message says what is missing and how to get it."""


def require_installed(title: str, missing: Unavailable, *, ci: bool) -> None:
    """A stack that is not installed: skipped with the reason locally, a failure in CI."""
    if ci:
        pytest.fail(f"{title} is required in CI: {missing}")
    pytest.skip(f"{title}: {missing}")


@dataclass
class ClientRun:
    stack: str
    version: str
    lines: dict[str, dict]  # operation → the JSON line the client printed for it
    stderr: str = ""


@dataclass
class Stack:
    key: str
    title: str  # the stack as the table names it
    authentication: str  # how the client authenticates (UsernameToken / Basic)
    needs: Callable[[], None]  # raises Unavailable
    command: Callable[[Path, Path], list[str]]  # (plan file, build folder) → argv
    build: Callable[[Path], None] | None = None  # once, into the build folder
    notes: tuple[str, ...] = field(default_factory=tuple)  # what the client needed beyond the WSDL


def _which(*programs: str, hint: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        raise Unavailable(f"{', '.join(missing)} not found on PATH: {hint}")


INSTALL_HINT = "run `bash scripts/install-clients.sh .venv-test` as root (Debian)"


def _needs_php() -> None:
    _which("php", hint=f"Debian packages php-cli php-soap; {INSTALL_HINT}")
    modules = subprocess.run(["php", "-m"], capture_output=True, text=True, timeout=60).stdout.split()
    if "soap" not in modules:
        raise Unavailable(
            f"php has no soap extension (`php -m` lists no 'soap'): Debian package php-soap; {INSTALL_HINT}"
        )


def _needs_node() -> None:
    _which("node", hint="Node.js 20.19 or newer")
    if not (CLIENTS / "node" / "node_modules" / "soap" / "package.json").is_file():
        raise Unavailable(
            f"the npm package 'soap' is not installed in {CLIENTS / 'node'}: `npm ci` there; {INSTALL_HINT}"
        )


def _needs_suds() -> None:
    if importlib.util.find_spec("suds") is None:
        raise Unavailable(f"suds-community is not installed in {sys.executable}'s environment; {INSTALL_HINT}")


def _needs_jaxws() -> None:
    _which("wsimport", "javac", "java", hint=f"Debian package jaxws and a JDK 17; {INSTALL_HINT}")
    if not JAXWS_RUNTIME.is_file():
        raise Unavailable(f"{JAXWS_RUNTIME} is missing: Debian package libjaxws-java; {INSTALL_HINT}")


def _build_jaxws(folder: Path, wsdl_url: str) -> None:
    """wsimport generates the client from the live WSDL, javac compiles it with ours."""
    sources, classes = folder / "src", folder / "classes"
    sources.mkdir(parents=True, exist_ok=True)
    classes.mkdir(parents=True, exist_ok=True)
    _run_checked(
        # no binding file: the WSDL alone must give usable Java
        ["wsimport", "-quiet", "-Xnocompile", "-encoding", "UTF-8",
         "-p", "archiveoa.compat.generated", "-s", str(sources), "-d", str(classes), wsdl_url],
        "wsimport",
    )
    java_files = sorted(str(p) for p in sources.rglob("*.java"))
    java_files += sorted(str(p) for p in (CLIENTS / "java").glob("*.java"))
    _run_checked(
        ["javac", "-nowarn", "-encoding", "UTF-8", "--release", "17", "-cp", str(JAXWS_RUNTIME),
         "-d", str(classes), *java_files],
        "javac",
    )


def _run_checked(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")


def stacks(wsdl_url: str) -> dict[str, Stack]:
    java_cp = lambda build: f"{build / 'classes'}:{JAXWS_RUNTIME}"  # noqa: E731
    return {
        s.key: s
        for s in (
            Stack(
                "php", "PHP SoapClient", "UsernameToken (hand-built wsse:Security SoapHeader)",
                _needs_php,
                lambda plan, build: ["php", "-d", "soap.wsdl_cache_enabled=0",
                                     str(CLIENTS / "php" / "gateway_client.php"), str(plan)],
                notes=(
                    "ext/soap has no WS-Security: the client builds the `wsse:Security` header itself "
                    "(`SoapVar` with `XSD_ANYXML`, user and password escaped with `htmlspecialchars`).",
                    "`features => SOAP_SINGLE_ELEMENT_ARRAYS`, or an array wrapper holding one item reads as "
                    "an object instead of a list.",
                    "Amounts go in as strings: a PHP float is written as `1.0E+14`, which `tns:Amount` "
                    "(xs:decimal) refuses with a Validation fault; amounts come back as strings.",
                ),
            ),
            Stack(
                "node", "Node soap (npm)", "UsernameToken (`WSSecurity`, PasswordText)",
                _needs_node,
                lambda plan, build: ["node", str(CLIENTS / "node" / "gateway_client.js"), str(plan)],
                notes=(
                    "`WSSecurity` defaults to PasswordDigest: the client passes `passwordType: 'PasswordText'`.",
                    "soap turns plain `xs:decimal` into a JS number; the gateway's amounts are the named type "
                    "`tns:Amount`, which soap leaves as text, and the client also sets "
                    "`customDeserializer: {decimal, Amount}` to keep any decimal as text.",
                    "base64Binary arrives and is sent as base64 text (`Buffer.from(text, 'base64')`); "
                    "xs:dateTime becomes a JS `Date` (the offset is normalised to UTC).",
                ),
            ),
            Stack(
                "suds", "suds-community (Python)", "UsernameToken (`suds.wsse`)",
                _needs_suds,
                lambda plan, build: [sys.executable, str(CLIENTS / "suds" / "gateway_client.py"), str(plan)],
                notes=(
                    "HTTP Basic needs `suds.transport.http.HttpAuthenticated` (sends credentials up front); "
                    "the `https` variant waits for a 401 challenge, and the gateway answers a missing "
                    "credential with a SOAP fault (HTTP 500) as WS-I asks.",
                    "`HttpAuthenticated` encodes `user:password` with the URL-safe base64 alphabet "
                    "(`-` and `_` for `+` and `/`); the gateway refuses such a header, so Basic fails for "
                    "accounts whose base64 holds `+` or `/`: use the UsernameToken with suds.",
                    "base64Binary arrives and is sent as base64 text.",
                ),
            ),
            Stack(
                "jaxws", "JAX-WS RI (wsimport, JDK 17)", "UsernameToken (a `SOAPHandler` adds wsse:Security)",
                _needs_jaxws,
                lambda plan, build: ["java", "-cp", java_cp(build), "archiveoa.compat.GatewayClient", str(plan)],
                build=lambda folder: _build_jaxws(folder, wsdl_url),
                notes=(
                    "The JAX-WS RI has no WS-Security of its own: a `SOAPHandler` adds the UsernameToken; "
                    "HTTP Basic goes through `BindingProvider.USERNAME_PROPERTY` / `PASSWORD_PROPERTY`.",
                    "Wrapper style makes `page`/`pageSize` of QueryVouchers and `attachmentId` of "
                    "GetAttachment `Holder` (INOUT) parameters, because the response repeats those "
                    "element names.",
                    "JDK 17 has no JAX-WS: the classpath is Debian's `/usr/share/java/jaxws-rt.jar`, whose "
                    "manifest names the rest of the runtime.",
                ),
            ),
        )
    }


def run_client(stack: Stack, plan: dict, workdir: Path) -> ClientRun:
    """Build (once) and run one client; its JSON lines by operation."""
    stack.needs()
    build = workdir / f"build-{stack.key}"
    if stack.build is not None and not build.exists():
        stack.build(build)
    build.mkdir(exist_ok=True)
    plan_file = workdir / f"plan-{stack.key}.json"
    plan_file.write_text(json.dumps(plan, ensure_ascii=False), encoding="utf-8")
    done = subprocess.run(
        stack.command(plan_file, build), capture_output=True, timeout=RUN_TIMEOUT, cwd=workdir,
    )
    stdout = done.stdout.decode("utf-8", errors="replace")
    stderr = done.stderr.decode("utf-8", errors="replace")
    # kept beside the plan for a look after a failure (pytest keeps its last temp folders)
    (workdir / f"output-{stack.key}.jsonl").write_text(stdout, encoding="utf-8")
    (workdir / f"stderr-{stack.key}.txt").write_text(stderr, encoding="utf-8")
    lines: dict[str, dict] = {}
    for raw in stdout.splitlines():
        raw = raw.strip()
        if raw.startswith("{"):
            record = json.loads(raw)
            lines[record["op"]] = record
    client = lines.pop("_client", None)
    if done.returncode != 0 or client is None:
        raise RuntimeError(
            f"{stack.title} client exited {done.returncode} "
            f"(operations reported: {sorted(lines)}):\n{stdout[-3000:]}\n{stderr[-3000:]}"
        )
    return ClientRun(stack.key, client["version"], lines, stderr)
