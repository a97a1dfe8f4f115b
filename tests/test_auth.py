"""Authentication over real HTTP on loopback: PasswordDigest (zeep), PasswordText, Basic,
replays, freshness, clear-text policy behind proxies, slow-down and lock-out, key rotation.

Every test starts its own gateway on a fresh database, so failures counted by one test
never lock another out.  The gateway's clock is the real one plus an offset the test
can move (lock-out expiry without waiting); tokens are made by zeep, the real client.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests
import zeep
from requests.auth import HTTPBasicAuth
from sqlalchemy import event, func, select
from zeep.exceptions import Fault
from zeep.transports import Transport
from zeep.wsse.username import UsernameToken

from archive_oa.gateway.app import make_gateway_app
from archive_oa.gateway.auth import Credentials, PasswordAuthenticator
from archive_oa.gateway.context import GatewayServices
from archive_oa.gateway.server import start_gateway
from archive_oa.security import passwords
from archive_oa.security.credential_cache import VerifiedCredentials
from archive_oa.security.secrets import KEY_FILE_NAME, generate_key, key_id
from archive_oa.security.transport import Origin, ProxyPolicy, plaintext_allowed
from archive_oa.services import audit
from archive_oa.services.archive import ArchiveService
from archive_oa.services.users import Throttled, UserService
from archive_oa.settings import load_settings
from archive_oa.errors import AuthenticationFailed, ConfigurationError
from archive_oa.store.engine import open_store
from archive_oa.store import users as user_repo
from archive_oa.store.security_tables import auth_lockouts, user_secrets, ws_nonces
from archive_oa.transforms.pipeline import Transforms

UTC = dt.timezone.utc
GW = "urn:archive-oa:gateway:1"
PASSWORD = "pw-张三-1-密码-2026"  # [security] min_password_length: 12 characters


class Clock:
    """Real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(UTC) + self.offset


@dataclass
class Gateway:
    handle: object
    store: object
    users: UserService
    clock: Clock
    sleeps: list
    settings: object

    @property
    def url(self) -> str:
        return self.handle.url

    def client(self, wsse=None, *, session=None):
        transport = Transport(session=session) if session else None
        return zeep.Client(self.handle.wsdl_url, wsse=wsse, transport=transport).service

    def digest(self, user="alice", secret=PASSWORD, *, session_headers=None, **token):
        token = UsernameToken(user, secret, use_digest=True, **token)
        return self.client(token, session=_session(**session_headers) if session_headers else None)

    def text(self, user="alice", secret=PASSWORD, **session_headers):
        return self.client(UsernameToken(user, secret), session=_session(**session_headers))

    def basic(self, user="alice", secret=PASSWORD, **session_headers):
        session = _session(**session_headers)
        session.auth = HTTPBasicAuth(user.encode(), secret.encode())
        return self.client(session=session)

    def count(self, table) -> int:
        with self.store.transaction() as conn:
            return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _session(**headers) -> requests.Session:
    session = requests.Session()
    session.headers.update({name.replace("_", "-"): value for name, value in headers.items()})
    return session


@pytest.fixture
def start(tmp_path):
    """start(data_dir_name="gw", **security settings) -> Gateway; stopped after the test."""
    running = []

    def start_one(data_dir_name="gw", **security):
        env = {f"ARCHIVE_OA_SECURITY_{key.upper()}": str(value) for key, value in security.items()}
        settings = load_settings(data_dir=tmp_path / data_dir_name, env=env)
        store = open_store(settings)
        users = UserService(store, settings=settings)
        clock, sleeps = Clock(), []
        services = GatewayServices(
            store=store,
            archive=ArchiveService(store, Transforms.from_settings()),
            authenticator=PasswordAuthenticator(users, clock=clock, sleep=sleeps.append),
            clock=clock,
        )
        handle = start_gateway(make_gateway_app(settings, services), "127.0.0.1", 0)
        gateway = Gateway(handle, store, users, clock, sleeps, settings)
        running.append(gateway)
        return gateway

    yield start_one
    for gateway in running:
        gateway.handle.stop()
        gateway.store.dispose()


@pytest.fixture
def gw(start):
    gateway = start()
    gateway.users.add_user("alice", PASSWORD, {"viewer"}, None)
    return gateway


def call(service):
    return service.QueryVouchers(page=1, pageSize=1)


def refused(service) -> str:
    """The Authentication fault's message (asserting the code)."""
    with pytest.raises(Fault) as fault:
        call(service)
    code = fault.value.detail.find(f"{{{GW}}}GatewayFault/{{{GW}}}code").text
    assert code == "Authentication", fault.value.message
    return fault.value.message.removeprefix("Authentication: ")


def audit_records(gateway, operation):
    with gateway.store.transaction() as conn:
        return audit.find_records(conn, operation=operation)


# --- PasswordDigest ------------------------------------------------------------------------------


def test_password_digest_from_zeep_is_accepted_and_the_secret_is_stored_encrypted(gw):
    assert call(gw.digest()).total == 0
    with gw.store.transaction() as conn:
        row = conn.execute(select(user_secrets)).one()
    assert PASSWORD not in row.secret and row.username == "alice"
    key_file = gw.settings.data_dir / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert row.key_id == key_id(key_file.read_text().strip())
    database = (gw.settings.data_dir / "archive-oa.db").read_bytes()
    assert PASSWORD.encode() not in database


def test_wrong_digest_is_refused(gw):
    assert "authentication failed for user 'alice'" in refused(gw.digest(secret="not-it"))


def test_digest_is_the_oasis_formula_with_the_decoded_nonce():
    nonce, created = os.urandom(16), "2026-01-31T08:00:00Z"
    expected = base64.b64encode(hashlib.sha1(nonce + created.encode() + b"pw").digest()).decode()
    assert passwords.password_digest(nonce, created, "pw") == expected
    assert passwords.digest_matches(f" {expected}\n", nonce, created, "pw")
    assert not passwords.digest_matches(expected, nonce[:-1] + b"x", created, "pw")


def test_replayed_nonce_is_refused_by_every_instance_sharing_the_database(start):
    first = start("shared")
    first.users.add_user("alice", PASSWORD, {"viewer"}, None)
    second = start("shared")  # a second instance on the same database
    token = dict(nonce="fixed-nonce-0001", created=dt.datetime.now(UTC))
    assert call(first.digest(**token)).total == 0
    assert "replay" in refused(first.digest(**token))
    assert "replay" in refused(second.digest(**token))
    assert call(second.digest()).total == 0  # a fresh nonce is fine


def test_expired_nonces_are_forgotten(gw):
    assert call(gw.digest(created=dt.datetime.now(UTC) - dt.timedelta(seconds=250))).total == 0
    assert gw.count(ws_nonces) == 1
    gw.clock.offset = dt.timedelta(seconds=60)  # that token is now stale: its nonce need not be kept
    assert call(gw.digest(created=gw.clock())).total == 0
    with gw.store.transaction() as conn:
        kept = conn.execute(select(ws_nonces.c.expires_at)).scalars().all()
    assert len(kept) == 1 and kept[0] > gw.clock()


def test_stale_created_is_refused(gw):
    stale = dt.datetime.now(UTC) - dt.timedelta(seconds=301)
    assert "more than the 300 s allowed" in refused(gw.digest(created=stale))


def test_created_in_the_future_is_refused_beyond_the_clock_allowance(gw):
    ahead = dt.datetime.now(UTC) + dt.timedelta(seconds=120)
    assert "in the future" in refused(gw.digest(created=ahead))
    assert call(gw.digest(created=dt.datetime.now(UTC) + dt.timedelta(seconds=30))).total == 0


def test_digest_without_nonce_or_created_is_refused(gw):
    created = dt.datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = passwords.password_digest(b"", created, PASSWORD)
    for parts in (f"<wsu:Created>{created}</wsu:Created>", "<wsse:Nonce>MDEyMzQ1Njc4OWFiY2RlZg==</wsse:Nonce>"):
        answer = _raw_token_call(gw, f'<wsse:Password Type="{_DIGEST_TYPE}">{digest}</wsse:Password>{parts}')
        assert answer.status_code == 500 and b">Authentication</tns:code>" in answer.content
        assert b"needs wsse:Nonce and wsu:Created" in answer.content


def test_user_without_a_stored_secret_cannot_use_digest_but_text_still_works(start):
    gateway = start()
    UserService(gateway.store).add_user("legacy", PASSWORD, {"viewer"}, None)  # no key: no secret
    assert gateway.count(user_secrets) == 0
    refused(gateway.digest("legacy"))
    assert call(gateway.text("legacy")).total == 0
    gateway.users.set_password("legacy", PASSWORD)  # what the log tells the administrator to do
    assert call(gateway.digest("legacy")).total == 0


def test_digest_without_its_key_file_makes_no_new_key_and_names_the_missing_key(start, caplog):
    first = start("lost-key")
    first.users.add_user("alice", PASSWORD, {"viewer"}, None)
    key_file = first.settings.data_dir / KEY_FILE_NAME
    lost = key_id(key_file.read_text().split()[0])
    key_file.unlink()  # e.g. a data folder restored from a backup that did not hold the key
    later = start("lost-key")  # a process started afterwards: `serve` would make a new key on first use
    assert f"key id {lost}" in later.users.key_problem()  # what `serve` logs once at start
    refused(later.digest())
    assert not key_file.exists()  # a new key would decrypt nothing, and would hide which one is missing
    assert f"key id {lost}, but {key_file} does not exist" in caplog.text and "secret.key of the backup" in caplog.text


_DIGEST_TYPE = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
)


def _raw_token_call(gateway, token_parts: str) -> requests.Response:
    envelope = f"""<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:gw="{GW}"
  xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
  xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd">
 <soapenv:Header><wsse:Security><wsse:UsernameToken>
  <wsse:Username>alice</wsse:Username>{token_parts}
 </wsse:UsernameToken></wsse:Security></soapenv:Header>
 <soapenv:Body><gw:QueryVouchers><gw:page>1</gw:page><gw:pageSize>1</gw:pageSize></gw:QueryVouchers></soapenv:Body>
</soapenv:Envelope>"""
    return requests.post(gateway.url, data=envelope.encode(), headers={"Content-Type": "text/xml; charset=utf-8"},
                         timeout=30)


# --- PasswordText and Basic: credentials, users ---------------------------------------------------


def test_password_text_and_basic_from_loopback(gw):
    assert call(gw.text()).total == 0
    assert call(gw.basic()).total == 0


@pytest.mark.slow
def test_wrong_password_unknown_user_and_disabled_user_get_the_same_answer(gw):
    gw.users.add_user("bob", PASSWORD, {"viewer"}, None, disabled=True)
    answers = [
        refused(gw.text("alice", "wrong")),
        refused(gw.basic("nobody", PASSWORD)),
        refused(gw.digest("nobody")),
        refused(gw.text("bob")),
        refused(gw.digest("bob")),
    ]
    assert {a.replace("'nobody'", "X").replace("'bob'", "X").replace("'alice'", "X") for a in answers} == {
        "authentication failed for user X: unknown user, wrong password or disabled account; check the credentials"
    }
    gw.users.set_disabled("bob", False)
    assert call(gw.digest("bob")).total == 0


# --- clear text over plain HTTP, proxies -------------------------------------------------------------


def test_basic_and_text_from_a_remote_client_behind_a_trusted_proxy_need_tls(start):
    gateway = start(trusted_proxies="127.0.0.1")
    gateway.users.add_user("alice", PASSWORD, {"viewer"}, None)
    remote = {"X_Forwarded_For": "203.0.113.7"}
    assert "over plain HTTP from 203.0.113.7 is refused" in refused(gateway.basic(**remote))
    assert "PasswordText over plain HTTP" in refused(gateway.text(**remote))
    assert call(gateway.basic(**remote, X_Forwarded_Proto="https")).total == 0
    assert call(gateway.text(**remote, X_Forwarded_Proto="https")).total == 0
    # PasswordDigest never shows the password: allowed over plain HTTP from anywhere.
    assert call(gateway.digest(session_headers=remote)).total == 0


def test_forwarded_headers_from_an_untrusted_peer_are_not_believed(gw):
    # Not trusted: X-Forwarded-Proto cannot vouch for TLS, and a relayed request is not local.
    headers = {"X_Forwarded_For": "203.0.113.7", "X_Forwarded_Proto": "https"}
    assert "over plain HTTP from 127.0.0.1 is refused" in refused(gw.basic(**headers))
    assert call(gw.digest()).total == 0


def test_allow_plaintext_http_lets_remote_clients_use_basic(start):
    gateway = start(trusted_proxies="127.0.0.0/8", allow_plaintext_http="true")
    gateway.users.add_user("alice", PASSWORD, {"viewer"}, None)
    assert call(gateway.basic(X_Forwarded_For="203.0.113.7")).total == 0


def test_proxy_policy_reads_the_chain_from_the_right():
    policy = ProxyPolicy("10.0.0.1, 192.168.0.0/16")
    environ = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4, 198.51.100.9, 192.168.3.3",
               "HTTP_X_FORWARDED_PROTO": "http, https"}
    origin = policy.origin(environ)
    assert (origin.address, origin.secure, origin.loopback) == ("198.51.100.9", True, False)
    # A client on this host reached through the trusted proxy is local.
    local = policy.origin({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "::1"})
    assert local.loopback and plaintext_allowed(local, allow_plaintext_http=False)
    # Garbage in the header falls back to the peer, which is no loopback.
    assert policy.origin({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "evil"}).address == "10.0.0.1"
    direct = ProxyPolicy("").origin({"REMOTE_ADDR": "::1", "wsgi.url_scheme": "http"})
    assert direct.loopback and not direct.secure
    remote = ProxyPolicy("").origin({"REMOTE_ADDR": "198.51.100.9", "wsgi.url_scheme": "https"})
    assert plaintext_allowed(remote, allow_plaintext_http=False)
    assert not plaintext_allowed(ProxyPolicy("").origin({"REMOTE_ADDR": "198.51.100.9"}), allow_plaintext_http=False)
    with pytest.raises(ConfigurationError, match="trusted_proxies entry 'proxy.local'"):
        ProxyPolicy("10.0.0.1, proxy.local")


# --- slow-down and lock-out ---------------------------------------------------------------------------


@pytest.mark.slow
def test_user_is_slowed_then_locked_then_released_when_the_lock_expires(start):
    gateway = start(slowdown_after=2, lockout_after=4, lockout_seconds=60)
    gateway.users.add_user("alice", PASSWORD, {"viewer"}, None)
    for _ in range(4):
        refused(gateway.text("alice", "guess"))
    assert gateway.sleeps == [0.5, 1.0]  # before the 3rd and 4th attempt
    message = refused(gateway.text("alice"))  # even the right password, while locked
    assert "too many failed authentications for user 'alice': locked until" in message
    assert "locked until" in refused(gateway.digest())
    locks = {record.targets: record for record in audit_records(gateway, "AuthLockout")}
    # alice from that source, and the source (issue 9: alice is locked from there only)
    assert set(locks) == {("user:alice", "source:127.0.0.1"), ("source:127.0.0.1",)}
    lock = locks[("user:alice", "source:127.0.0.1")]
    assert lock.outcome == "Locked" and lock.details["failures"] == 4 and lock.source == "127.0.0.1"
    assert PASSWORD not in str(lock) and "guess" not in str(lock)
    gateway.clock.offset = dt.timedelta(seconds=61)
    assert call(gateway.digest(created=gateway.clock())).total == 0
    assert call(gateway.text("alice")).total == 0


def test_a_source_is_locked_across_user_names_for_failed_attempts_only(start):
    gateway = start(trusted_proxies="127.0.0.1", lockout_after=3, slowdown_after=10)
    gateway.users.add_user("alice", PASSWORD, {"viewer"}, None)
    attacker = {"X_Forwarded_For": "198.51.100.66"}
    for name in ("u1", "u2", "u3"):  # three names: no single user reaches the limit
        refused(gateway.digest(name, "guess", session_headers=attacker))
    for name, secret in (("u4", "guess"), ("alice", "guess")):  # unknown name and wrong password alike
        locked = refused(gateway.digest(name, secret, session_headers=attacker))
        assert "source address 198.51.100.66" in locked and "users unlock --address 198.51.100.66" in locked
    assert call(gateway.digest(session_headers=attacker)).total == 0  # alice's right password gets in
    assert call(gateway.digest()).total == 0  # and from elsewhere
    assert gateway.count(auth_lockouts) == 1
    assert gateway.users.unlock("source", "198.51.100.66")
    assert "authentication failed" in refused(gateway.digest("u5", "guess", session_headers=attacker))


@pytest.mark.slow
def test_an_unknown_name_failing_behind_an_address_locks_no_user_out(start):
    """Issue 9: ten QueryVouchers as ghost-user from 127.0.0.1 locked every user of that address."""
    gateway = start()  # the shipped limits: slowed from 3 failures, locked at 10
    gateway.users.add_user("alice", PASSWORD, {"viewer"}, None)
    for _ in range(10):
        refused(gateway.text("ghost-user", "ghost-user"))
    assert "user 'ghost-user'" in refused(gateway.text("ghost-user", "ghost-user"))
    assert "source address 127.0.0.1" in refused(gateway.text("ghost-2", "ghost-2"))
    waited = len(gateway.sleeps)
    assert call(gateway.text("alice")).total == 0  # at once: no lock, no wait
    assert call(gateway.digest()).total == 0
    assert call(gateway.basic("alice")).total == 0
    assert len(gateway.sleeps) == waited
    with gateway.store.transaction() as conn:
        targets = {record.targets for record in audit.find_records(conn, operation="AuthLockout")}
    assert targets == {("user:ghost-user", "source:127.0.0.1"), ("source:127.0.0.1",)}


@pytest.mark.slow
def test_enabling_a_user_lifts_its_lock_and_success_clears_its_failures(start):
    gateway = start(trusted_proxies="127.0.0.1", lockout_after=3, user_lockout_after=3, slowdown_after=2)
    gateway.users.add_user("alice", PASSWORD, {"viewer"}, None)
    sources = (f"198.51.100.{n}" for n in range(1, 100))  # a new source each time: only alice counts

    def text(secret):
        return gateway.text("alice", secret, X_Forwarded_For=next(sources), X_Forwarded_Proto="https")

    refused(text("guess"))
    refused(text("guess"))
    assert call(text(PASSWORD)).total == 0  # the right password clears alice's count …
    refused(text("guess"))
    refused(text("guess"))
    assert gateway.count(auth_lockouts) == 0  # … so two more failures do not lock her
    refused(text("guess"))
    assert "locked" in refused(text(PASSWORD))
    gateway.users.set_disabled("alice", False)  # users enable
    assert call(text(PASSWORD)).total == 0


# --- the encryption key ------------------------------------------------------------------------------


def test_rotating_the_key_file_re_encrypts_every_secret(gw):
    key_file = gw.settings.data_dir / KEY_FILE_NAME
    call(gw.digest())  # the key file exists
    old = key_file.read_text().strip()
    count, new_id = gw.users.rotate_key()
    assert count == 1 and new_id != key_id(old)
    assert key_file.read_text().split() == [key_file.read_text().strip()]  # one key left: the new one
    assert key_id(key_file.read_text().strip()) == new_id
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with gw.store.transaction() as conn:
        assert conn.execute(select(user_secrets.c.key_id)).scalar_one() == new_id
    # A new service (what a restarted gateway builds) reads the new key.
    fresh = UserService(gw.store, settings=gw.settings)
    assert fresh.authenticate_digest("alice", passwords.password_digest(b"n" * 16, "c", PASSWORD), b"n" * 16, "c")
    # A gateway that kept running through the rotation in another process re-reads the file.
    elsewhere = UserService(gw.store, settings=gw.settings)
    elsewhere.rotate_key()
    assert call(gw.digest()).total == 0
    assert [r.targets for r in audit_records(gw, "KeyRotate")][0] == (new_id,)


def test_configured_keys_rotate_by_putting_the_new_key_first(tmp_path):
    old, new = generate_key(), generate_key()
    before = load_settings(data_dir=tmp_path, env={"ARCHIVE_OA_SECURITY_SECRET_KEY": old})
    store = open_store(before)
    try:
        UserService(store, settings=before).add_user("alice", PASSWORD, {"viewer"}, None)
        during = load_settings(data_dir=tmp_path, env={"ARCHIVE_OA_SECURITY_SECRET_KEY": f"{new},{old}"})
        assert UserService(store, settings=during).rotate_key() == (1, key_id(new))
        after_settings = load_settings(data_dir=tmp_path, env={"ARCHIVE_OA_SECURITY_SECRET_KEY": new})
        after = UserService(store, settings=after_settings)
        nonce = b"n" * 16
        assert after.authenticate_digest("alice", passwords.password_digest(nonce, "c", PASSWORD), nonce, "c")
        assert not (tmp_path / KEY_FILE_NAME).exists()  # configured keys: no key file
        bad = load_settings(data_dir=tmp_path, env={"ARCHIVE_OA_SECURITY_SECRET_KEY": "not-a-key"})
        with pytest.raises(ConfigurationError, match=r"key 1 in \[security\] secret_key / ARCHIVE_OA_SECURITY_SECRET_KEY"):
            UserService(store, settings=bad).add_user("bob", PASSWORD, {"viewer"}, None)
    finally:
        store.dispose()


# --- the shared state on both backends (SQLite and PostgreSQL) ----------------------------------------


def _digest_credentials(user, secret, created: dt.datetime, nonce: bytes | None = None) -> Credentials:
    nonce = nonce or os.urandom(16)
    created_text = created.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return Credentials(user, passwords.password_digest(nonce, created_text, secret), "wsse-digest",
                       nonce=base64.b64encode(nonce).decode(), created=created_text)


def test_replay_and_lockout_state_is_shared_through_the_database(store, db_settings):
    users = UserService(store, settings=db_settings)
    users.add_user("alice", PASSWORD, {"viewer"}, None)
    users.add_user("bob", PASSWORD, {"viewer"}, None)
    clock = Clock()
    security = dataclasses.replace(db_settings.security, lockout_after=4, user_lockout_after=4, lockout_seconds=60)
    instances = [PasswordAuthenticator(UserService(store, settings=db_settings), security, clock=clock,
                                       sleep=lambda seconds: None) for _ in range(4)]
    # The same token sent to four instances at once: exactly one accepts it (3 replays: below the limit).
    token = _digest_credentials("bob", PASSWORD, clock())
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda auth: _outcome(auth, token, "198.51.100.1"), instances))
    assert sorted(outcomes) == ["ok", "replay", "replay", "replay"]
    # Failures at different instances, from different sources, add up to one lock of the user.
    for n, auth in enumerate(instances, start=2):
        assert _outcome(auth, _digest_credentials("alice", "guess", clock()), f"198.51.100.{n}") == "refused"
    assert _outcome(instances[0], _digest_credentials("alice", PASSWORD, clock()), "198.51.100.9") == "locked"
    with store.transaction() as conn:
        assert [r.targets for r in audit.find_records(conn, operation="AuthLockout")] == [("user:alice",)]
    clock.offset = dt.timedelta(seconds=61)
    assert _outcome(instances[1], _digest_credentials("alice", PASSWORD, clock()), "198.51.100.9") == "ok"


def _outcome(auth, credentials, address) -> str:
    try:
        auth.authenticate(credentials, Origin(address, secure=True))
        return "ok"
    except AuthenticationFailed as exc:
        for word in ("replay", "locked"):
            if word in exc.message:
                return word
        return "refused" if exc.message.startswith("authentication failed") else exc.message


# --- verified credentials: scrypt once per (user, password), never a wrong password -----------------


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def counted_scrypt(monkeypatch):
    """How often a password was checked against its scrypt hash."""
    import archive_oa.services.users as users_module

    calls = []

    def verify(password, encoded):
        calls.append(password)
        return passwords.verify_password(password, encoded)

    monkeypatch.setattr(users_module, "verify_password", verify)
    return calls


def _text_credentials(user="alice", secret=PASSWORD) -> Credentials:
    return Credentials(user, secret, "basic")


def _authenticator(store, settings, ticks, **security):
    security = dataclasses.replace(settings.security, **security)
    users = UserService(store, settings=settings, verified=VerifiedCredentials(60, clock=ticks))
    return users, PasswordAuthenticator(users, security, clock=Clock(), sleep=lambda seconds: None)


@pytest.mark.slow
def test_a_verified_password_is_hashed_once_and_a_wrong_one_always(store, db_settings, counted_scrypt):
    ticks = Ticks()
    users, auth = _authenticator(store, db_settings, ticks, lockout_after=100, slowdown_after=100)
    users.add_user("alice", PASSWORD, {"viewer"}, None)
    for _ in range(3):
        assert _outcome(auth, _text_credentials(), "198.51.100.1") == "ok"
    assert len(counted_scrypt) == 1
    # A wrong password after a cached right one: refused, hashed, and counted as a failure.
    for wrong in ("guess", PASSWORD + " ", PASSWORD[:-1], ""):
        assert _outcome(auth, _text_credentials(secret=wrong), "198.51.100.1") == "refused"
    assert len(counted_scrypt) == 5
    with store.transaction() as conn:
        assert user_repo.count_failures(conn, "user", "alice", Clock()() - dt.timedelta(hours=1)) == 4
    # Another user with the same password gets no free pass either.
    users.add_user("bob", "other-pw-2026", {"viewer"}, None)
    assert _outcome(auth, _text_credentials("bob", PASSWORD), "198.51.100.1") == "refused"
    assert _outcome(auth, _text_credentials(), "198.51.100.1") == "ok"
    assert len(counted_scrypt) == 6


def test_a_locked_name_is_refused_before_its_password_is_checked(store, db_settings, counted_scrypt):
    users, auth = _authenticator(store, db_settings, Ticks(), lockout_after=3, user_lockout_after=3,
                                 slowdown_after=100)
    users.add_user("alice", PASSWORD, {"viewer"}, None)
    for _ in range(3):
        assert _outcome(auth, _text_credentials(secret="wrong"), "198.51.100.1") == "refused"
    checked = len(counted_scrypt)
    for secret in (PASSWORD, "wrong"):  # right or wrong, from this address or another: one answer, no check
        for address in ("198.51.100.1", "198.51.100.2"):
            assert _outcome(auth, _text_credentials(secret=secret), address) == "locked"
    assert len(counted_scrypt) == checked
    with store.transaction() as conn:  # the locked name's refusals count nowhere
        counts = user_repo.failure_counts(conn, Clock()() - dt.timedelta(hours=1))
    assert counts == {}


@pytest.mark.slow
def test_password_disable_role_and_scope_changes_count_at_once_in_every_instance(store, db_settings):
    ticks = Ticks()
    _, auth = _authenticator(store, db_settings, ticks)
    admin = UserService(store, settings=db_settings)  # another instance, sharing only the database
    admin.add_user("alice", PASSWORD, {"viewer"}, None)
    origin = Origin("198.51.100.1", secure=True)
    assert auth.authenticate(_text_credentials(), origin).roles == {"viewer"}

    admin.grant("alice", {"operator"})
    admin.set_scope("alice", {"ORG1"})
    principal = auth.authenticate(_text_credentials(), origin)
    assert principal.roles == {"viewer", "operator"} and principal.org_scope == {"ORG1"}

    admin.set_disabled("alice", True)
    assert _outcome(auth, _text_credentials(), "198.51.100.1") == "refused"
    admin.set_disabled("alice", False)
    assert _outcome(auth, _text_credentials(), "198.51.100.1") == "ok"

    admin.set_password("alice", "new-secret-2")
    assert _outcome(auth, _text_credentials(), "198.51.100.1") == "refused"  # the old one, remembered
    assert _outcome(auth, _text_credentials(secret="new-secret-2"), "198.51.100.1") == "ok"
    admin.set_password("alice", PASSWORD)  # back to the old password: a new salt, verified afresh
    assert _outcome(auth, _text_credentials(secret="new-secret-2"), "198.51.100.1") == "refused"
    assert _outcome(auth, _text_credentials(), "198.51.100.1") == "ok"


def test_remembered_passwords_expire_and_zero_seconds_remembers_none(tmp_path, counted_scrypt):
    settings = load_settings(data_dir=tmp_path / "d", env={})
    store = open_store(settings)
    try:
        ticks = Ticks()
        users = UserService(store, settings=settings, verified=VerifiedCredentials(60, clock=ticks))
        users.add_user("alice", PASSWORD, {"viewer"}, None)
        users.authenticate("alice", PASSWORD)
        ticks.now += 59
        users.authenticate("alice", PASSWORD)
        assert len(counted_scrypt) == 1
        ticks.now += 1  # 60 s after it was verified: hashed again, remembered again
        users.authenticate("alice", PASSWORD)
        users.authenticate("alice", PASSWORD)
        assert len(counted_scrypt) == 2

        off = load_settings(data_dir=tmp_path / "d", env={"ARCHIVE_OA_SECURITY_CREDENTIAL_CACHE_SECONDS": "0"})
        uncached = UserService(store, settings=off)
        assert not uncached.verified.enabled
        uncached.authenticate("alice", PASSWORD)
        uncached.authenticate("alice", PASSWORD)
        assert len(counted_scrypt) == 4 and len(uncached.verified) == 0
    finally:
        store.dispose()


def test_the_credential_cache_is_bounded_and_keys_are_no_passwords():
    ticks = Ticks()
    cache = VerifiedCredentials(60, max_entries=3, clock=ticks)
    for n in range(5):
        cache.remember(f"user{n}", "pw", f"hash{n}")
    assert len(cache) == 3
    assert not cache.matches("user0", "pw", "hash0") and cache.matches("user4", "pw", "hash4")
    # The user name's length is part of the key: ("ab", "c") is not ("a", "bc").
    cache.remember("ab", "c", "h")
    assert not cache.matches("a", "bc", "h") and cache.matches("ab", "c", "h")
    assert not cache.matches("ab", "c", "another hash")  # a superseded hash is dropped …
    assert not cache.matches("ab", "c", "h")  # … for good
    assert all(b"pw" not in key and b"user" not in key for key in cache._entries)
    # Passwords that are no valid UTF-8 text are refused like any wrong password, not an error.
    assert not cache.matches("alice", "\udcff", "h")


def test_the_throttle_standing_and_the_user_row_are_read_in_one_transaction(store, db_settings):
    users, auth = _authenticator(store, db_settings, Ticks(), lockout_after=100, slowdown_after=100)
    users.add_user("alice", PASSWORD, {"viewer"}, None)
    assert _outcome(auth, _text_credentials(), "198.51.100.1") == "ok"  # scrypt once, remembered
    begun = []

    def begin(conn):
        begun.append(conn)

    event.listen(store.engine, "begin", begin)
    try:
        assert _outcome(auth, _text_credentials(), "198.51.100.1") == "ok"
    finally:
        event.remove(store.engine, "begin", begin)
    assert len(begun) == 1
    # Read in that one transaction every time: a disabled account is refused at once.
    users.set_disabled("alice", True)
    assert _outcome(auth, _text_credentials(), "198.51.100.1") == "refused"


def test_only_failed_attempts_wait_and_a_right_password_never_does(store, db_settings):
    security = dataclasses.replace(db_settings.security, slowdown_after=3, lockout_after=100)
    users = UserService(store, settings=db_settings, verified=VerifiedCredentials(60, clock=Ticks()))
    waits = []
    auth = PasswordAuthenticator(users, security, clock=Clock(), sleep=waits.append)
    users.add_user("alice", PASSWORD, {"viewer"}, None)
    for _ in range(4):  # another name fails from the same address: slowed from its 4th failure on
        assert _outcome(auth, _text_credentials("bob", "wrong"), "198.51.100.1") == "refused"
    assert waits == [0.5]
    assert _outcome(auth, _text_credentials(), "198.51.100.1") == "ok"
    assert waits == [0.5]  # alice's right password is not slowed by bob's failures
    assert _outcome(auth, _text_credentials(secret="wrong"), "198.51.100.1") == "refused"
    assert waits == [0.5, 1.0]  # her wrong one is: the address has failed four times


def test_credentials_are_read_once_per_call_and_bad_ones_still_refuse(store, db_settings, monkeypatch):
    from archive_oa.gateway import auth as auth_module

    reads = []
    real = auth_module.credentials_from
    monkeypatch.setattr(auth_module, "credentials_from", lambda *args: reads.append(1) or real(*args))
    claim = auth_module.claim_from({"HTTP_AUTHORIZATION": "Basic !!not base64"}, None)
    assert claim.username == "anonymous" and isinstance(claim.error, AuthenticationFailed)
    users, auth = _authenticator(store, db_settings, Ticks())
    with pytest.raises(AuthenticationFailed, match="not valid base64"):
        auth_module.authenticate_call("GetVoucher", auth, {}, claim)
    assert len(reads) == 1


# --- a locked address stays slow; a name is locked from its address, everywhere only much later -----


class StoppedClock(Clock):
    """A clock that moves only when the test moves it: an attempt takes no time."""

    def __init__(self) -> None:
        super().__init__()
        self.start = dt.datetime(2026, 12, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> dt.datetime:
        return self.start + self.offset


def _stopped_authenticator(store, settings, waits, **security):
    clock = StoppedClock()
    users = UserService(store, settings=settings, clock=clock)
    security = dataclasses.replace(settings.security, **security)
    return users, PasswordAuthenticator(users, security, clock=clock, sleep=waits.append), clock


@pytest.mark.slow
def test_failures_from_a_locked_address_wait_the_longest_and_keep_it_locked(store, db_settings, counted_scrypt):
    """Review of issue 9: at the address's lock its count was cleared and no longer kept, so
    attempts 11 on from a spraying address were answered at once again, each password checked."""
    waits = []
    users, auth, clock = _stopped_authenticator(store, db_settings, waits)  # the shipped limits: 3, 10, 900 s
    users.add_user("alice", PASSWORD, {"viewer"}, None)
    attacker = "198.51.100.66"
    for n in range(10):  # a new name each time: only the address counts up
        assert _outcome(auth, _text_credentials(f"name-{n}", "guess"), attacker) == "refused"
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]  # from the 4th failure on
    hashed = len(counted_scrypt)
    for n in range(10, 14):
        assert "source address 198.51.100.66" in _message(auth, _text_credentials(f"name-{n}", "guess"), attacker)
    assert waits[7:] == [4.0] * 4  # locked: every failure waits the longest …
    assert len(counted_scrypt) == hashed  # … and a name that is no user costs no hash
    assert "source address" in _message(auth, _text_credentials(secret="guess"), attacker)
    assert waits[11:] == [4.0] and len(counted_scrypt) == hashed + 1  # a user's wrong password: hashed, as late
    assert _outcome(auth, _text_credentials(), attacker) == "ok"  # her right one: at once
    assert len(waits) == 12

    clock.offset = dt.timedelta(seconds=600)  # still failing: the lock moves on to 900 s from the last failure
    assert "source address" in _message(auth, _text_credentials("name-x", "guess"), attacker)
    clock.offset = dt.timedelta(seconds=1499)
    assert "source address" in _message(auth, _text_credentials("name-y", "guess"), attacker)
    with store.transaction() as conn:
        assert user_repo.active_lockout(conn, "source", attacker, clock()).locked_until == (
            clock() + dt.timedelta(seconds=900))
        counts = user_repo.failure_counts(conn, clock() - dt.timedelta(seconds=900))
    assert counts[("source", attacker)] == 2  # the failures while locked are counted (users list shows them)
    clock.offset = dt.timedelta(seconds=1499 + 901)  # quiet for lockout_seconds: open again
    assert _outcome(auth, _text_credentials("name-z", "guess"), attacker) == "refused"
    with store.transaction() as conn:
        assert [r.targets for r in audit.find_records(conn, operation="AuthLockout")] == [
            ("source:198.51.100.66",)]  # one lock, moved on, audited once


@pytest.mark.slow
def test_a_name_failing_from_one_address_is_locked_there_only_and_everywhere_far_later(store, db_settings):
    """Issue 9: ten wrong passwords of the OA platform's account from one address locked it
    from every address (anyone anywhere could lock the integration out)."""
    waits = []
    users, auth, clock = _stopped_authenticator(store, db_settings, waits, user_lockout_after=13)
    users.add_user("oa-sync", PASSWORD, {"viewer"}, None)
    job, other = "198.51.100.10", "198.51.100.20"
    for _ in range(10):  # a job with a stale password
        assert _outcome(auth, _text_credentials("oa-sync", "stale"), job) == "refused"
    locked = _message(auth, _text_credentials("oa-sync"), job)  # from there even the right one is refused …
    assert ("too many failed authentications for user 'oa-sync': locked until 2026-12-01 08:15:00 UTC for "
            "attempts from source address 198.51.100.10; wait, or ask an administrator to run: "
            "archive-oa users unlock oa-sync") == locked
    assert _outcome(auth, _text_credentials("oa-sync"), other) == "ok"  # … from elsewhere it gets in
    with store.transaction() as conn:
        assert {r.targets for r in audit.find_records(conn, operation="AuthLockout")} == {
            ("user:oa-sync", "source:198.51.100.10"), ("source:198.51.100.10",)}
    assert users.list_pairs() == [Throttled("oa-sync", 0, clock() + dt.timedelta(seconds=900), job)]

    # Guessing spread over addresses (the right password above cleared the name's count): the
    # name is locked everywhere at user_lockout_after (13 here), each address below its own limit.
    for n in range(13):
        assert _outcome(auth, _text_credentials("oa-sync", "guess"), f"203.0.113.{n}") == "refused"
    everywhere = _message(auth, _text_credentials("oa-sync"), other)
    assert everywhere.startswith("too many failed authentications for user 'oa-sync': locked until")
    assert "from source address" not in everywhere

    # users unlock --address: the address and the names locked from it; the name-wide lock stays.
    lifted = users.unlock("source", job)
    assert [(lock.subject_kind, lock.subject) for lock in lifted] == [
        ("source", job), ("pair", user_repo.pair_subject("oa-sync", job))]
    assert _outcome(auth, _text_credentials("oa-sync"), job) == "locked"
    # users unlock NAME: everywhere, and from every address.
    assert [lock.subject_kind for lock in users.unlock("user", "oa-sync")] == ["user"]
    assert _outcome(auth, _text_credentials("oa-sync"), job) == "ok"


@pytest.mark.slow
def test_unlocking_a_name_lifts_its_locks_from_every_address_and_no_other_names(store, db_settings):
    waits = []
    users, auth, _ = _stopped_authenticator(store, db_settings, waits, lockout_after=2)
    for name in ("alice", "alice b", "b"):  # names that hold each other after a space
        users.add_user(name, PASSWORD, {"viewer"}, None)
        for address in ("198.51.100.1", "2001:db8::1"):
            for _ in range(2):
                _outcome(auth, _text_credentials(name, "wrong"), address)
    lifted = users.unlock("user", "b")
    assert sorted(user_repo.split_pair(lock.subject) for lock in lifted) == [
        ("b", "198.51.100.1"), ("b", "2001:db8::1")]
    assert _outcome(auth, _text_credentials("b"), "2001:db8::1") == "ok"
    assert _outcome(auth, _text_credentials("alice b"), "2001:db8::1") == "locked"
    users.set_disabled("alice b", False)  # users enable lifts them too
    assert _outcome(auth, _text_credentials("alice b"), "198.51.100.1") == "ok"
    assert _outcome(auth, _text_credentials("alice"), "198.51.100.1") == "locked"


def _message(auth, credentials, address) -> str:
    with pytest.raises(AuthenticationFailed) as refused:
        auth.authenticate(credentials, Origin(address, secure=True))
    return refused.value.message
