"""Security primitives of the gateway (PRODUCT.md §7).

``passwords`` (scrypt hashes, the UsernameToken PasswordDigest), ``secrets`` (Fernet
encryption of the secrets PasswordDigest needs, key from settings or a key file),
``tokens`` (UsernameToken Nonce and Created: decoding and freshness), ``transport``
(who the client is behind trusted proxies, and whether a clear-text password may
travel) and ``throttle`` (slow-down and lock-out after repeated failures, shared by
every instance through the database).
"""
