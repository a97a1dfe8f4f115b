"""A short memory of passwords that matched: scrypt once per (user, password), not per request.

HTTP Basic and PasswordText send the password with every request, and checking it
against its scrypt hash costs ~50 ms of CPU and 16 MB, on purpose.  This cache
remembers, for ``ttl`` seconds, the fact "this password matched this stored hash".
Its key is an HMAC of user name and password under a key drawn at random for the
process (nothing here can be turned back into a password without that key, and the
key never leaves memory); its value is the stored hash the password matched.

A remembered fact never goes stale by itself: a hash names its own salt, so a password
matches a given hash string forever.  The caller compares the remembered hash with the
one in the user row it has just read, in this or any other instance: a new password
(a new salt, a new hash) misses the cache at once.  Roles, scope and the disabled
flag are not remembered at all; they come from that fresh row on every request.
Only successes are remembered: a wrong password always costs the full scrypt and
always counts as a failure.

The price: while an entry lives, someone who could read this process's memory could
test guesses at that password by HMAC instead of scrypt.  The TTL and the size bound
keep that window small; ``[security] credential_cache_seconds = 0`` turns it off.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from typing import Callable

DEFAULT_MAX_ENTRIES = 4096


class VerifiedCredentials:
    """Thread-safe, bounded, time-limited memory of (user, password) → matched hash."""

    def __init__(
        self,
        ttl_seconds: float,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = max(0.0, float(ttl_seconds))
        self.max_entries = max(1, int(max_entries))
        self._clock = clock
        self._key = os.urandom(32)
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[str, float]] = OrderedDict()  # oldest first

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def matches(self, username: str, password: str, password_hash: str) -> bool:
        """True when ``password`` was verified against exactly ``password_hash`` less than
        ``ttl`` seconds ago; a stale or superseded entry is dropped."""
        if not self.enabled:
            return False
        key = self._fingerprint(username, password)
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False
            verified_hash, expires_at = entry
            if now >= expires_at or not hmac.compare_digest(verified_hash, password_hash):
                del self._entries[key]
                return False
        return True

    def remember(self, username: str, password: str, password_hash: str) -> None:
        """``password`` has just been verified against ``password_hash`` (by scrypt)."""
        if not self.enabled:
            return
        key = self._fingerprint(username, password)
        now = self._clock()
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (password_hash, now + self.ttl)
            # Entries are in insertion order, so expired ones are at the front; past the bound
            # the oldest go too, whatever their age.
            while self._entries:
                _, (_, expires_at) = next(iter(self._entries.items()))
                if expires_at > now and len(self._entries) <= self.max_entries:
                    break
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _fingerprint(self, username: str, password: str) -> bytes:
        name = username.encode("utf-8", "surrogatepass")
        # The name's length first, so that ("ab", "c") and ("a", "bc") never share a key.
        message = len(name).to_bytes(4, "big") + name + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()
