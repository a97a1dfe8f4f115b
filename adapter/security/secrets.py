"""Secrets the gateway must be able to read back (PasswordDigest needs the password
itself), encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``).

The keys come from ``[security] secret_key`` / ``ARCHIVE_OA_SECURITY_SECRET_KEY``: one
Fernet key, or several separated by commas while rotating — the first encrypts, every
one decrypts.  With no key configured, the key lives in ``<data dir>/secret.key``
(mode 0600), generated on first use; that file may likewise hold several keys, one a
line.  Each stored secret records the id of the key that encrypted it (a fingerprint,
not the key), so a missing key is named rather than guessed at.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Iterable, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ..errors import ConfigurationError
from ..private_files import write_new_private_file, write_private_file
from ..settings import Settings, setting_names

KEY_FILE_NAME = "secret.key"
SETTING = setting_names("security", "secret_key")
#: What to do when a stored secret's key is missing (ends the messages that say so).
PUT_BACK = (f"put that key back (the secret.key of the backup the data came from into the data folder, or the "
             f"key into {SETTING} after the current one, then archive-oa users rotate-key), or set the "
             "passwords again (archive-oa users passwd)")


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def key_id(key: str | bytes) -> str:
    """A short public fingerprint of a key: tells keys apart without revealing them."""
    raw = key.encode("ascii") if isinstance(key, str) else key
    return hashlib.sha256(b"archive-oa key id:" + raw).hexdigest()[:16]


def missing_key_ids(needed: Iterable[str], available: Iterable[str]) -> list[str]:
    """The key ids stored secrets need (``needed``: ids, or id -> count) that no key at hand has, sorted."""
    return sorted(set(needed) - set(available))


class SecretBox:
    """Encrypts with the first key, decrypts with any of them."""

    def __init__(self, keys: Sequence[str], *, source: str) -> None:
        if not keys:
            raise ConfigurationError(f"no encryption key in {source}: generate one with archive-oa users new-key")
        fernets = []
        for position, key in enumerate(keys, 1):
            try:
                fernets.append(Fernet(key.encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                raise ConfigurationError(
                    f"key {position} in {source} is not a Fernet key (44 characters of url-safe base64, "
                    "32 bytes): generate one with archive-oa users new-key"
                ) from None
        self._fernet = MultiFernet(fernets)
        self.key_ids = tuple(key_id(key) for key in keys)
        self.source = source

    @property
    def primary_key_id(self) -> str:
        return self.key_ids[0]

    def encrypt(self, plaintext: str) -> tuple[str, str]:
        """(token, key id of the key that encrypted it)."""
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii"), self.primary_key_id

    def decrypt(self, token: str, stored_key_id: str | None = None) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            if stored_key_id and stored_key_id not in self.key_ids:
                raise ConfigurationError(
                    f"a stored secret was encrypted with key id {stored_key_id}, which is not among the keys "
                    f"of {self.source} (ids {', '.join(self.key_ids)}): {PUT_BACK}"
                ) from None
            raise ConfigurationError(
                f"a stored secret does not decrypt with the keys of {self.source}: it was altered, or "
                "encrypted under another key"
            ) from None


class KeyRing:
    """Where the keys of an installation come from: settings, or the key file.

    ``box()`` loads once (creating the key file when nothing is configured), so
    commands that never touch a secret never create a key.
    """

    def __init__(self, settings: Settings) -> None:
        self.configured = [k.strip() for k in settings.security.secret_key.split(",") if k.strip()]
        self.key_file = Path(settings.data_dir).expanduser().absolute() / KEY_FILE_NAME
        self._lock = threading.Lock()
        self._box: SecretBox | None = None

    @property
    def from_file(self) -> bool:
        return not self.configured

    def box(self) -> SecretBox:
        with self._lock:
            if self._box is None:
                if self.configured:
                    self._box = SecretBox(self.configured, source=SETTING)
                else:
                    self._box = SecretBox(_read_or_create(self.key_file), source=str(self.key_file))
            return self._box

    def decrypt(self, token: str, stored_key_id: str) -> str:
        """Decrypt a stored secret; a key id unknown to this process re-reads the key file
        once (``users rotate-key`` in another process replaced it while we kept running).
        A missing key file is an error here, not a new key: a new key decrypts nothing."""
        box = self._existing_box(stored_key_id)
        if stored_key_id not in box.key_ids and self.from_file:
            with self._lock:
                self._box = None
            box = self._existing_box(stored_key_id)
        return box.decrypt(token, stored_key_id)

    def key_ids(self) -> tuple[str, ...]:
        """Ids of the keys at hand (configured, or in the key file as it is now); never creates a key."""
        if self.configured:
            return SecretBox(self.configured, source=SETTING).key_ids
        if not self.key_file.exists():
            return ()
        return tuple(key_id(key) for key in self.file_keys())

    def file_keys(self) -> list[str]:
        """The keys in the key file now ([] when keys are configured or there is no file yet)."""
        return read_key_file(self.key_file) if self.from_file and self.key_file.exists() else []

    @property
    def where(self) -> str:
        """Where this installation's keys are, for messages."""
        return SETTING if self.configured else str(self.key_file)

    def _existing_box(self, stored_key_id: str) -> SecretBox:
        if self.from_file and self._box is None and not self.key_file.exists():
            raise ConfigurationError(
                f"a stored secret was encrypted with key id {stored_key_id}, but {self.key_file} does not exist "
                f"and {SETTING} is not set: {PUT_BACK}"
            )
        return self.box()

    def replace_file_keys(self, keys: Sequence[str]) -> SecretBox:
        """Write ``keys`` (first encrypts) to the key file and use them from now on."""
        if not self.from_file:
            raise ConfigurationError(f"the keys come from {SETTING}: change them there, not in {self.key_file}")
        box = SecretBox(keys, source=str(self.key_file))
        write_key_file(self.key_file, keys)
        with self._lock:
            self._box = box
        return box


def write_key_file(path: Path, keys: Sequence[str]) -> None:
    """Replace the key file atomically, readable by its owner only."""
    write_private_file(path, "".join(f"{key}\n" for key in keys).encode("ascii"), temp_prefix=f".{path.name}.")


def read_key_file(path: Path) -> list[str]:
    """The keys in a key file, first (the one that encrypts) first."""
    keys = [line.strip() for line in path.read_text(encoding="ascii").splitlines() if line.strip()]
    if not keys:
        raise ConfigurationError(f"{path} holds no key: delete it to generate one, or restore it from backup")
    return keys


def _read_or_create(path: Path) -> list[str]:
    if not path.exists():
        try:  # a concurrent first use keeps one key
            write_new_private_file(path, (generate_key() + "\n").encode("ascii"), temp_prefix=f".{path.name}.")
        except FileExistsError:
            pass
    return read_key_file(path)
