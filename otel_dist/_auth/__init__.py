"""Service-to-service auth: short-lived JWTs minted per audience, verified on every request.

- ``_keys``: secrets and key pairs parsed once, JWK/JWKS documents (PyJWT's ``PyJWK``), RFC 7638 kids;
- ``_jwks``: which issuers' public keys are trusted, fetched and refreshed (bounded);
- ``_verify``: PyJWT's header read and ``jwt.decode``, the contract's own checks, the verified-token cache;
- ``_tokens``: minting and the ``httpx.Auth`` for clients;
- ``_middleware``: the pure ASGI layer inside the server span;
- ``_fastapi``: what ``instrument_app`` installs, and the ``calling_service`` dependency.
"""

from ._config import JWKS_PATH, AuthConfig, auth_config
from ._fastapi import CallingService, auth_layers, auth_state, calling_service, publish_auth_state
from ._jwks import TrustStore
from ._keys import SigningKey, VerificationKey, hmac_key, jwks_document, load_private_key, load_public_keys
from ._middleware import ServiceAuthMiddleware
from ._tokens import ServiceTokenAuth, TokenMinter, service_auth
from ._verify import REASONS, AuthFailure, ServiceIdentity, TokenVerifier

__all__ = [
    "JWKS_PATH",
    "REASONS",
    "AuthConfig",
    "AuthFailure",
    "CallingService",
    "ServiceAuthMiddleware",
    "ServiceIdentity",
    "ServiceTokenAuth",
    "SigningKey",
    "TokenMinter",
    "TokenVerifier",
    "TrustStore",
    "VerificationKey",
    "auth_config",
    "auth_layers",
    "auth_state",
    "calling_service",
    "hmac_key",
    "jwks_document",
    "load_private_key",
    "load_public_keys",
    "publish_auth_state",
    "service_auth",
]
