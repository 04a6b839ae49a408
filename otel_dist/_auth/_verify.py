"""Verification of service tokens: PyJWT's decode, the contract's own checks, and a cache.

The token contract (docs/how-to/service-auth.md, "Token contract"):

- header ``alg`` in the allow-list, optional ``kid`` (a string of at most 128
  characters); ``crit`` and ``b64: false`` are refused; ``jwk``, ``jku``,
  ``x5u``, ``x5c`` are ignored;
- claims ``iss`` = ``sub`` = the caller's service name, ``aud`` = this
  service's name (one string), ``iat``, ``exp``, ``jti``; all required;
  ``nbf`` optional; ``exp - iat`` at most 24 h;
- sent as ``Authorization: Bearer <token>``, at most 8 KiB.

PyJWT does the parsing and the standard checks: ``jwt.get_unverified_header``
(segments, base64url, JSON, ``kid`` a string, ``crit`` syntax), then
``jwt.decode`` with the candidate key and only the algorithm allowed for it
(for an HMAC secret, the allowed HS* algorithms): signature, required claims,
``aud`` as one string equal to ours, ``sub`` and ``jti`` strings and, for
public keys, ``iss`` = the key's issuer.  Its exception classes map onto the
low-cardinality reasons below.  What this module adds: the size and padding
pre-checks, the algorithm allow-list and key choice before any key is used,
``iss`` = ``sub``, claim types and bounds, the lifetime cap, and the time
checks (``exp``/``iat``/``nbf`` against the verifier's clock: PyJWT reads
``datetime.now()`` itself and has no clock parameter).

Verified tokens are cached by a BLAKE2b digest of the token (the token itself
is never kept) until their ``exp``; a cache hit never calls PyJWT, but a hit on an
asymmetric token whose issuer's key set is older than the refresh interval starts
the background refresh, so a key removed from a JWKS revokes the tokens it signed
within the refresh interval (plus the one request that notices it is due).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.exceptions import InvalidJTIError, InvalidSubjectError
from jwt.types import Options

from ._jwks import TrustStore
from ._keys import ASYMMETRIC, MAX_KID_LENGTH, SYMMETRIC, VerificationKey

__all__ = ["AuthFailure", "KeysNeeded", "ReplayCache", "ServiceIdentity", "TokenVerifier", "VerifiedTokenCache"]

MAX_TOKEN_BYTES = 8192
MAX_LIFETIME = 86400
MAX_NAME_LENGTH = 255
REQUIRED_CLAIMS = ("iss", "sub", "aud", "iat", "exp", "jti")

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
REPLAYED = "replayed"
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
    REPLAYED,
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


class ReplayCache:
    """The ``jti`` of every token this verifier (one audience) accepted, until the token's ``exp``.

    Bounded: past ``maxsize`` live entries the oldest are forgotten (a replay of one of
    those would pass again), so size it above requests-per-token-lifetime.  Off by default;
    with it on, callers must send a new token per request (``SERVICE_JWT_TOKEN_PER_REQUEST``).
    """

    __slots__ = ("_seen", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_use(self, key: str, expires_at: float, now: float) -> bool:
        seen = self._seen
        previous = seen.get(key)
        if previous is not None and previous > now:
            return False
        seen[key] = expires_at
        seen.move_to_end(key)
        while seen:  # oldest first: expired ones, and any beyond the bound
            oldest, expiry = next(iter(seen.items()))
            if expiry > now and len(seen) <= self.maxsize:
                break
            seen.pop(oldest, None)
        return True

    def __len__(self) -> int:
        return len(self._seen)


_DECODE_OPTIONS: Options = {
    "require": list(REQUIRED_CLAIMS),
    "strict_aud": True,  # aud is one string equal to ours: a list never matches
    # Checked in _check_claims against the verifier's clock instead: PyJWT reads datetime.now() (no clock
    # parameter, jpadilla/pyjwt#921) and int()s the value, so "exp": "1800000000" would pass its check.
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
}

# PyJWT's exception classes -> reasons; first match wins (InvalidSignatureError is a DecodeError).
_REASON_OF_ERROR: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (
    (jwt.InvalidSignatureError, BAD_SIGNATURE),
    (jwt.DecodeError, MALFORMED),  # segments, base64url, JSON
    (jwt.InvalidAlgorithmError, ALG_NOT_ALLOWED),
    (jwt.MissingRequiredClaimError, MISSING_CLAIM),
    (jwt.InvalidAudienceError, WRONG_AUDIENCE),
    (jwt.InvalidIssuerError, WRONG_ISSUER),
    (jwt.ExpiredSignatureError, EXPIRED),
    (jwt.ImmatureSignatureError, NOT_YET_VALID),
    (jwt.InvalidIssuedAtError, INVALID_CLAIM),  # iat not a number
    (InvalidSubjectError, INVALID_CLAIM),  # sub not a string
    (InvalidJTIError, INVALID_CLAIM),  # jti not a string
    (jwt.InvalidTokenError, MALFORMED),  # the rest: kid not a string, a bad crit or b64 header
)


def _reason(error: jwt.InvalidTokenError) -> str:
    return next(reason for cls, reason in _REASON_OF_ERROR if isinstance(error, cls))


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
        replay_cache_size: int = 0,
        max_lifetime: float = MAX_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.audience = audience
        self.algorithms = frozenset(algorithms)
        unknown = self.algorithms - SYMMETRIC - ASYMMETRIC
        if unknown:
            raise ValueError(f"unsupported algorithms {sorted(unknown)}")
        self._hmac_algorithms = sorted(self.algorithms & SYMMETRIC)  # a secret serves every allowed HS*
        self._secrets = list(secrets)  # current first
        self._secrets_by_kid = {key.kid: key for key in self._secrets}
        self.trust = trust if trust is not None else TrustStore()
        self.leeway = float(leeway)
        self.allowed_callers = frozenset(allowed_callers)
        self.max_lifetime = max_lifetime
        self.cache = VerifiedTokenCache(cache_size)
        self.replays = ReplayCache(replay_cache_size) if replay_cache_size > 0 else None
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
        if identity is not None:
            if identity.algorithm in ASYMMETRIC:
                # A cached token still starts its issuer's refresh when the set is due: a key removed
                # from the JWKS moves the generation on, and every token it signed stops verifying.
                state = self.trust.issuer(identity.name)
                if state is not None and self.trust.is_stale(state):
                    self.trust.refresh_in_background(identity.name)
        else:
            generation = self.trust.generation
            identity = self._verify_token(token, now, fetch)
            if identity.expires_at > now:
                self.cache.put(digest, identity, identity.expires_at, generation)
        if self.allowed_callers and identity.name not in self.allowed_callers:
            raise AuthFailure(CALLER_NOT_ALLOWED, denied=True, identity=identity)
        if self.replays is not None and not self.replays.first_use(
            f"{identity.name}\x00{identity.token_id}", identity.expires_at, now
        ):
            raise AuthFailure(REPLAYED, identity=identity)
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
        if b"=" in token:
            raise AuthFailure(MALFORMED)  # RFC 7515 base64url has no padding (PyJWT tolerates it)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as error:
            raise AuthFailure(_reason(error)) from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthFailure(ALG_NOT_ALLOWED)
        kid = header.get("kid")  # PyJWT checked it is a string
        if kid is not None and (not kid or len(kid) > MAX_KID_LENGTH):
            raise AuthFailure(MALFORMED)
        if "crit" in header:
            raise AuthFailure(MALFORMED)  # PyJWT accepts crit=["b64"]; here no extension is understood

        issuer: str | None = None
        if alg in SYMMETRIC:
            candidates, algorithms = self._hmac_candidates(kid), self._hmac_algorithms
        else:
            issuer = self._unverified_issuer(token)
            candidates, algorithms = self._public_candidates(issuer, kid, alg, fetch), [alg]
        claims = self._decode(token, candidates, algorithms, issuer)
        return self._check_claims(claims, now, kid, alg)

    def _decode(
        self, token: bytes, candidates: list[VerificationKey], algorithms: Sequence[str], issuer: str | None
    ) -> dict[str, Any]:
        """PyJWT's signature and claim checks with each candidate key in turn (one, unless the token has no kid)."""
        for key in candidates:
            try:
                return jwt.decode(
                    token,
                    key.key,
                    algorithms=algorithms,
                    audience=self.audience,
                    issuer=issuer,
                    options=_DECODE_OPTIONS,
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError as error:
                raise AuthFailure(_reason(error)) from None
        raise AuthFailure(BAD_SIGNATURE)

    @staticmethod
    def _unverified_issuer(token: bytes) -> str:
        """The ``iss`` claim before verification: it only picks the trust set, and PyJWT checks it after."""
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.InvalidTokenError as error:
            raise AuthFailure(_reason(error)) from None
        if issuer is None:
            raise AuthFailure(MISSING_CLAIM)
        if not isinstance(issuer, str):
            raise AuthFailure(INVALID_CLAIM)
        return issuer

    def _hmac_candidates(self, kid: str | None) -> list[VerificationKey]:
        if kid is None:
            return self._secrets
        key = self._secrets_by_kid.get(kid)
        if key is None:
            raise AuthFailure(UNKNOWN_KID)
        return [key]

    def _public_candidates(self, issuer: str, kid: str | None, alg: str, fetch: bool) -> list[VerificationKey]:
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
        """What PyJWT does not check: types and bounds, iss = sub, time against our clock, lifetime."""
        iss, sub, aud, jti = claims["iss"], claims["sub"], claims["aud"], claims["jti"]
        iat, exp, nbf = claims["iat"], claims["exp"], claims.get("nbf")
        if not isinstance(iss, str) or not sub or len(sub) > MAX_NAME_LENGTH or len(jti) > MAX_NAME_LENGTH:
            raise AuthFailure(INVALID_CLAIM)  # sub, jti and aud: strings, checked by PyJWT
        if not (_is_number(iat) and _is_number(exp)) or (nbf is not None and not _is_number(nbf)):
            raise AuthFailure(INVALID_CLAIM)
        if iss != sub:
            raise AuthFailure(WRONG_ISSUER)
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
