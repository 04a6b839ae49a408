"""TokenVerifier, its cache and the trust store, with a fake clock (no server)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from otel_dist._auth import AuthFailure, TokenMinter, TokenVerifier, TrustStore, hmac_key, jwks_document
from otel_dist._auth._keys import SigningKey, public_jwk
from otel_dist._auth._verify import KeysNeeded, VerifiedTokenCache

pytestmark = pytest.mark.timeout(5)

SECRET = "unit-test-secret-0123456789abcdefghijkl"
OLD_SECRET = "the-previous-secret-0123456789abcdefghij"
T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ed_key() -> SigningKey:
    private = ed25519.Ed25519PrivateKey.generate()
    kid = public_jwk(private.public_key(), "EdDSA")["kid"]
    return SigningKey(kid, "EdDSA", private)


def verifier(clock: Clock, **kw: Any) -> TokenVerifier:
    kw.setdefault("secrets", [hmac_key(SECRET).verification_key()])
    return TokenVerifier("orders", leeway=30, clock=clock, **kw)


def bearer(token: str) -> bytes:
    return f"Bearer {token}".encode()


def minted(clock: Clock, secret: str = SECRET, issuer: str = "billing", lifetime: int = 600) -> str:
    return TokenMinter(issuer, hmac_key(secret), lifetime=lifetime, clock=clock).mint("orders")


def reason_of(v: TokenVerifier, value: bytes | None) -> str:
    with pytest.raises(AuthFailure) as err:
        v.verify(value)
    return err.value.reason


# ---------------------------------------------------------------- cache


def test_cache_hit_returns_the_same_identity_and_skips_verification():
    clock = Clock()
    v = verifier(clock)
    value = bearer(minted(clock))
    first = v.verify(value)
    v._secrets = []  # a second cold verification would now fail
    v._secrets_by_kid = {}
    assert v.verify(value) is first
    assert len(v.cache) == 1


def test_cache_entry_dies_at_exp_then_leeway_then_expired():
    clock = Clock()
    v = verifier(clock)
    value = bearer(minted(clock, lifetime=600))
    v.verify(value)
    clock.now = T0 + 610  # past exp, inside the 30 s leeway: cold path accepts, does not cache
    assert v.verify(value).name == "billing"
    assert len(v.cache) == 0
    clock.now = T0 + 631
    assert reason_of(v, value) == "expired"


def test_cache_is_a_bounded_lru():
    clock = Clock()
    v = verifier(clock, cache_size=3)
    values = [bearer(minted(clock)) for _ in range(5)]
    for value in values:
        v.verify(value)
    assert len(v.cache) == 3
    v.verify(values[2])  # touch: now most recent
    v.verify(bearer(minted(clock)))
    assert len(v.cache) == 3


def test_cache_size_zero_disables_caching():
    clock = Clock()
    v = verifier(clock, cache_size=0)
    v.verify(bearer(minted(clock)))
    assert len(v.cache) == 0


def test_cache_does_not_keep_the_token():
    clock = Clock()
    v = verifier(clock)
    token = minted(clock)
    v.verify(bearer(token))
    keys = list(v.cache._entries)
    assert all(len(k) == 16 and token.encode() not in k for k in keys)


def test_allow_list_applies_to_cached_identities():
    clock = Clock()
    v = verifier(clock, allowed_callers=["inventory"])
    value = bearer(minted(clock))
    for _ in range(2):
        with pytest.raises(AuthFailure) as err:
            v.verify(value)
        assert err.value.denied and err.value.status == 403 and err.value.identity.name == "billing"


def test_verified_token_cache_evicts_stale_generation():
    cache = VerifiedTokenCache(10)
    identity = object()
    cache.put(b"k" * 16, identity, T0 + 10, generation=1)  # type: ignore[arg-type]
    assert cache.get(b"k" * 16, T0, 1) is identity
    assert cache.get(b"k" * 16, T0, 2) is None
    assert len(cache) == 0


# ---------------------------------------------------------------- HMAC secrets and rotation


def test_previous_secret_accepted_with_and_without_kid():
    clock = Clock()
    v = verifier(clock, secrets=[hmac_key(SECRET).verification_key(), hmac_key(OLD_SECRET).verification_key()])
    assert v.verify(bearer(minted(clock, OLD_SECRET))).name == "billing"  # kid names the old secret
    claims = {"iss": "billing", "sub": "billing", "aud": "orders", "iat": T0, "exp": T0 + 60, "jti": "x"}
    assert v.verify(bearer(jwt.encode(claims, OLD_SECRET, algorithm="HS256"))).name == "billing"


def test_identity_fields():
    clock = Clock()
    v = verifier(clock)
    token = minted(clock)
    identity = v.verify(bearer(token))
    claims = jwt.decode(token, options={"verify_signature": False})
    assert identity.name == "billing" and identity.token_id == claims["jti"]
    assert identity.audience == "orders" and identity.algorithm == "HS256"
    assert identity.issued_at == T0 and identity.expires_at == T0 + 600
    assert identity.key_id == hmac_key(SECRET).kid and identity.verified
    with pytest.raises(AttributeError):
        identity.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "missing"),
        (b"", "wrong_scheme"),
        (b"Bearer", "malformed"),
        (b"Basic Zm9vOmJhcg==", "wrong_scheme"),
        (b"Bearer " + b"x" * 9000, "too_large"),
        (b"Bearer a.b", "malformed"),
        (b"Bearer a.b.c.d", "malformed"),
        (b"Bearer a+b.c/d.e", "malformed"),
    ],
)
def test_header_level_reasons(value, reason):
    assert reason_of(verifier(Clock()), value) == reason


def test_unsupported_algorithm_config_refused():
    with pytest.raises(ValueError, match="RS256"):
        TokenVerifier("orders", algorithms=["RS256"])


# ---------------------------------------------------------------- public keys and the trust store


def test_public_key_token_verified_and_cached_until_key_removed():
    clock = Clock()
    key = ed_key()
    trust = TrustStore()
    trust.trust("billing", jwks_document([key.verification_key()]))
    v = verifier(clock, algorithms=["EdDSA"], trust=trust)
    value = bearer(TokenMinter("billing", key, clock=clock).mint("orders"))
    assert v.verify(value).key_id == key.kid
    assert len(v.cache) == 1
    trust.trust("billing", {})  # the key is withdrawn
    assert trust.generation == 1
    assert reason_of(v, value) == "unknown_kid"


def test_issuer_binding():
    clock = Clock()
    key = ed_key()
    trust = TrustStore()
    trust.trust("billing", {key.kid: key.verification_key()})
    v = verifier(clock, algorithms=["EdDSA"], trust=trust)
    # billing's key cannot vouch for "inventory"
    forged = TokenMinter("inventory", key, clock=clock).mint("orders")
    assert reason_of(v, bearer(forged)) == "wrong_issuer"


def write_jwks(path, *keys: SigningKey) -> None:
    path.write_text(json.dumps(jwks_document(k.verification_key() for k in keys)))


async def test_unknown_kid_fetch_is_single_flight_and_rate_limited(tmp_path):
    clock = Clock()
    mono = Clock(100.0)
    old, new = ed_key(), ed_key()
    source = tmp_path / "billing.json"
    write_jwks(source, old)
    trust = TrustStore({"billing": str(source)}, min_refresh_interval=30, clock=mono)
    v = verifier(clock, algorithms=["EdDSA"], trust=trust)

    first = bearer(TokenMinter("billing", old, clock=clock).mint("orders"))
    with pytest.raises(KeysNeeded):
        v.verify(first)  # never loaded: the request must wait for the first load
    assert (await v.verify_after_refresh(first, KeysNeeded("billing", "keys_unavailable"))).name == "billing"
    assert trust.fetches == 1

    write_jwks(source, old, new)
    rotated = [bearer(TokenMinter("billing", new, clock=clock).mint("orders")) for _ in range(10)]
    assert reason_of(v, rotated[0]) == "unknown_kid"  # inside the 30 s window: no fetch, immediate failure
    assert trust.fetches == 1

    mono.now += 31
    needed = KeysNeeded("billing", "unknown_kid")
    results = await asyncio.gather(*(v.verify_after_refresh(value, needed) for value in rotated))
    assert {r.name for r in results} == {"billing"}
    assert trust.fetches == 2  # ten concurrent requests, one fetch

    random_kid = jwt.encode(
        {"iss": "billing", "sub": "billing", "aud": "orders", "iat": T0, "exp": T0 + 60, "jti": "j"},
        ed25519.Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": uuid.uuid4().hex},
    )
    for _ in range(20):
        assert reason_of(v, bearer(random_kid)) == "unknown_kid"
    assert trust.fetches == 2


async def test_failed_or_oversized_fetch_keeps_old_keys(tmp_path):
    mono = Clock(0.0)
    key = ed_key()
    source = tmp_path / "billing.json"
    write_jwks(source, key)
    trust = TrustStore({"billing": str(source)}, min_refresh_interval=1, clock=mono)
    assert await trust.refresh("billing")
    source.write_text(json.dumps({"keys": [{"kty": "oct", "k": "x" * 70_000}]}))
    mono.now += 2
    assert not await trust.refresh("billing")
    assert list(trust.issuer("billing").keys) == [key.kid]
    source.write_text("{not json")
    mono.now += 2
    assert not await trust.refresh("billing")
    assert list(trust.issuer("billing").keys) == [key.kid]


async def test_stale_set_refreshes_in_background(tmp_path):
    clock, mono = Clock(), Clock(0.0)
    key, other = ed_key(), ed_key()
    source = tmp_path / "billing.json"
    write_jwks(source, key)
    trust = TrustStore({"billing": str(source)}, refresh_interval=60, min_refresh_interval=1, clock=mono)
    v = verifier(clock, algorithms=["EdDSA"], trust=trust)
    assert await trust.refresh("billing")
    write_jwks(source, key, other)
    mono.now += 61
    v.verify(bearer(TokenMinter("billing", key, clock=clock).mint("orders")))  # served from the stale set
    await asyncio.sleep(0.05)
    for _ in range(50):
        if trust.fetches == 2:
            break
        await asyncio.sleep(0.01)
    assert trust.fetches == 2
    assert set(trust.issuer("billing").keys) == {key.kid, other.kid}
