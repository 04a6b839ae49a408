"""Settings -> the keys and rules of service auth, parsed once per settings object."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .._settings import ConfigError, Settings
from ._keys import ASYMMETRIC, SYMMETRIC, SigningKey, VerificationKey, hmac_key, load_private_key, load_public_keys

__all__ = ["JWKS_PATH", "NO_KEY", "AuthConfig", "auth_config", "missing_key"]

JWKS_PATH = "/.well-known/jwks.json"
NO_KEY = (
    "{variable}: service auth is on and there is no key to {what} service tokens with; accepted: a secret of at least "
    "32 bytes (SERVICE_JWT_SECRET, or JWT_SECRET_KEY), or for ES256/EdDSA SERVICE_JWT_PRIVATE_KEY / "
    "SERVICE_JWT_JWKS_URLS. To run without service auth outside production set SERVICE_AUTH_ENABLED=false "
    "(or DEPLOYMENT_MODE=monolith for an app that takes no service calls)"
)


@dataclass(frozen=True)
class AuthConfig:
    service_name: str
    enabled: bool
    disabled_reason: str | None
    """The explicit opt-out that turned auth off (SERVICE_AUTH_ENABLED=false, DEPLOYMENT_MODE=monolith)."""
    can_verify: bool
    algorithms: frozenset[str]
    signing_key: SigningKey | None
    """What this service mints with (None: it cannot call protected services)."""
    hmac_keys: tuple[VerificationKey, ...]
    """Secrets accepted when verifying HS* tokens, current first."""
    published: tuple[VerificationKey, ...]
    """Public keys this service serves at JWKS_PATH (signing key first)."""
    jwks_sources: tuple[tuple[str, str], ...]

    @property
    def publishes_jwks(self) -> bool:
        return bool(self.published)


def missing_key(settings: Settings, what: str) -> ConfigError:
    """The error for an app that needs a key to `what` (verify, sign) service tokens and has none."""
    variable = (
        "SERVICE_JWT_SECRET"
        if settings.jwt_algorithm in SYMMETRIC
        else "SERVICE_JWT_PRIVATE_KEY / SERVICE_JWT_JWKS_URLS"
    )
    return ConfigError(NO_KEY.format(variable=variable, what=what))


@functools.lru_cache(maxsize=16)
def auth_config(settings: Settings) -> AuthConfig:
    algorithms = frozenset(settings.jwt_allowed_algorithms or (settings.jwt_algorithm,))
    hs_alg = settings.jwt_algorithm if settings.jwt_algorithm in SYMMETRIC else "HS256"
    hmac_keys: list[VerificationKey] = []
    for secret, name in (
        (settings.jwt_secret, "SERVICE_JWT_SECRET"),
        (settings.jwt_previous_secret, "SERVICE_JWT_PREVIOUS_SECRET"),
    ):
        if secret is not None:
            try:
                hmac_keys.append(hmac_key(secret, hs_alg).verification_key())
            except ConfigError:
                raise ConfigError(f"{name}: too short; accepted: a secret of at least 32 bytes (256 bits)") from None

    signing: SigningKey | None = None
    if settings.jwt_algorithm in SYMMETRIC:
        if settings.jwt_secret is not None:
            signing = hmac_key(settings.jwt_secret, settings.jwt_algorithm)
    elif settings.jwt_private_key is not None:
        signing = load_private_key(settings.jwt_private_key, settings.jwt_algorithm)

    published: list[VerificationKey] = []
    if signing is not None and signing.alg in ASYMMETRIC:
        published.append(signing.verification_key())
    if settings.jwt_published_keys:
        published.extend(k for k in load_public_keys(settings.jwt_published_keys) if k not in published)

    can_verify = bool(algorithms & SYMMETRIC and hmac_keys) or bool(
        algorithms & ASYMMETRIC and (settings.jwt_jwks_urls or published)
    )
    # Fail closed: auth is off only by an explicit opt-out; a missing key is an error
    # (raised where a key is needed: verifying in auth_layers, minting in the template).
    reason = settings.service_auth_off
    return AuthConfig(
        service_name=settings.service_name,
        enabled=reason is None,
        disabled_reason=reason,
        can_verify=can_verify,
        algorithms=algorithms,
        signing_key=signing if reason is None else None,
        hmac_keys=tuple(hmac_keys),
        published=tuple(published),
        jwks_sources=settings.jwt_jwks_urls,
    )
