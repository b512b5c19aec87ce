"""Gateway keys: who a request is, from the key it carries.

A key is ``lsk_`` + 43 characters of ``secrets.token_urlsafe(32)`` (256 random bits). It is
shown once, when created; the store keeps its SHA-256 (a plain hash suffices for a secret
this long: there is nothing to guess or look up) and its first characters, to recognize
it in ``keys list``. A key names the org, project and user its calls are charged to; it
may expire, and can be revoked. A gateway remembers a key it found live for at most
``key_cache_seconds`` (:class:`KeyCache`; 0 turns it off): a revoked key is refused by
every replica within that bound, an expired one at once, an unknown one is always looked up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from ..attribution import validate_name
from ..errors import ValidationError
from ..store.engine import Store
from ..store.fastsql import db_time, py_time
from ..timeutil import utcnow

__all__ = [
    "KEY_PREFIX",
    "Identity",
    "KeyCache",
    "KeyInfo",
    "authenticate",
    "create_key",
    "hash_key",
    "list_keys",
    "parse_expiry",
    "revoke_key",
]

KEY_PREFIX = "lsk_"
_SHOWN = 12  # characters of a key kept for recognition: "lsk_" and 8 of its random part
_SPAN = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")


@dataclass(frozen=True, slots=True)
class Identity:
    """Whom a gateway key's calls are charged to."""

    key_id: int
    org: str
    project: str
    user: str
    expires_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as ``keys list`` shows it (never its secret)."""

    id: int
    prefix: str
    org: str
    project: str
    user: str
    note: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= utcnow():
            return "expired"
        return "active"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def parse_expiry(span: str | None) -> dt.timedelta | None:
    """``"90d"``, ``"12h"``, ``"30m"`` → a timedelta; ``None`` or ``"never"`` → ``None``."""
    if span is None or span.strip().lower() == "never":
        return None
    m = _SPAN.match(span)
    if m is None or int(m.group(1)) <= 0:
        raise ValidationError(f"--expires takes a span such as 90d, 12h or 30m, got {span!r}")
    n, unit = int(m.group(1)), m.group(2)
    try:
        delta = dt.timedelta(**{{"d": "days", "h": "hours", "m": "minutes"}[unit]: n})
    except OverflowError:
        delta = dt.timedelta.max
    if delta > dt.datetime.max - utcnow().replace(tzinfo=None):
        raise ValidationError(
            f"--expires {span.strip()} ends past the year 9999; use 'never' for a key that"
            " does not expire"
        )
    return delta


def create_key(
    store: Store,
    *,
    org: str,
    project: str,
    user: str,
    expires: dt.timedelta | None = None,
    note: str | None = None,
) -> tuple[KeyInfo, str]:
    """Make a key for (org, project, user); returns its info and the key (shown once)."""
    org, project, user = (
        validate_name("org", org), validate_name("project", project), validate_name("user", user)
    )  # fmt: skip
    if note is not None and len(note) > 200:
        raise ValidationError("a key's note is at most 200 characters")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    now = utcnow().replace(microsecond=0)
    try:
        expires_at = now + expires if expires is not None else None
    except OverflowError:
        raise ValidationError("a key's expiry must end before the year 9999") from None
    values = {
        "h": hash_key(key), "p": key[:_SHOWN], "o": org, "pr": project, "u": user, "n": note,
        "c": now, "e": expires_at,
    }  # fmt: skip
    with store.begin(write=True) as conn:
        values["c"], values["e"] = db_time(conn, now), db_time(conn, expires_at)
        conn.execute(
            text(
                "INSERT INTO llmspend_gateway_keys (key_hash, prefix, org_name, project_name,"
                " user_name, note, created_at, expires_at) VALUES (:h, :p, :o, :pr, :u, :n,"
                " :c, :e)"
            ),
            values,
        )
        key_id = conn.execute(
            text("SELECT id FROM llmspend_gateway_keys WHERE key_hash = :h"), {"h": values["h"]}
        ).scalar_one()
    info = KeyInfo(int(key_id), key[:_SHOWN], org, project, user, note, now, expires_at, None)
    return info, key


_SELECT = (
    "SELECT id, prefix, org_name, project_name, user_name, note, created_at, expires_at,"
    " revoked_at FROM llmspend_gateway_keys"
)


def _info(row: Any) -> KeyInfo:
    created, expires, revoked = (py_time(v) for v in row[6:9])
    assert created is not None
    _, prefix, org, project, user, note = row[:6]
    return KeyInfo(int(row[0]), prefix, org, project, user, note, created, expires, revoked)


def list_keys(store: Store) -> list[KeyInfo]:
    """Every key, oldest first (no secrets: the store has none)."""
    with store.begin() as conn:
        rows = conn.execute(text(_SELECT + " ORDER BY id"))
        return [_info(r) for r in rows]


def revoke_key(store: Store, key_id: int) -> KeyInfo:
    """Revoke key ``key_id`` in the store (every replica refuses it within its
    ``key_cache_seconds``); revoking twice keeps the first time. Raises ``ValidationError``
    for an unknown id."""
    if not 0 < key_id < 2**63:  # beyond any id the store holds (a BIGINT)
        raise ValidationError(f"no gateway key with id {key_id}")
    with store.begin(write=True) as conn:
        conn.execute(
            text(
                "UPDATE llmspend_gateway_keys SET revoked_at = :t"
                " WHERE id = :i AND revoked_at IS NULL"
            ),
            {"t": db_time(conn, utcnow().replace(microsecond=0)), "i": key_id},
        )
        row = conn.execute(text(_SELECT + " WHERE id = :i"), {"i": key_id}).first()
    if row is None:
        raise ValidationError(f"no gateway key with id {key_id}")
    return _info(row)


def authenticate(store: Store, key: str | None) -> Identity | None:
    """The identity of a live key (known, not revoked, not expired), else ``None``."""
    if not key or not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    with store.begin() as conn:
        row = conn.execute(
            text(
                "SELECT id, org_name, project_name, user_name, expires_at, revoked_at"
                " FROM llmspend_gateway_keys WHERE key_hash = :h"
            ),
            {"h": hash_key(key)},
        ).first()
    if row is None or row[5] is not None:
        return None
    expires = py_time(row[4])
    if expires is not None and expires <= utcnow():
        return None
    return Identity(int(row[0]), row[1], row[2], row[3], expires)


class KeyCache:
    """Live keys found in the store, remembered for ``seconds`` (by hash, never the key)."""

    MAX = 10_000

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._found: dict[str, tuple[float, Identity]] = {}

    def get(self, key: str) -> Identity | None:
        """The identity of a key found live less than ``seconds`` ago and not expired since."""
        if self.seconds <= 0:
            return None
        hit = self._found.get(hash_key(key))
        if hit is None or time.monotonic() - hit[0] >= self.seconds:
            return None
        identity = hit[1]
        if identity.expires_at is not None and identity.expires_at <= utcnow():
            return None
        return identity

    def put(self, key: str, identity: Identity) -> None:
        if self.seconds <= 0:
            return
        if len(self._found) >= self.MAX:
            self._found.clear()
        self._found[hash_key(key)] = (time.monotonic(), identity)
