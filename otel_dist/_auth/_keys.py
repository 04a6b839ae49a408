"""Keys, parsed once: HMAC secrets, PEM private/public keys, JWK(S) documents.

The libraries do the parsing: ``cryptography`` loads PEM, PyJWT's ``PyJWK``
turns a JWK into a key object and its ``Algorithm.to_jwk`` writes one, and
PyJWT's HMAC ``prepare_key`` refuses key material used as a secret.  What this
module adds is policy: a JWKS document yields only public Ed25519 (EdDSA) and
P-256 (ES256) signing keys, private members are dropped before PyJWT sees a
JWK, at most 16 keys are taken, and ``oct``/RSA keys are ignored.

Key ids (``kid``) are derived, never configured: the RFC 7638 thumbprint of the
public JWK for asymmetric keys (PyJWT has no thumbprint helper, so it is the
few lines below), and a short domain-separated SHA-256 prefix for an HMAC
secret, so a rotation needs no coordination beyond the keys themselves.

Everything here runs at start-up or when a JWKS document is (re)loaded, never
per request.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt import PyJWK
from jwt.algorithms import Algorithm, get_default_algorithms
from jwt.exceptions import InvalidKeyError, PyJWTError
from jwt.utils import base64url_encode

from .._settings import ConfigError

__all__ = [
    "ASYMMETRIC",
    "SYMMETRIC",
    "SigningKey",
    "VerificationKey",
    "hmac_kid",
    "jwks_document",
    "load_private_key",
    "load_public_keys",
    "parse_jwks",
    "public_jwk",
]

SYMMETRIC = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC = frozenset({"ES256", "EdDSA"})
MAX_KID_LENGTH = 128
MAX_JWKS_KEYS = 16
_ALGORITHMS: dict[str, Algorithm] = get_default_algorithms()
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.S)
_PUBLIC_MEMBERS = ("kty", "crv", "x", "y")  # of an OKP or EC JWK; never "d"


def algorithm(name: str) -> Algorithm:
    """PyJWT's implementation of `name` (one of SYMMETRIC | ASYMMETRIC)."""
    return _ALGORITHMS[name]


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A key ready for ``jwt.decode``: the HMAC secret (bytes) or a ``cryptography`` public key object."""

    kid: str
    alg: str
    key: Any


@dataclass(frozen=True, slots=True)
class SigningKey:
    """What a minter signs with: an HMAC secret (bytes) or a private key object."""

    kid: str
    alg: str
    key: Any

    def __repr__(self) -> str:  # never print key material
        return f"SigningKey(kid={self.kid!r}, alg={self.alg!r})"

    def public_jwk(self) -> dict[str, Any] | None:
        """The public half as a JWK (None for an HMAC secret)."""
        if self.alg in SYMMETRIC:
            return None
        return public_jwk(self.key.public_key(), self.alg)

    def verification_key(self) -> VerificationKey:
        if self.alg in SYMMETRIC:
            return VerificationKey(self.kid, self.alg, self.key)
        return VerificationKey(self.kid, self.alg, self.key.public_key())


# ---------------------------------------------------------------- HMAC


def hmac_kid(secret: bytes) -> str:
    """Short, stable id of a secret; 48 bits of a domain-separated hash reveal nothing usable."""
    return "hs-" + hashlib.sha256(b"otel-dist service-jwt kid\x00" + secret).hexdigest()[:12]


def hmac_key(secret: str | bytes, alg: str = "HS256") -> SigningKey:
    raw = secret.encode() if isinstance(secret, str) else secret
    if len(raw) < 32:
        raise ConfigError("SERVICE_JWT_SECRET: too short; accepted: a secret of at least 32 bytes (256 bits)")
    try:
        # prepare_key refuses PEM/SSH/DER/JWK material used as an HMAC secret (algorithm confusion).
        prepared = algorithm(alg).prepare_key(raw)
    except InvalidKeyError:
        raise ConfigError(
            "SERVICE_JWT_SECRET: looks like a public/private key, not a secret; accepted: random bytes (>= 32)"
        ) from None
    return SigningKey(hmac_kid(raw), alg, prepared)


# ---------------------------------------------------------------- asymmetric


def _alg_of(key: Any) -> str | None:
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "EdDSA"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    return None


def load_private_key(pem: str | bytes, alg: str, *, setting: str = "SERVICE_JWT_PRIVATE_KEY") -> SigningKey:
    """Parse a PEM private key (Ed25519 for EdDSA, P-256 for ES256); errors never echo the key."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"{setting}: not an unencrypted PEM private key; accepted: an Ed25519 (EdDSA) or P-256 (ES256) key"
        ) from None
    found = _alg_of(key)
    if found is None:
        raise ConfigError(f"{setting}: unsupported key type; accepted: an Ed25519 (EdDSA) or P-256 (ES256) key")
    if found != alg:
        raise ConfigError(
            f"{setting}: the key is for {found} but SERVICE_JWT_ALGORITHM is {alg}; accepted: a {alg} key"
        )
    kid = jwk_thumbprint(public_jwk(key.public_key(), alg, with_kid=False))
    return SigningKey(kid, alg, key)


def load_public_keys(pem_text: str, *, setting: str = "SERVICE_JWT_PUBLISHED_KEYS") -> list[VerificationKey]:
    """Every PEM public key (or private key, of which only the public half is kept) in `pem_text`."""
    keys: list[VerificationKey] = []
    for match in _PEM_BLOCK.finditer(pem_text):
        block = match.group(0).encode()
        try:
            if "PRIVATE" in match.group(1):
                public: Any = serialization.load_pem_private_key(block, password=None).public_key()
            else:
                public = serialization.load_pem_public_key(block)
        except (ValueError, TypeError):
            raise ConfigError(f"{setting}: a PEM block is not a readable key") from None
        alg = _alg_of(public)
        if alg is None:
            raise ConfigError(f"{setting}: unsupported key type; accepted: Ed25519 or P-256 public keys")
        keys.append(VerificationKey(jwk_thumbprint(public_jwk(public, alg, with_kid=False)), alg, public))
    if pem_text.strip() and not keys:
        raise ConfigError(f"{setting}: no PEM block found; accepted: PEM public keys")
    return keys


def public_jwk(public: Any, alg: str, *, with_kid: bool = True) -> dict[str, Any]:
    """The public JWK of a key (PyJWT's ``to_jwk``; only the public members, even for a private key)."""
    jwk = {k: v for k, v in algorithm(alg).to_jwk(public, as_dict=True).items() if k in _PUBLIC_MEMBERS}
    if with_kid:
        jwk.update(kid=jwk_thumbprint(jwk), alg=alg, use="sig")
    return jwk


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, without whitespace."""
    required = ("crv", "kty", "x") if jwk["kty"] == "OKP" else ("crv", "kty", "x", "y")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return base64url_encode(hashlib.sha256(canonical.encode()).digest()).decode("ascii")


def jwks_document(keys: Iterable[VerificationKey]) -> dict[str, Any]:
    out = []
    for key in keys:
        jwk = public_jwk(key.key, key.alg, with_kid=False)
        jwk.update(kid=key.kid, alg=key.alg, use="sig")
        out.append(jwk)
    return {"keys": out}


def parse_jwks(document: Any) -> dict[str, VerificationKey]:
    """Usable signing keys of a JWKS document, by kid; anything else is skipped.

    Only public Ed25519 (OKP) and P-256 (EC) keys are taken: symmetric (``oct``)
    keys are never accepted from a document, private members (``d``) are
    dropped, and a key whose ``alg`` or ``use`` says otherwise is ignored.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    out: dict[str, VerificationKey] = {}
    for jwk in document["keys"][: MAX_JWKS_KEYS * 4]:
        if len(out) >= MAX_JWKS_KEYS:
            break
        key = _parse_jwk(jwk)
        if key is not None:
            out[key.kid] = key
    return out


def _parse_jwk(jwk: Any) -> VerificationKey | None:
    if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
        return None
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "OKP" and crv == "Ed25519":
        alg = "EdDSA"
    elif kty == "EC" and crv == "P-256":
        alg = "ES256"
    else:
        return None  # oct (a shared secret has no business in a published set), RSA, other curves
    if jwk.get("alg", alg) != alg:
        return None
    try:
        public = PyJWK.from_dict({k: jwk[k] for k in _PUBLIC_MEMBERS if k in jwk}, algorithm=alg).key
    except (PyJWTError, TypeError, ValueError):
        return None
    kid = jwk.get("kid")
    if kid is None:
        kid = jwk_thumbprint(public_jwk(public, alg, with_kid=False))
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        return None
    return VerificationKey(kid, alg, public)
