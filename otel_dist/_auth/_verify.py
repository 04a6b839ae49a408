"""Verification of service tokens: strict parsing, signature, claims, and a cache.

The token contract (README, "Service-to-service auth"):

- header ``alg`` in the allow-list, optional ``kid`` (a string of at most 128
  characters); ``crit`` is refused; ``jwk``/``jku``/``x5u``/``x5c`` are ignored;
- claims ``iss`` = ``sub`` = the caller's service name, ``aud`` = this
  service's name (one string), ``iat``, ``exp``, ``jti``; all required;
  ``nbf`` optional; ``exp - iat`` at most 24 h;
- sent as ``Authorization: Bearer <token>``, at most 8 KiB.

Why not ``jwt.decode``: PyJWT re-prepares the key on every call (for HMAC that
means PEM/DER/JSON sniffing of the secret) and folds many failures into one
exception type.  Here keys are prepared once (PyJWT's own ``Algorithm``
objects do the signature maths) and every rejection has a precise,
low-cardinality reason.  Verified tokens are cached by a BLAKE2b digest of the
token (the token itself is never kept) until their ``exp``.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import time
from base64 import urlsafe_b64decode
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ._jwks import TrustStore
from ._keys import ASYMMETRIC, MAX_KID_LENGTH, SYMMETRIC, VerificationKey, algorithm

__all__ = ["AuthFailure", "KeysNeeded", "ServiceIdentity", "TokenVerifier", "VerifiedTokenCache"]

MAX_TOKEN_BYTES = 8192
MAX_LIFETIME = 86400
MAX_NAME_LENGTH = 255
REQUIRED_CLAIMS = ("iss", "sub", "aud", "iat", "exp", "jti")
_B64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# Reasons (the value of otel_dist.auth.reason); result "failure" -> 401, "denied" -> 403.
MISSING = "missing"
WRONG_SCHEME = "wrong_scheme"
MALFORMED = "malformed"
TOO_LARGE = "too_large"
ALG_NOT_ALLOWED = "alg_not_allowed"
UNKNOWN_KID = "unknown_kid"
KEYS_UNAVAILABLE = "keys_unavailable"
BAD_SIGNATURE = "bad_signature"
MISSING_CLAIM = "missing_claim"
INVALID_CLAIM = "invalid_claim"
WRONG_ISSUER = "wrong_issuer"
WRONG_AUDIENCE = "wrong_audience"
EXPIRED = "expired"
NOT_YET_VALID = "not_yet_valid"
LIFETIME_TOO_LONG = "lifetime_too_long"
CALLER_NOT_ALLOWED = "caller_not_allowed"
INTERNAL_ERROR = "internal_error"
REASONS = (
    MISSING,
    WRONG_SCHEME,
    MALFORMED,
    TOO_LARGE,
    ALG_NOT_ALLOWED,
    UNKNOWN_KID,
    KEYS_UNAVAILABLE,
    BAD_SIGNATURE,
    MISSING_CLAIM,
    INVALID_CLAIM,
    WRONG_ISSUER,
    WRONG_AUDIENCE,
    EXPIRED,
    NOT_YET_VALID,
    LIFETIME_TOO_LONG,
    CALLER_NOT_ALLOWED,
    INTERNAL_ERROR,
)


@dataclass(frozen=True, slots=True)
class ServiceIdentity:
    """The verified caller of a request."""

    name: str
    """The calling service (the token's ``sub``, equal to its ``iss``)."""
    token_id: str
    """The token's ``jti``."""
    audience: str = ""
    issued_at: float = 0.0
    expires_at: float = 0.0
    key_id: str | None = None
    algorithm: str = ""
    verified: bool = True
    """False only for the stand-in identity handed out while auth is disabled (development)."""


ANONYMOUS = ServiceIdentity(name="anonymous", token_id="", verified=False)


class AuthFailure(Exception):
    """A rejected request: `reason` is a low-cardinality code, never token content."""

    def __init__(self, reason: str, *, denied: bool = False, identity: ServiceIdentity | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.denied = denied
        self.identity = identity

    @property
    def result(self) -> str:
        return "denied" if self.denied else "failure"

    @property
    def status(self) -> int:
        return 403 if self.denied else 401


class KeysNeeded(Exception):
    """The issuer's key set must be (re)loaded before this token can be judged."""

    def __init__(self, issuer: str, reason: str) -> None:
        super().__init__(reason)
        self.issuer = issuer
        self.reason = reason


class VerifiedTokenCache:
    """Bounded LRU of verified tokens, by token digest; an entry dies at the token's exp."""

    __slots__ = ("_entries", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[bytes, tuple[ServiceIdentity, float, int]] = OrderedDict()

    def get(self, digest: bytes, now: float, generation: int) -> ServiceIdentity | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[1] <= now or entry[2] != generation:
            self._entries.pop(digest, None)
            return None
        try:
            self._entries.move_to_end(digest)
        except KeyError:  # raced with an eviction
            pass
        return entry[0]

    def put(self, digest: bytes, identity: ServiceIdentity, expires_at: float, generation: int) -> None:
        if self.maxsize <= 0:
            return
        self._entries[digest] = (identity, expires_at, generation)
        while len(self._entries) > self.maxsize:
            try:
                self._entries.popitem(last=False)
            except KeyError:
                break

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


def _segment(data: bytes) -> bytes:
    """Strict base64url (no padding, URL-safe alphabet only) or ValueError."""
    if len(data) % 4 == 1 or data.translate(None, _B64URL):  # anything left is outside the alphabet
        raise ValueError("bad base64url")
    try:
        return urlsafe_b64decode(data + b"=" * (-len(data) % 4))
    except binascii.Error:
        raise ValueError("bad base64url") from None


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(_segment(data))
    except (ValueError, RecursionError):
        raise AuthFailure(MALFORMED) from None
    if not isinstance(value, dict):
        raise AuthFailure(MALFORMED)
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


class TokenVerifier:
    """Checks ``Authorization`` header values for one audience (this service).

    ``verify`` is synchronous and is all the hot path calls; it raises
    :class:`KeysNeeded` when an asymmetric issuer's keys must be fetched, and
    :meth:`verify_after_refresh` does that (awaited, rate-limited) and retries once.
    """

    def __init__(
        self,
        audience: str,
        *,
        algorithms: Iterable[str] = ("HS256",),
        secrets: Iterable[VerificationKey] = (),
        trust: TrustStore | None = None,
        leeway: float = 30.0,
        allowed_callers: Iterable[str] = (),
        cache_size: int = 10_000,
        max_lifetime: float = MAX_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.audience = audience
        self.algorithms = frozenset(algorithms)
        unknown = self.algorithms - SYMMETRIC - ASYMMETRIC
        if unknown:
            raise ValueError(f"unsupported algorithms {sorted(unknown)}")
        self._secrets = list(secrets)  # current first
        self._secrets_by_kid = {key.kid: key for key in self._secrets}
        self.trust = trust if trust is not None else TrustStore()
        self.leeway = float(leeway)
        self.allowed_callers = frozenset(allowed_callers)
        self.max_lifetime = max_lifetime
        self.cache = VerifiedTokenCache(cache_size)
        self._clock = clock

    # ------------------------------------------------------------ hot path

    def verify(self, header_value: bytes | None, *, fetch: bool = True) -> ServiceIdentity:
        """The verified caller of an ``Authorization`` header value, or AuthFailure/KeysNeeded."""
        if header_value is None:
            raise AuthFailure(MISSING)
        if len(header_value) > MAX_TOKEN_BYTES + 7:
            raise AuthFailure(TOO_LARGE)
        if header_value[:7].lower() != b"bearer ":
            raise AuthFailure(MALFORMED if header_value.strip().lower() == b"bearer" else WRONG_SCHEME)
        token = header_value[7:].strip(b" \t")
        if not token:
            raise AuthFailure(MALFORMED)
        now = self._clock()
        digest = hashlib.blake2b(token, digest_size=16).digest()
        identity = self.cache.get(digest, now, self.trust.generation)
        if identity is None:
            generation = self.trust.generation
            identity = self._verify_token(token, now, fetch)
            if identity.expires_at > now:
                self.cache.put(digest, identity, identity.expires_at, generation)
        if self.allowed_callers and identity.name not in self.allowed_callers:
            raise AuthFailure(CALLER_NOT_ALLOWED, denied=True, identity=identity)
        return identity

    async def verify_after_refresh(self, header_value: bytes | None, needed: KeysNeeded) -> ServiceIdentity:
        """Fetch the issuer's keys once (if the rate limit allows) and verify again."""
        if not await self.trust.refresh(needed.issuer):
            raise AuthFailure(needed.reason)
        try:
            return self.verify(header_value, fetch=False)
        except KeysNeeded as again:
            raise AuthFailure(again.reason) from None

    # ------------------------------------------------------------ cold path

    def _verify_token(self, token: bytes, now: float, fetch: bool) -> ServiceIdentity:
        if token.count(b".") != 2:
            raise AuthFailure(MALFORMED)
        header_b64, payload_b64, signature_b64 = token.split(b".")
        header = _json_object(header_b64)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthFailure(ALG_NOT_ALLOWED)
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH):
            raise AuthFailure(MALFORMED)
        if "crit" in header:
            raise AuthFailure(MALFORMED)  # no extension is understood, so none may be critical
        claims = _json_object(payload_b64)
        try:
            signature = _segment(signature_b64)
        except ValueError:
            raise AuthFailure(MALFORMED) from None
        signing_input = token[: len(header_b64) + 1 + len(payload_b64)]

        if alg in SYMMETRIC:
            candidates = self._hmac_candidates(kid)
            if not any(algorithm(alg).verify(signing_input, key.key, signature) for key in candidates):
                raise AuthFailure(BAD_SIGNATURE)
        else:
            candidates = self._public_candidates(claims, kid, alg, fetch)
            if not any(key.verify(signing_input, signature) for key in candidates):
                raise AuthFailure(BAD_SIGNATURE)
        return self._check_claims(claims, now, kid, alg)

    def _hmac_candidates(self, kid: str | None) -> list[VerificationKey]:
        if kid is None:
            return self._secrets
        key = self._secrets_by_kid.get(kid)
        if key is None:
            raise AuthFailure(UNKNOWN_KID)
        return [key]

    def _public_candidates(
        self, claims: dict[str, Any], kid: str | None, alg: str, fetch: bool
    ) -> list[VerificationKey]:
        issuer = claims.get("iss")
        if issuer is None:
            raise AuthFailure(MISSING_CLAIM)
        if not isinstance(issuer, str):
            raise AuthFailure(INVALID_CLAIM)
        state = self.trust.issuer(issuer)
        if state is None:
            raise AuthFailure(WRONG_ISSUER)  # no keys are trusted for this issuer
        if state.loaded_at is None:
            if fetch and self.trust.may_refresh(state):
                raise KeysNeeded(issuer, KEYS_UNAVAILABLE)
            raise AuthFailure(KEYS_UNAVAILABLE)
        if self.trust.is_stale(state):
            self.trust.refresh_in_background(issuer)
        if kid is None:
            candidates = [key for key in state.keys.values() if key.alg == alg]
        else:
            key = state.keys.get(kid)
            if key is None:
                if fetch and self.trust.may_refresh(state):
                    raise KeysNeeded(issuer, UNKNOWN_KID)
                raise AuthFailure(UNKNOWN_KID)
            candidates = [key]
        if not candidates or candidates[0].alg != alg:
            raise AuthFailure(ALG_NOT_ALLOWED)  # the key is not for this algorithm
        return candidates

    def _check_claims(self, claims: dict[str, Any], now: float, kid: str | None, alg: str) -> ServiceIdentity:
        for name in REQUIRED_CLAIMS:
            if claims.get(name) is None:
                raise AuthFailure(MISSING_CLAIM)
        iss, sub, aud, jti = claims["iss"], claims["sub"], claims["aud"], claims["jti"]
        iat, exp, nbf = claims["iat"], claims["exp"], claims.get("nbf")
        if not (isinstance(iss, str) and isinstance(sub, str) and isinstance(jti, str)):
            raise AuthFailure(INVALID_CLAIM)
        if not sub or len(sub) > MAX_NAME_LENGTH or len(jti) > MAX_NAME_LENGTH:
            raise AuthFailure(INVALID_CLAIM)
        if not (_is_number(iat) and _is_number(exp)) or (nbf is not None and not _is_number(nbf)):
            raise AuthFailure(INVALID_CLAIM)
        if iss != sub:
            raise AuthFailure(WRONG_ISSUER)
        if aud != self.audience:  # one string; a list never matches
            raise AuthFailure(WRONG_AUDIENCE)
        if exp <= now - self.leeway:
            raise AuthFailure(EXPIRED)
        if iat > now + self.leeway or (nbf is not None and nbf > now + self.leeway):
            raise AuthFailure(NOT_YET_VALID)
        if exp - iat > self.max_lifetime:
            raise AuthFailure(LIFETIME_TOO_LONG)
        return ServiceIdentity(
            name=sub,
            token_id=jti,
            audience=aud,
            issued_at=float(iat),
            expires_at=float(exp),
            key_id=kid,
            algorithm=alg,
        )
