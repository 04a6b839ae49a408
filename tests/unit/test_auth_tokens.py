"""Minting, the token contract, ServiceTokenAuth's flow (httpx MockTransport), keys and settings."""

from __future__ import annotations

import json

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from otel_dist import ConfigError, ServiceTokenAuth, TokenMinter, load_settings, service_auth
from otel_dist._auth import auth_config, hmac_key, jwks_document, load_private_key, load_public_keys
from otel_dist._auth._keys import jwk_thumbprint, parse_jwks

pytestmark = pytest.mark.timeout(5)

SECRET = "unit-test-secret-0123456789abcdefghijkl"
T0 = 1_800_000_000


def pem(key) -> str:  # type: ignore[no-untyped-def]
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


# ---------------------------------------------------------------- minting


def test_minted_token_follows_the_contract():
    minter = TokenMinter("billing", hmac_key(SECRET), lifetime=900, clock=lambda: T0 + 0.7)
    token = minter.mint("orders")
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "typ": "JWT", "kid": hmac_key(SECRET).kid}
    claims = jwt.decode(
        token, SECRET, algorithms=["HS256"], audience="orders", options={"verify_exp": False, "verify_iat": False}
    )
    assert set(claims) == {"iss", "sub", "aud", "iat", "exp", "jti"}
    assert claims["iss"] == claims["sub"] == "billing"
    assert claims["aud"] == "orders"
    assert claims["iat"] == T0 and claims["exp"] == T0 + 900
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16


def test_tokens_cached_per_audience_and_reminted_before_expiry():
    now = [float(T0)]
    minter = TokenMinter("billing", hmac_key(SECRET), lifetime=3600, clock=lambda: now[0])
    first = minter.token("orders")
    assert minter.token("orders") == first
    assert minter.token("inventory") != first
    now[0] += 3600 - 301  # more than the 5-minute margin left
    assert minter.token("orders") == first
    now[0] += 2  # inside the margin: a new token before the old one expires
    second = minter.token("orders")
    assert second != first
    assert minter.token("orders", fresh=True) != second


def test_short_lifetime_margin_is_a_quarter():
    now = [float(T0)]
    minter = TokenMinter("billing", hmac_key(SECRET), lifetime=40, clock=lambda: now[0])
    first = minter.token("orders")
    now[0] += 29
    assert minter.token("orders") == first
    now[0] += 2
    assert minter.token("orders") != first


# ---------------------------------------------------------------- ServiceTokenAuth flow


def run(statuses: list[int], method: str = "POST") -> tuple[httpx.Response, list[httpx.Request]]:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        # httpx resends the same Request object: keep a copy as it was on the wire
        sent.append(httpx.Request(request.method, request.url, headers=request.headers, content=request.content))
        status = statuses[min(len(sent), len(statuses)) - 1]
        challenge = {"www-authenticate": 'Bearer error="invalid_token"'} if status == 401 else None
        return httpx.Response(status, headers=challenge)

    auth = ServiceTokenAuth("billing", "orders", secret=SECRET)
    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as client:
        response = client.request(method, "http://orders/x", json={"a": 1})
    return response, sent


def test_success_sends_once_with_bearer_token():
    response, sent = run([200])
    assert response.status_code == 200 and len(sent) == 1
    scheme, token = sent[0].headers["authorization"].split(" ")
    assert scheme == "Bearer"
    assert jwt.decode(token, SECRET, algorithms=["HS256"], audience="orders")["sub"] == "billing"


def test_one_401_remints_and_resends_the_body():
    response, sent = run([401, 200])
    assert response.status_code == 200 and len(sent) == 2
    assert sent[0].headers["authorization"] != sent[1].headers["authorization"]
    assert sent[0].content == sent[1].content == b'{"a":1}'


def test_repeated_401_stops_after_one_resend():
    response, sent = run([401, 401, 401, 401])
    assert response.status_code == 401 and len(sent) == 2


@pytest.mark.parametrize("status", [403, 500, 503])
def test_other_errors_are_not_resent(status):
    response, sent = run([status, 200])
    assert response.status_code == status and len(sent) == 1


def test_auth_constructor_rules():
    with pytest.raises(ValueError):
        ServiceTokenAuth("billing", "orders")
    with pytest.raises(ValueError):
        ServiceTokenAuth("billing", "orders", secret=SECRET, private_key="x")
    with pytest.raises(ValueError, match="minter"):
        ServiceTokenAuth("inventory", "orders", minter=TokenMinter("billing", hmac_key(SECRET)))
    with pytest.raises(ConfigError, match="32 bytes"):
        ServiceTokenAuth("billing", "orders", secret="short")
    assert SECRET not in repr(ServiceTokenAuth("billing", "orders", secret=SECRET))


def test_eddsa_auth_from_private_key():
    key = ed25519.Ed25519PrivateKey.generate()
    auth = ServiceTokenAuth("billing", "orders", private_key=pem(key), algorithm="EdDSA")
    token = auth.minter.token("orders")
    assert jwt.decode(token, key.public_key(), algorithms=["EdDSA"], audience="orders")["iss"] == "billing"


def test_service_auth_from_settings():
    assert (
        service_auth("orders", settings=load_settings({"ENVIRONMENT": "test"}, service_name="billing")) is None
    )  # dev, no secret
    disabled = load_settings({"ENVIRONMENT": "test"}, service_name="billing", jwt_secret=SECRET, auth_enabled=False)
    assert service_auth("orders", settings=disabled) is None
    auth = service_auth(
        "orders", settings=load_settings({"ENVIRONMENT": "test"}, service_name="billing", jwt_secret=SECRET)
    )
    assert auth is not None and auth.issuer == "billing" and auth.audience == "orders"


# ---------------------------------------------------------------- keys


def test_rfc8037_thumbprint():
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert jwk_thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_private_key_checks_never_echo_the_key():
    ed = pem(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(ConfigError, match="for EdDSA but SERVICE_JWT_ALGORITHM is ES256"):
        load_private_key(ed, "ES256")
    p384 = pem(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ConfigError, match="unsupported key type") as err:
        load_private_key(p384, "ES256")
    assert "BEGIN" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_private_key("garbage-key-material", "EdDSA")
    assert "garbage" not in str(err.value)
    key = load_private_key(ed, "EdDSA")
    assert "BEGIN" not in repr(key) and key.kid == key.public_jwk()["kid"]  # type: ignore[index]


def test_pem_as_hmac_secret_refused():
    public = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(ConfigError, match="looks like a public/private key"):
        hmac_key(public)


def test_parse_jwks_takes_only_public_signing_keys():
    good = load_private_key(pem(ed25519.Ed25519PrivateKey.generate()), "EdDSA")
    es = load_private_key(pem(ec.generate_private_key(ec.SECP256R1())), "ES256")
    doc = jwks_document([good.verification_key(), es.verification_key()])
    with_private = dict(doc["keys"][0], d="AAAA", kid="with-d")
    no_kid = {k: v for k, v in doc["keys"][0].items() if k != "kid"}
    doc["keys"] += [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "rsa"},
        dict(doc["keys"][0], kid="enc", use="enc"),
        dict(doc["keys"][0], kid="wrong-alg", alg="ES256"),
        dict(doc["keys"][0], kid="bad-x", x="AAAA"),
        dict(doc["keys"][0], kid="k" * 500),
        with_private,
        no_kid,
        "not a key",
    ]
    keys = parse_jwks(doc)
    assert set(keys) == {good.kid, es.kid, "with-d"}
    assert isinstance(keys["with-d"].key, ed25519.Ed25519PublicKey)  # d dropped: never a private key
    with pytest.raises(ValueError):
        parse_jwks({"keys": "nope"})


def test_jwks_capped_at_16_keys():
    keys = [load_private_key(pem(ed25519.Ed25519PrivateKey.generate()), "EdDSA") for _ in range(20)]
    assert len(parse_jwks(jwks_document(k.verification_key() for k in keys))) == 16


def test_load_public_keys_reads_several_pem_blocks():
    keys = [ed25519.Ed25519PrivateKey.generate() for _ in range(2)]
    text = "\n".join(
        k.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
        for k in keys
    )
    assert len(load_public_keys(text)) == 2
    with pytest.raises(ConfigError):
        load_public_keys("no pem here")


# ---------------------------------------------------------------- settings


def test_auth_settings_rows():
    ed = pem(ed25519.Ed25519PrivateKey.generate())
    env = {
        "OTEL_SERVICE_NAME": "orders",
        "SERVICE_JWT_ALGORITHM": "EdDSA",
        "SERVICE_JWT_ALLOWED_ALGORITHMS": "EdDSA, HS256",
        "JWT_SECRET_KEY": SECRET,
        "SERVICE_JWT_PRIVATE_KEY": ed.replace("\n", "\\n"),
        "SERVICE_JWT_JWKS_URLS": "billing=http://billing:8000/.well-known/jwks.json,audit=/etc/keys/audit.json",
        "SERVICE_JWT_CACHE_SIZE": "50",
        "ENVIRONMENT": "test",  # plain-http JWKS URLs are refused in production
    }
    s = load_settings(env)
    assert s.jwt_allowed_algorithms == ("EdDSA", "HS256")
    assert s.jwt_private_key == ed.strip()
    assert dict(s.jwt_jwks_urls) == {
        "billing": "http://billing:8000/.well-known/jwks.json",
        "audit": "/etc/keys/audit.json",
    }
    dump = json.dumps(s.redacted(), default=str)
    assert SECRET not in dump and "PRIVATE KEY" not in dump
    config = auth_config(s)
    assert config.enabled and config.signing_key is not None and config.signing_key.alg == "EdDSA"
    assert config.algorithms == {"EdDSA", "HS256"} and len(config.hmac_keys) == 1 and len(config.published) == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SERVICE_JWT_ALLOWED_ALGORITHMS": "HS256,none"}, "SERVICE_JWT_ALLOWED_ALGORITHMS"),
        ({"SERVICE_JWT_ALGORITHM": "EdDSA", "SERVICE_JWT_SECRET": "x" * 31}, "at least 32 bytes"),
        ({"SERVICE_JWT_PREVIOUS_SECRET": "x" * 10}, "SERVICE_JWT_PREVIOUS_SECRET: too short"),
        ({"SERVICE_JWT_JWKS_URLS": "billing"}, "SERVICE_JWT_JWKS_URLS"),
    ],
)
def test_auth_settings_refused(env, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_settings(env)
    assert "x" * 10 not in str(err.value)


def test_production_with_asymmetric_key_starts():
    ed = pem(ed25519.Ed25519PrivateKey.generate())
    s = load_settings({"ENVIRONMENT": "production", "SERVICE_JWT_ALGORITHM": "EdDSA", "SERVICE_JWT_PRIVATE_KEY": ed})
    assert auth_config(s).enabled
