"""The client side: minting service tokens and adding them to httpx requests.

A :class:`TokenMinter` keeps one token per audience and mints a new one when
less than a quarter of its lifetime (at most 5 minutes) is left, so callers
never send a token that expires in flight.  :class:`ServiceTokenAuth` is an
``httpx.Auth``: it sets ``Authorization: Bearer <token>`` on every attempt and,
when the callee says the token itself is bad (401 with ``WWW-Authenticate: Bearer
error="invalid_token"``, RFC 6750), mints a fresh token and resends once (two
requests at most; the request body is buffered so it can be replayed).  Any other
401 (a wrong password relayed by the callee, say) is returned as it is: resending
it would only double the callee's work.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import httpx
import jwt

from .._settings import Settings
from ._config import auth_config
from ._keys import SigningKey, hmac_key, load_private_key

__all__ = ["ServiceTokenAuth", "TokenMinter", "service_auth"]

MAX_AUDIENCES = 1024


class TokenMinter:
    """Mints and caches tokens for one issuer, per audience.

    `key` is a :class:`SigningKey` or an HMAC secret (str or bytes, at least 32 bytes, signed HS256).
    """

    def __init__(
        self,
        issuer: str,
        key: SigningKey | str | bytes,
        *,
        lifetime: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not issuer:
            raise ValueError("issuer must be a service name")
        self.issuer = issuer
        self.key = hmac_key(key) if isinstance(key, str | bytes) else key
        self.lifetime = int(lifetime)
        self._margin = min(300.0, self.lifetime / 4)
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def token(self, audience: str, *, fresh: bool = False) -> str:
        """A token for `audience`: the cached one while it has time left, else a new one."""
        now = self._clock()
        cached = self._tokens.get(audience)
        if cached is not None and not fresh and now < cached[1]:
            return cached[0]
        with self._lock:
            cached = self._tokens.get(audience)
            if cached is not None and not fresh and now < cached[1]:
                return cached[0]  # another thread minted meanwhile
            token = self.mint(audience, now)
            if len(self._tokens) >= MAX_AUDIENCES and audience not in self._tokens:
                self._tokens.clear()
            self._tokens[audience] = (token, now + self.lifetime - self._margin)
            return token

    def mint(self, audience: str, now: float | None = None) -> str:
        """A new token for `audience` (uncached)."""
        issued = int(self._clock() if now is None else now)
        claims = {
            "iss": self.issuer,
            "sub": self.issuer,
            "aud": audience,
            "iat": issued,
            "exp": issued + self.lifetime,
            "jti": secrets.token_urlsafe(16),
        }
        return jwt.encode(claims, self.key.key, algorithm=self.key.alg, headers={"kid": self.key.kid})

    def forget(self, audience: str | None = None) -> None:
        if audience is None:
            self._tokens.clear()
        else:
            self._tokens.pop(audience, None)


class ServiceTokenAuth(httpx.Auth):
    """httpx auth for calls to `audience`: a service token on every attempt, one re-mint on 401.

    ``ServiceTokenAuth("orders", "billing", secret=...)`` or, sharing one
    minter (and its cache) between clients, ``ServiceTokenAuth("orders",
    "billing", minter=minter)``; :func:`service_auth` builds it from settings.
    """

    requires_request_body = True  # a resent request must be replayable

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        secret: str | bytes | None = None,
        private_key: str | bytes | None = None,
        algorithm: str | None = None,
        lifetime: int = 3600,
        minter: TokenMinter | None = None,
        per_request: bool = False,
    ) -> None:
        if not audience:
            raise ValueError("audience must be the called service's name")
        if minter is None:
            if (secret is None) == (private_key is None):
                raise ValueError("pass exactly one of secret, private_key or minter")
            if secret is not None:
                key = hmac_key(secret, algorithm or "HS256")
            else:
                assert private_key is not None
                key = load_private_key(private_key, algorithm or "EdDSA", setting="private_key")
            minter = TokenMinter(issuer, key, lifetime=lifetime)
        elif minter.issuer != issuer:
            raise ValueError(f"minter issues tokens for {minter.issuer!r}, not {issuer!r}")
        self.issuer = issuer
        self.audience = audience
        self.minter = minter
        self.per_request = per_request  # a callee with a replay cache accepts each token once

    def __repr__(self) -> str:
        return f"ServiceTokenAuth(issuer={self.issuer!r}, audience={self.audience!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.minter.mint(self.audience) if self.per_request else self.minter.token(self.audience)
        request.headers["Authorization"] = "Bearer " + token
        response = yield request
        if response.status_code == 401 and _token_rejected(response):
            # The receiver may have rotated keys or restarted: one fresh token, one resend, never a loop.
            request.headers["Authorization"] = "Bearer " + self.minter.token(self.audience, fresh=True)
            yield request


def _token_rejected(response: httpx.Response) -> bool:
    """RFC 6750: the challenge names the token as the problem (invalid, expired, revoked)."""
    return any(
        value.lower().startswith("bearer") and 'error="invalid_token"' in value.replace(" ", "").lower()
        for value in response.headers.get_list("www-authenticate")
    )


_minters: dict[Any, TokenMinter] = {}


def service_auth(target: str, *, settings: Settings | None = None) -> ServiceTokenAuth | None:
    """The auth for calling service `target` with this service's settings; None when auth is off.

    Tokens are shared by every client of the process (one minter per settings).
    """
    if settings is None:
        from .._bootstrap import current
        from .._settings import load_settings

        tel = current()
        settings = tel.settings if tel is not None else load_settings()
    config = auth_config(settings)
    key = config.signing_key
    if key is None:
        return None
    cache_key = (settings.service_name, key.kid, key.alg, settings.jwt_lifetime)
    minter = _minters.get(cache_key)
    if minter is None:
        if len(_minters) > 64:
            _minters.clear()
        minter = _minters[cache_key] = TokenMinter(settings.service_name, key, lifetime=settings.jwt_lifetime)
    return ServiceTokenAuth(settings.service_name, target, minter=minter, per_request=settings.jwt_token_per_request)
