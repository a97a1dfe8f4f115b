"""Settings: one frozen object, read from ``archive-oa.toml`` and the environment.

Precedence (later wins): built-in defaults, the TOML file (``<data dir>/archive-oa.toml``
or ``--config``), environment variables, command-line options.

Every key ``[section] key`` can be overridden by ``ARCHIVE_OA_<SECTION>_<KEY>``
(upper case), e.g. ``ARCHIVE_OA_OA_URL`` for ``[oa] url`` or
``ARCHIVE_OA_DATABASE_URL`` for ``[database] url``.  ``ARCHIVE_OA_PUBLIC_URL`` is an
alias of ``ARCHIVE_OA_GATEWAY_PUBLIC_URL`` and ``ARCHIVE_OA_HOME`` names the data folder.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .domain.delivery import RetryPolicy
from .errors import ConfigurationError
from .masking import mask_url

log = logging.getLogger(__name__)
CONFIG_FILE_NAME = "archive-oa.toml"
#: Every key at its default with a one-line comment; shipped inside the package.
EXAMPLE_FILE_NAME = "archive-oa.toml.example"
DEFAULT_HOME = "~/.archive-oa"
#: Where the data folder is chosen, as messages name it.
DATA_DIR_SETTING = "--data-dir / ARCHIVE_OA_HOME"


def env_name(section: str, key: str) -> str:
    """The environment variable overriding ``[section] key``: ``ARCHIVE_OA_GATEWAY_PORT``."""
    return f"ARCHIVE_OA_{section.upper()}_{key.upper()}"


def setting_names(section: str, key: str, option: str = "") -> str:
    """Every place ``[section] key`` is set, for a message: ``[gateway] port / --port / ARCHIVE_OA_GATEWAY_PORT``."""
    return " / ".join(name for name in (f"[{section}] {key}", option, env_name(section, key)) if name)


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = ""  # empty: SQLite file archive-oa.db in the data folder
    echo: bool = False
    sqlite_busy_timeout_ms: int = 30000
    # FULL: a commit is on disk before it returns, so an answer the gateway gave survives a
    # power cut; NORMAL (WAL) survives a crashed process but may lose the last commits to a
    # crashed OS.  Attachment files are always synced.
    sqlite_synchronous: str = "FULL"


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""  # empty: http://<host>:<port>
    threads: int = 8  # waitress worker threads
    processes: int = 1  # serve: pre-forked processes sharing the socket, each with its threads
    max_body_bytes: int = 20 * 1024 * 1024
    response_encoding: str = "utf-8"


@dataclass(frozen=True)
class OaSettings:
    driver: str = "generic"  # an entry point of group archive_oa.oa_drivers (archive_oa.oa.drivers)
    url: str = "http://127.0.0.1:8090/soap/workflow"
    user: str = "archive-oa"
    password: str = "archive-oa"
    connect_timeout: float = 5.0  # seconds to open the TCP connection
    timeout: float = 30.0  # seconds to wait for an answer once sent
    pool_size: int = 8


@dataclass(frozen=True)
class WorkflowSettings:
    """How a voucher becomes an OA form: the XSLT parameters of voucher-to-workflow.xsl."""

    stylesheet: str = ""  # empty: the bundled transforms/xslt/voucher-to-workflow.xsl
    workflow_code: str = "FIN_VOUCHER_APPROVAL"
    creator: str = "archive-oa"
    title_pattern: str = "{orgName} {period} {voucherWord}字第{voucherNo}号 {summary}"
    level: int = 0
    field_voucher_id: str = "pzbh"
    field_org: str = "gsdm"
    field_period: str = "kjqj"
    field_voucher_word: str = "pzz"
    field_voucher_no: str = "pzh"
    field_date: str = "pzrq"
    field_amount: str = "je"
    field_preparer: str = "zdr"
    field_summary: str = "zy"
    detail_table: str = "formtable_main_1_dt1"
    field_line_no: str = "hh"
    field_line_summary: str = "flzy"
    field_account_code: str = "kmbm"
    field_account_name: str = "kmmc"
    field_debit: str = "jfje"
    field_credit: str = "dfje"
    embed_attachments: bool = True


@dataclass(frozen=True)
class SyncSettings:
    delivery_schedule: str = "every 30s"  # "every 30s" / "every 5m" or a cron "0 2 * * *"
    poll_schedule: str = "every 60s"
    batch_size: int = 50
    poll_batch_size: int = 100
    workers: int = 4  # concurrent deliveries per process
    lease_seconds: float = 120.0
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    max_attempts: int = 12
    realtime: bool = True  # import queues deliveries at once
    # after a call that may have reached the OA, wait this long before asking the OA whether
    # it did: the OA may still be working on a call we gave up on. -1: twice [oa] timeout
    uncertain_wait_seconds: float = -1.0

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.retry_base_seconds, self.retry_max_seconds, self.max_attempts)


@dataclass(frozen=True)
class SecuritySettings:
    """Authentication, lockout, audit and XML limits (PRODUCT.md §7)."""

    token_window_seconds: int = 300  # a UsernameToken's Created may be this old
    clock_skew_seconds: int = 60  # … and this far in the future (clocks ahead)
    allow_plaintext_http: bool = False  # PasswordText / Basic over plain HTTP off loopback
    trusted_proxies: str = ""  # comma-separated addresses whose X-Forwarded-* headers are believed
    failure_window_seconds: int = 900  # failures counted over this window
    slowdown_after: int = 3  # failures before answers to failed attempts are delayed
    lockout_after: int = 10  # failures before a user name from one address, or an address, is locked
    user_lockout_after: int = 50  # failures from any addresses before a user name is locked everywhere
    lockout_seconds: int = 900
    min_password_length: int = 12  # users add / users passwd refuse shorter passwords (characters)
    credential_cache_seconds: float = 60.0  # a verified Basic/PasswordText password is remembered; 0: off
    secret_key: str = ""  # key encrypting secrets PasswordDigest needs (docs/security.md: rotating the key)
    audit_checkpoint: str = ""  # empty: <data dir>/audit-checkpoint.json
    audit_checkpoint_seconds: float = 300.0  # serve moves the checkpoint to the chain head this often
    max_depth: int = 64  # XML element nesting
    max_text_bytes: int = 16 * 1024 * 1024  # one text node (attachments travel base64 in one)
    max_attributes: int = 64  # per element
    max_import_file_bytes: int = 512 * 1024 * 1024  # one file read by `archive-oa import` (XML or attachment)


#: Where a value came from, besides its built-in default: ``("file", path)``,
#: ``("environment", variable)`` or ``("option", "--data-dir")``.
Source = tuple[str, str]


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    oa: OaSettings = field(default_factory=OaSettings)
    workflow: WorkflowSettings = field(default_factory=WorkflowSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    #: ``{"data_dir" | "<section>.<key>": Source}`` for every value not left at its default;
    #: ``config show`` prints it.  Not part of equality: it says how, not what.
    sources: Mapping[str, Source] = field(default_factory=dict, compare=False, repr=False)

    def source_of(self, name: str) -> Source:
        """Where ``name`` (``"data_dir"`` or ``"<section>.<key>"``) came from."""
        return self.sources.get(name, ("default", ""))

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'archive-oa.db'}"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def public_url(self) -> str:
        gw = self.gateway
        return (gw.public_url or f"http://{gw.host}:{gw.port}").rstrip("/")

    def replace(self, *, options: Mapping[str, str] | None = None, **sections: Any) -> "Settings":
        """A copy with some sections' keys changed: ``replace(oa={"url": …})``.  ``options``: the
        command-line option that set a key, which becomes its source (``{"gateway.port": "--port"}``)."""
        changed = {}
        for name, values in sections.items():
            if name == "data_dir":
                changed[name] = Path(values)
            else:
                changed[name] = dataclasses.replace(getattr(self, name), **values)
        sources = {**self.sources, **{name: ("option", option) for name, option in (options or {}).items()}}
        return dataclasses.replace(self, **changed, sources=sources)


#: The loader's sections, each a dataclass whose fields are its keys.
SECTIONS = {
    "database": DatabaseSettings,
    "gateway": GatewaySettings,
    "oa": OaSettings,
    "workflow": WorkflowSettings,
    "sync": SyncSettings,
    "security": SecuritySettings,
}
_ALIASES = {"ARCHIVE_OA_PUBLIC_URL": ("gateway", "public_url")}


def data_home(data_dir: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The data folder: ``--data-dir``, else ``ARCHIVE_OA_HOME``, else ``~/.archive-oa``."""
    env = os.environ if env is None else env
    return Path(data_dir or env.get("ARCHIVE_OA_HOME") or DEFAULT_HOME).expanduser()


def config_file_path(data_dir: str | os.PathLike | None = None, config_file: str | os.PathLike | None = None,
                     env: Mapping[str, str] | None = None) -> Path:
    """The configuration file the commands read: ``--config``, else ``archive-oa.toml`` in the data folder."""
    return Path(config_file) if config_file else data_home(data_dir, env) / CONFIG_FILE_NAME


def load_settings(
    data_dir: str | os.PathLike | None = None,
    config_file: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    env = os.environ if env is None else env
    home = data_home(data_dir, env)
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    sources: dict[str, Source] = {}
    if data_dir:
        sources["data_dir"] = ("option", "--data-dir")
    elif env.get("ARCHIVE_OA_HOME"):
        sources["data_dir"] = ("environment", "ARCHIVE_OA_HOME")

    path = config_file_path(data_dir, config_file, env)
    if config_file and not path.is_file():
        raise ConfigurationError(f"configuration file {path} does not exist: check --config")
    if path.is_file():
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{path}: not valid TOML ({exc}); fix the file") from exc
        for section, keys in document.items():
            if section not in SECTIONS or not isinstance(keys, dict):
                raise ConfigurationError(
                    f"{path}: unknown section [{section}]; known: {', '.join(SECTIONS)}"
                )
            values[section].update(keys)
            sources.update((f"{section}.{key}", ("file", str(path))) for key in keys)
        _warn_if_secrets_are_readable(path, document)

    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            var = env_name(name, f.name)
            if var in env:
                values[name][f.name] = env[var]
                sources[f"{name}.{f.name}"] = ("environment", var)
    for var, (section, key) in _ALIASES.items():
        if var in env:
            values[section][key] = env[var]
            sources[f"{section}.{key}"] = ("environment", var)

    sections = {name: _build(cls, values[name], name) for name, cls in SECTIONS.items()}
    return Settings(data_dir=home, sources=sources, **sections)


def _warn_if_secrets_are_readable(path: Path, document: Mapping[str, Any]) -> None:
    """One WARNING when the file holds a password or key and its group or others may read it."""
    held = [f"[{section}] {key}" for section, key in (("oa", "password"), ("security", "secret_key"))
            if document.get(section, {}).get(key)]
    url = str(document.get("database", {}).get("url", ""))
    if mask_url(url) != url:
        held.append("the password in [database] url")
    mode = stat.S_IMODE(path.stat().st_mode)
    if held and os.name == "posix" and mode & 0o044:
        log.warning("%s holds %s and is readable by %s (mode %03o): chmod 600 %s",
                    path, " and ".join(held), "group and others" if mode & 0o004 else "its group", mode, path)


def example_config() -> str:
    """The text of the shipped ``archive-oa.toml.example``."""
    return importlib.resources.files(__package__).joinpath(EXAMPLE_FILE_NAME).read_text(encoding="utf-8")


def _build(cls, raw: dict[str, Any], section: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigurationError(
                f"[{section}] has no key {key!r}; known keys: {', '.join(sorted(known))}"
            )
        kwargs[key] = _coerce(known[key].type, value, f"[{section}] {key}")
    return cls(**kwargs)


def _coerce(type_name: str, value: Any, where: str) -> Any:
    try:
        if type_name == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if type_name == "int":
            return int(value)
        if type_name == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where} = {value!r} is not a valid {type_name}") from exc
