"""Password hashes (scrypt) and the UsernameToken PasswordDigest.

Passwords are kept as scrypt hashes with a per-user salt, in the text form
``scrypt$n$r$p$salt_b64$hash_b64`` so that the cost can be raised later without a
migration (each hash names its own parameters).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, maxmem=_SCRYPT_MAXMEM
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, hash_b64 = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(hash_b64)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt_b64),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


#: Checked against when the user does not exist, so that the answer takes as long
#: as for a wrong password and does not reveal which user names exist.
DUMMY_HASH = hash_password("not a password", salt=b"0" * 16)


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """Base64(SHA-1(nonce + created + password)): OASIS UsernameToken Profile 1.1 §3.1,
    with the nonce as its decoded bytes (WS-I BSP R4212) and ``created`` exactly as sent."""
    sha1 = hashlib.sha1(nonce + created.encode("utf-8") + password.encode("utf-8"))  # noqa: S324 - the profile's
    return _b64(sha1.digest())


def digest_matches(sent: str, nonce: bytes, created: str, password: str) -> bool:
    """Constant-time comparison of the digest a client sent with the one ``password`` gives."""
    expected = password_digest(nonce, created, password)
    return hmac.compare_digest(sent.strip().encode("ascii", "replace"), expected.encode("ascii"))
