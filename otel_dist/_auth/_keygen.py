"""``otel-dist keygen``: a per-service signing key pair in one command (the recommended production setup).

With asymmetric keys each service signs with its own private key and verifiers trust
each caller's public keys for that caller's name only (``SERVICE_JWT_JWKS_URLS``), so a
compromised service can mint tokens in its own name and no other.  The shared HS256
secret cannot give that: any holder can mint any identity for any audience.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ._keys import jwks_document, load_private_key

__all__ = ["generate", "keygen"]


def generate(algorithm: str = "EdDSA") -> str:
    """A new private key as PKCS#8 PEM: Ed25519 for EdDSA, P-256 for ES256."""
    key = ed25519.Ed25519PrivateKey.generate() if algorithm == "EdDSA" else ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def keygen(service: str, algorithm: str, out: Path | None) -> str:
    """The env lines for `service` (written to `out` with mode 0600, or returned) and a summary."""
    pem = generate(algorithm)
    key = load_private_key(pem, algorithm)
    jwks = json.dumps(jwks_document([key.verification_key()]))
    env = (
        f"# otel-dist keygen: {algorithm} signing key of service {service!r} (kid {key.kid})\n"
        f"SERVICE_JWT_ALGORITHM={algorithm}\n"
        f'SERVICE_JWT_PRIVATE_KEY="{pem.strip().replace(chr(10), chr(92) + "n")}"\n'
    )
    summary = (
        f"Verifiers of {service}'s calls trust its public key for that name only:\n"
        f"  SERVICE_JWT_JWKS_URLS={service}=https://<{service}'s address>/.well-known/jwks.json\n"
        f"  (served by {service} itself), or pin it in a file: {jwks}\n"
    )
    if out is None:
        return env + "\n" + "".join("# " + line + "\n" for line in summary.splitlines())
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a private key: owner-only from the start
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(env)
    return f"wrote {out} (mode 0600): SERVICE_JWT_ALGORITHM and SERVICE_JWT_PRIVATE_KEY of {service}\n" + summary
