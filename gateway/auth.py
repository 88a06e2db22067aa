"""API tokens, roles and user passwords.

Tokens are 32 random bytes (256 bits) from `secrets`, too many to guess or
to brute-force from their hash. A fast unsalted SHA-256 is therefore enough
to keep them out of the database. Passwords are low-entropy, so they
get a salted, memory-hard scrypt hash instead.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from gateway.store import Database
from gateway.timeutil import now_ms

logger = logging.getLogger(__name__)

ROLES = ("viewer", "dispatcher", "admin")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
TOKEN_PREFIX = "sgw_"


class AuthError(ValueError):
    """An invalid role, user or password."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind a valid token."""

    token_id: int
    name: str
    role: str

    def allows(self, role: str) -> bool:
        """Return True when this principal's role is `role` or above it."""
        return ROLES.index(self.role) >= ROLES.index(role)


# The API accepts token names up to this length; the CLI keeps to it too.
MAX_TOKEN_NAME = 128


def check_role(role: str) -> str:
    """Return `role` if it is known; raise AuthError listing the roles otherwise."""
    if role not in ROLES:
        raise AuthError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    return role


def hash_token(token: str) -> str:
    """Return the hex SHA-256 of a token, the only form the database keeps."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(db: Database, role: str, name: str, ttl_s: float | None = None) -> str:
    """Create a token and return it; it cannot be read back later."""
    check_role(role)
    if not 1 <= len(name) <= MAX_TOKEN_NAME:
        raise AuthError(
            f"token name of {len(name)} characters is invalid; give 1 to "
            f"{MAX_TOKEN_NAME} characters"
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    created = now_ms()
    expires = created + int(ttl_s * 1000) if ttl_s is not None else None
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO tokens (name, role, token_sha256, created_ms, expires_ms) "
            "VALUES (?, ?, ?, ?, ?)",
            (name, role, hash_token(token), created, expires),
        )
    logger.info("created %s token %r", role, name)
    return token


def authenticate(db: Database, token: str) -> Principal | None:
    """Return the principal of a valid, unexpired, unrevoked token, or None."""
    rows = db.query(
        (
            "SELECT id, name, role, expires_ms, revoked_ms FROM tokens WHERE "
            "token_sha256 = ?"
        ),
        (hash_token(token),),
    )
    if not rows:
        return None
    token_id, name, role, expires_ms, revoked_ms = rows[0]
    if revoked_ms is not None or (expires_ms is not None and expires_ms <= now_ms()):
        return None
    return Principal(token_id=int(token_id), name=str(name), role=str(role))


def list_tokens(db: Database) -> list[dict[str, Any]]:
    """Return every token's metadata (never the token)."""
    rows = db.query(
        "SELECT id, name, role, created_ms, expires_ms, revoked_ms FROM tokens "
        "ORDER BY id"
    )
    keys = ("id", "name", "role", "created_ms", "expires_ms", "revoked_ms")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def revoke_token(db: Database, token_id: int) -> bool:
    """Revoke a token by id; return False when no active token has that id."""
    with db.transaction() as tx:
        rows = tx.execute(
            "UPDATE tokens SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL "
            "RETURNING id",
            (now_ms(), token_id),
        )
    return bool(rows)


def hash_password(password: str) -> str:
    """Return a salted scrypt hash in the form `scrypt$n$r$p$salt$hash`."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Return True when `password` matches a hash from `hash_password`."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(
        password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p)
    )
    return hmac.compare_digest(candidate.hex(), digest)


def set_user(db: Database, username: str, password: str, role: str) -> None:
    """Create a user or replace its password and role."""
    check_role(role)
    if len(password) < 8:
        raise AuthError(
            f"password for {username!r} is {len(password)} characters; use 8 or more"
        )
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO users (username, role, password_hash, created_ms) VALUES "
            "(?, ?, ?, ?) "
            "ON CONFLICT (username) DO UPDATE SET role = excluded.role, "
            "password_hash = excluded.password_hash",
            (username, role, hash_password(password), now_ms()),
        )


def login(
    db: Database, username: str, password: str, ttl_s: float
) -> tuple[str, str] | None:
    """Check a user's password and return a new session token and its role, or None."""
    rows = db.query(
        "SELECT role, password_hash FROM users WHERE username = ?", (username,)
    )
    if not rows:
        # Hash anyway so an unknown user takes as long as a wrong password.
        verify_password(password, hash_password("not-a-user"))
        return None
    role, stored = rows[0]
    if not verify_password(password, str(stored)):
        return None
    return create_token(db, str(role), f"login:{username}", ttl_s), str(role)
