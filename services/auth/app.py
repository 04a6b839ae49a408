"""auth: users, passwords and user access tokens, in its own database.

Internal: every route needs a service token (the gateway and orders call it).

- ``POST /users``        register ``{"username", "password"}`` -> 201 ``{"id", "username"}`` (409 if taken)
- ``POST /login``        ``{"username", "password"}`` -> ``{"access_token", "token_type", "expires_in"}`` or 401
- ``GET /users/{id}``    ``{"id", "username"}`` or 404
- ``POST /introspect``   ``{"token"}`` -> ``{"active": true, "sub", "username", "exp"}`` or ``{"active": false}``
  (RFC 7662 style; the token travels in the body, never in a URL or a log line)

Passwords are hashed with scrypt (stdlib) off the event loop; user tokens are short-lived
HS256 JWTs signed with ``USER_JWT_SECRET``, a key separate from the service-token secret.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import jwt
from fastapi import Depends, FastAPI, HTTPException, Path, Request
from pydantic import BaseModel, Field
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from otel_dist import ConfigError, DbSession, EncodableStr, Settings, create_app, get_logger
from services._ttl import TTLCache

log = get_logger("services.auth")
metadata = MetaData()
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), unique=True, nullable=False),
    Column("password_hash", String(200), nullable=False),
)

# --- passwords: scrypt, n=2**14, r=8, p=1 (16 MiB, tens of ms), 16-byte salt ---
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:
        return False
    return scheme == "scrypt" and hmac.compare_digest(actual, expected)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))  # unknown users cost the same time as wrong passwords


# --- user access tokens ---
class UserTokens:
    audience = "users"

    def __init__(self, secret: str, *, issuer: str, lifetime: int) -> None:
        self._secret, self.issuer, self.lifetime = secret, issuer, lifetime
        # Verified claims by token digest until the token's exp: a signed token's claims cannot change, so
        # introspecting it again need not run PyJWT again (the service tokens' verifier does the same).
        self._verified: TTLCache[bytes, dict[str, Any]] = TTLCache(10_000)

    def issue(self, user_id: int, username: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(user_id),
            "name": username,
            "iat": now,
            "exp": now + self.lifetime,
            "jti": secrets.token_urlsafe(12),
        }
        return jwt.encode(claims, self._secret, algorithm="HS256", headers={"typ": "at+jwt"})

    def verify(self, token: str) -> dict[str, Any] | None:
        key = hashlib.blake2b(token.encode(), digest_size=32).digest()
        claims = self._verified.get(key)
        if claims is not None:
            return claims
        claims = self._decode(token)
        if claims is not None:
            self._verified.put(key, claims, float(claims["exp"]) - time.time())
        return claims

    def _decode(self, token: str) -> dict[str, Any] | None:
        try:
            return jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.InvalidTokenError:
            return None


def user_tokens(settings: Settings) -> UserTokens:
    secret = settings.user_jwt_secret
    if secret is None:
        if settings.production:
            raise ConfigError("USER_JWT_SECRET: required when ENVIRONMENT=production; accepted: >= 32 bytes")
        log.warning("USER_JWT_SECRET is not set: user tokens are signed with a random key and die with this process")
        secret = secrets.token_urlsafe(32)
    return UserTokens(secret, issuer=settings.service_name, lifetime=settings.user_jwt_lifetime)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.user_tokens = user_tokens(app.state.settings)
    yield


async def tokens(request: Request) -> UserTokens:  # async: a def dependency runs in the thread pool
    issuer: UserTokens = request.app.state.user_tokens
    return issuer


Tokens = Annotated[UserTokens, Depends(tokens)]
app = create_app("auth", metadata=metadata, lifespan=lifespan)


# --- API ---
class Credentials(BaseModel):
    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    password: EncodableStr = Field(min_length=8, max_length=256)


class User(BaseModel):
    id: int
    username: str


class AccessToken(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class TokenQuery(BaseModel):
    token: EncodableStr = Field(max_length=4096)


@app.post("/users", status_code=201, responses={409: {"description": "Username already taken"}})
async def register(body: Credentials, session: DbSession) -> User:
    password_hash = await asyncio.to_thread(hash_password, body.password)
    try:
        statement = insert(users).values(username=body.username, password_hash=password_hash).returning(users.c.id)
        user_id = (await session.execute(statement)).scalar_one()
        await session.commit()
    except IntegrityError:
        raise HTTPException(409, "username already taken") from None
    log.info("user registered", user_id=user_id)
    return User(id=user_id, username=body.username)


@app.post("/login", responses={401: {"description": "Invalid username or password (no hint which)"}})
async def login(body: Credentials, session: DbSession, issuer: Tokens) -> AccessToken:
    row = (await session.execute(select(users).where(users.c.username == body.username))).first()
    stored = row.password_hash if row is not None else _DUMMY_HASH
    valid = await asyncio.to_thread(verify_password, body.password, stored)
    if row is None or not valid:
        log.info("login refused", reason="unknown user" if row is None else "wrong password")
        raise HTTPException(401, "invalid username or password", headers={"WWW-Authenticate": "Bearer"})
    log.info("login", user_id=row.id)
    return AccessToken(access_token=issuer.issue(row.id, row.username), expires_in=issuer.lifetime)


# Built once: the read path's statement (SQLAlchemy caches its compiled form; this also skips rebuilding it).
USER_BY_ID = select(users.c.id, users.c.username).where(users.c.id == bindparam("user_id"))


@app.get("/users/{user_id}", responses={404: {"description": "No such user"}})
async def get_user(user_id: Annotated[int, Path(gt=0, le=2**31 - 1)], session: DbSession) -> User:
    row = (await session.execute(USER_BY_ID, {"user_id": user_id})).first()
    if row is None:
        raise HTTPException(404, "no such user")
    return User(id=row.id, username=row.username)


@app.post("/introspect")
async def introspect(body: TokenQuery, issuer: Tokens) -> dict[str, Any]:
    claims = issuer.verify(body.token)
    if claims is None:
        return {"active": False}
    return {"active": True, "sub": claims["sub"], "username": claims.get("name"), "exp": claims["exp"]}
