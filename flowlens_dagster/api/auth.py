"""Users, sessions, API tokens, rate limits and failed-login slowing.

- Users live in PostgreSQL (``flowlens.api_users``, roles ``viewer`` and ``admin``), passwords hashed
  with argon2id (argon2-cffi); ``flowlens users add|list|remove|token`` manages them.
- ``POST /api/v1/login`` returns a session token stored as ``session:<token>`` (TTL ``api.session_ttl_seconds``,
  24 h) in the session store: Redis database 3, or in process in minimal mode.
- API tokens for automation (``flowlens users token NAME``) start with ``flk_``; only their SHA-256 is
  stored (``flowlens.api_tokens``). Both kinds go in ``Authorization: Bearer <token>``.
- Rate limits: fixed 60-second windows counted in ``ratelimit:user:<id>`` and ``ratelimit:ip:<addr>``;
  over the limit, 429 with ``Retry-After`` (seconds until the window ends).
- Failed logins are counted (``loginfail:user:<name>``, ``loginfail:ip:<addr>``, and the metric
  ``flowlens_api_login_failures_total``); past ``api.login_failures_allowed`` each further attempt for
  that name or address waits twice as long as the one before (up to 8 s) before being answered.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
import time
from dataclasses import dataclass

import anyio
import orjson
import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from psycopg_pool import AsyncConnectionPool

from flowlens_dagster.api import metrics
from flowlens_dagster.api.errors import ApiError
from flowlens_dagster.api.store import CachePeek, Front, Store
from ingest.config import ApiConfig

ROLES = ("viewer", "admin")
TOKEN_PREFIX = "flk_"
HASHER = PasswordHasher()
TOKEN_CACHE_SECONDS = 30.0
MAX_LOGIN_DELAY = 8.0


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str

    def as_json(self) -> dict:
        return {"id": self.id, "username": self.username, "role": self.role}


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


# --- management (sync: the CLI) ------------------------------------------------------------------
def add_user(dsn: str, username: str, password: str, role: str) -> User:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if len(password) < 8:
        raise ValueError("password must have at least 8 characters")
    with psycopg.connect(dsn) as conn:
        try:
            row = conn.execute(
                "INSERT INTO flowlens.api_users (username, role, password_hash) VALUES (%s, %s, %s) RETURNING id",
                (username, role, HASHER.hash(password)),
            ).fetchone()
        except psycopg.errors.UniqueViolation:
            raise ValueError(f"user {username!r} exists already (flowlens users remove {username} first)") from None
        except psycopg.errors.CheckViolation:
            raise ValueError(f"username {username!r}: use 1-64 letters, digits and _ . @ -") from None
    return User(row[0], username, role)


def list_users(dsn: str) -> list[dict]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """SELECT u.id, u.username, u.role, u.created_at, count(t.id) AS tokens
               FROM flowlens.api_users u LEFT JOIN flowlens.api_tokens t ON t.user_id = u.id
               GROUP BY u.id ORDER BY u.username"""
        ).fetchall()
    return [dict(zip(("id", "username", "role", "created_at", "tokens"), r, strict=True)) for r in rows]


def remove_user(dsn: str, username: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("DELETE FROM flowlens.api_users WHERE username = %s", (username,)).rowcount > 0


def create_token(dsn: str, username: str, name: str) -> str:
    """A new API token for ``username`` (shown once; only its digest is stored)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            """INSERT INTO flowlens.api_tokens (user_id, name, token_sha256)
               SELECT id, %s, %s FROM flowlens.api_users WHERE username = %s RETURNING id""",
            (name, token_digest(token), username),
        ).fetchone()
    if row is None:
        raise ValueError(f"no user {username!r} (flowlens users list shows them)")
    return token


# --- serving (async) -----------------------------------------------------------------------------
class Auth:
    def __init__(self, cfg: ApiConfig, pool: AsyncConnectionPool, store: Store):
        self.cfg, self.pool, self.store = cfg, pool, store
        self._tokens: dict[bytes, tuple[float, User | None]] = {}

    async def login(self, username: str, password: str, address: str) -> dict:
        keys = [f"loginfail:user:{username}", f"loginfail:ip:{address}"]
        failures = [int(v or 0) for v in await self.store.mget(keys)]
        delay = login_delay(max(failures), self.cfg.login_failures_allowed)
        if delay:  # slowed: every attempt past the allowance waits, right or wrong
            await asyncio.sleep(delay)
        user, stored = await self._user(username)
        if not await anyio.to_thread.run_sync(_verify, stored or _dummy_hash(), password) or user is None:
            metrics.LOGIN_FAILURES.inc()
            await self.store.incr(keys, self.cfg.login_lockout_seconds)
            raise ApiError(401, "username or password: no such user or wrong password", "password")
        for key in keys:
            await self.store.delete(key)
        token = secrets.token_urlsafe(32)
        await self.store.set(f"session:{token}", orjson.dumps(user.as_json()), self.cfg.session_ttl_seconds)
        return {"token": token, "expires_in": self.cfg.session_ttl_seconds, "user": user.as_json()}

    async def logout(self, token: str) -> None:
        await self.store.delete(f"session:{token}")

    async def _user(self, username: str) -> tuple[User | None, str | None]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, username, role, password_hash FROM flowlens.api_users WHERE username = %s", (username,)
            )
            row = await cur.fetchone()
        return (User(row["id"], row["username"], row["role"]), row["password_hash"]) if row else (None, None)

    async def authenticate(self, token: str | None) -> User:
        """The user behind a session or API token; 401 naming ``token`` otherwise."""
        if not token:
            message = "token: missing; log in (POST /api/v1/login) and send Authorization: Bearer <token>"
            raise ApiError(401, message, "token", {"WWW-Authenticate": "Bearer"})
        user = await (self._api_token(token) if token.startswith(TOKEN_PREFIX) else self._session(token))
        if user is None:
            raise _unknown_token()
        return user

    async def _session(self, token: str) -> User | None:
        raw = await self.store.get(f"session:{token}")
        return User(**orjson.loads(raw)) if raw else None

    async def _api_token(self, token: str) -> User | None:
        digest = token_digest(token)
        cached = self._tokens.get(digest)
        if cached and time.monotonic() - cached[0] < TOKEN_CACHE_SECONDS:
            return cached[1]
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                """UPDATE flowlens.api_tokens t SET last_used_at = now() FROM flowlens.api_users u
                   WHERE t.token_sha256 = %s AND u.id = t.user_id RETURNING u.id, u.username, u.role""",
                (digest,),
            )
            row = await cur.fetchone()
        user = User(row["id"], row["username"], row["role"]) if row else None
        if len(self._tokens) > 10_000:
            self._tokens.clear()
        self._tokens[digest] = (time.monotonic(), user)
        return user

    async def authorize(self, token: str | None, address: str) -> User:
        """The token's user, counted against the address's and the user's rate limits (one Redis round
        trip for a session); 401 or 429 otherwise."""
        return (await self.authorize_and_peek(token, address, None))[0]

    async def authorize_and_peek(
        self, token: str | None, address: str, cache: CachePeek | None
    ) -> tuple[User, Front | None]:
        """As :meth:`authorize`, and for a session token also the cache entry ``cache`` read in the same
        round trip (None for an API token: the caller reads the cache itself)."""
        if not token or token.startswith(TOKEN_PREFIX):
            user = await self.authenticate(token)
            await self.limit(user, address)
            return user, None
        window = self.cfg.rate_limit_window_seconds
        front = await self.store.session_and_count(
            f"session:{token}", f"ratelimit:ip:{address}", "ratelimit:user:", window, cache
        )
        self._check(front.counts)
        if front.session is None:
            raise _unknown_token()
        return User(**orjson.loads(front.session)), front

    async def limit(self, user: User | None, address: str) -> None:
        """Count this request against the address's and the user's windows; 429 past either limit."""
        keys = [f"ratelimit:ip:{address}"] + ([f"ratelimit:user:{user.id}"] if user else [])
        self._check(await self.store.incr(keys, self.cfg.rate_limit_window_seconds))

    def _check(self, counts: list[tuple[int, int]]) -> None:
        """``counts``: the address's (count, seconds left), then the user's when known."""
        limits = [("address", self.cfg.rate_limit_per_address), ("user", self.cfg.rate_limit_per_user)]
        for (scope, allowed), (count, left) in zip(limits, counts, strict=False):
            if count > allowed:
                metrics.RATE_LIMITED.labels(scope).inc()
                window = self.cfg.rate_limit_window_seconds
                message = f"rate limit: more than {allowed} requests in {window} s for this {scope}; retry in {left} s"
                raise ApiError(429, message, None, {"Retry-After": str(left)})


def _unknown_token() -> ApiError:
    return ApiError(
        401, "token: unknown or expired; log in again (POST /api/v1/login)", "token", {"WWW-Authenticate": "Bearer"}
    )


def login_delay(failures: int, allowed: int) -> float:
    """Seconds to wait before answering a login after ``failures`` recent failures: none within the
    allowance, then 0.25 s doubling per further failure, at most ``MAX_LOGIN_DELAY``."""
    excess = failures - allowed
    return 0.0 if excess < 0 else min(0.25 * 2**excess, MAX_LOGIN_DELAY)


@functools.cache
def _dummy_hash() -> str:
    """Checked when the user does not exist, so that costs the time of a real check (made on first use:
    hashing takes most of a second, too long for every worker's start)."""
    return HASHER.hash("not a password")


def _verify(stored: str, password: str) -> bool:
    try:
        return HASHER.verify(stored, password)
    except (VerifyMismatchError, InvalidHashError):
        return False
