"""Per-request cost of service-token verification, in microseconds.

    .venv/bin/python -m benchmarks.auth_overhead [--n 20000] [--repeat 5]

Rows:

- ``verify ... cold``: a token never seen before (cache miss: PyJWT's
  ``get_unverified_header`` and ``jwt.decode``, plus for public keys an
  unverified read of ``iss``; the contract's own checks; cache insert); one
  fresh token per call;
- ``verify ... cached``: the same token again (digest + LRU lookup + checks;
  PyJWT is not called);
- ``middleware ...``: the whole ASGI layer around a no-op app, inside a
  recording server span, with a real SDK meter: header scan, exempt check,
  verification, span attributes, outcome tally, scope/state;
- ``jwt.decode`` rows: one bare ``jwt.decode`` with the same required claims
  and strict audience, for scale: the floor under the cold rows;
- ``replay cache`` rows (``SERVICE_JWT_REPLAY_CACHE_SIZE``, off by default): with it on,
  every request carries a new token (``SERVICE_JWT_TOKEN_PER_REQUEST``), so each one is a
  cold verification plus the jti check, against the cached verification of a reused token;
  cache off and on are measured alternately in the same run; plus the caller's cost of
  minting a token per request.

Each row is the median of ``--repeat`` runs; the machine is shared, so read
the numbers as orders of magnitude, and compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from otel_dist._auth import (
    ServiceAuthMiddleware,
    SigningKey,
    TokenMinter,
    TokenVerifier,
    TrustStore,
    hmac_key,
    jwks_document,
)
from otel_dist._auth._keys import public_jwk
from otel_dist._logs import LogSink

SECRET = "benchmark-secret-0123456789abcdef-0123456789"
AUDIENCE = "orders"
CALLER = "billing"


def _asym(alg: str) -> SigningKey:
    private: Any = ed25519.Ed25519PrivateKey.generate() if alg == "EdDSA" else ec.generate_private_key(ec.SECP256R1())
    return SigningKey(public_jwk(private.public_key(), alg)["kid"], alg, private)


def _setup(alg: str, cache_size: int = 100_000) -> tuple[TokenVerifier, TokenMinter]:
    if alg.startswith("HS"):
        key = hmac_key(SECRET, alg)
        verifier = TokenVerifier(AUDIENCE, algorithms=[alg], secrets=[key.verification_key()], cache_size=cache_size)
    else:
        key = _asym(alg)
        trust = TrustStore()
        trust.trust(CALLER, jwks_document([key.verification_key()]))
        verifier = TokenVerifier(AUDIENCE, algorithms=[alg], trust=trust, cache_size=cache_size)
    return verifier, TokenMinter(CALLER, key)


def _time(fn: Callable[[], Any], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def _median(runs: list[float]) -> float:
    return statistics.median(runs)


def _verify_run(alg: str, verifier: TokenVerifier, minter: TokenMinter, n: int, cold_n: int) -> tuple[float, ...]:
    verifier.cache.clear()
    values = iter([f"Bearer {minter.mint(AUDIENCE)}".encode() for _ in range(cold_n)])
    cold = _time(lambda: verifier.verify(next(values)), cold_n)
    value = f"Bearer {minter.mint(AUDIENCE)}".encode()
    verifier.verify(value)
    cached = _time(lambda: verifier.verify(value), n)
    token = value[7:].decode()
    key = minter.key.key if alg.startswith("HS") else minter.key.key.public_key()
    options: Any = {"require": ["iss", "sub", "aud", "iat", "exp", "jti"], "strict_aud": True}
    decode = _time(
        lambda: jwt.decode(token, key, algorithms=[alg], audience=AUDIENCE, leeway=30, options=options), cold_n
    )
    return cold, cached, decode


def bench_verify(alg: str, n: int, repeat: int) -> dict[str, float]:
    verifier, minter = _setup(alg)
    cold_n = n if alg.startswith("HS") else max(1, n // 10)
    runs = [_verify_run(alg, verifier, minter, n, cold_n) for _ in range(repeat)]
    return {
        f"verify {alg} cold (cache miss)": _median([r[0] for r in runs]),
        f"verify {alg} cached": _median([r[1] for r in runs]),
        f"jwt.decode {alg} (PyJWT, no cache)": _median([r[2] for r in runs]),
    }


def bench_replay(n: int, repeat: int) -> dict[str, float]:
    """HS256: cold verification with the replay cache off vs on (alternated), and minting per request."""
    plain, minter = _setup("HS256")
    guarded = TokenVerifier(
        AUDIENCE, algorithms=["HS256"], secrets=[hmac_key(SECRET).verification_key()], replay_cache_size=100_000
    )
    off, on, mint = [], [], []
    for _ in range(repeat):
        for verifier, out in ((plain, off), (guarded, on)):
            verifier.cache.clear()
            values = iter([f"Bearer {minter.mint(AUDIENCE)}".encode() for _ in range(n)])
            out.append(_time(lambda v=verifier, it=values: v.verify(next(it)), n))
        mint.append(_time(lambda: minter.mint(AUDIENCE), n))
    return {
        "verify HS256 new token per request, replay cache off": _median(off),
        "verify HS256 new token per request, replay cache on (100k)": _median(on),
        "mint HS256 token per request (caller side)": _median(mint),
    }


def bench_middleware(n: int, repeat: int) -> dict[str, float]:
    """The ASGI layer around a no-op app, in a recording span, with a real SDK meter."""
    verifier, minter = _setup("HS256")
    tracer = TracerProvider().get_tracer("bench")
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")
    sink = LogSink(service_name=AUDIENCE, environment="bench", stream=open(os.devnull, "w"))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    layer = ServiceAuthMiddleware(app, verifier=verifier, exempt_paths=["/health"], meter=meter, sink=sink)
    value = f"Bearer {minter.mint(AUDIENCE)}".encode()
    headers = [(b"host", b"orders:8000"), (b"user-agent", b"bench"), (b"accept", b"*/*"), (b"authorization", value)]

    def scope() -> dict[str, Any]:
        return {"type": "http", "path": "/orders/1", "raw_path": b"/orders/1", "method": "GET", "headers": headers}

    async def run(call: Callable[[dict[str, Any]], Any], count: int) -> float:
        span = tracer.start_span("GET /orders/{id}")
        token = otel_context.attach(trace.set_span_in_context(span))
        started = time.perf_counter()
        for _ in range(count):
            await call(scope())
        elapsed = time.perf_counter() - started
        otel_context.detach(token)
        span.end()
        return elapsed / count * 1e6

    async def through_layer(s: dict[str, Any]) -> None:
        await layer(s, _receive, _send)

    async def direct(s: dict[str, Any]) -> None:
        await app(s, _receive, _send)

    async def main() -> dict[str, float]:
        with_layer, without = [], []
        for _ in range(repeat):
            without.append(await run(direct, n))
            with_layer.append(await run(through_layer, n))
        rejected = []
        bad = [(b"host", b"orders:8000"), (b"authorization", b"Bearer not.a.token")]
        for _ in range(repeat):
            started = time.perf_counter()
            for _ in range(n // 10):
                await layer(
                    {"type": "http", "path": "/x", "raw_path": b"/x", "method": "GET", "headers": bad},
                    _receive,
                    _send,
                )
            rejected.append((time.perf_counter() - started) / (n // 10) * 1e6)
        return {
            "middleware HS256 cached, minus no-op app": _median(with_layer) - _median(without),
            "middleware rejection (malformed; 401 + log line)": _median(rejected),
        }

    return asyncio.run(main())


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="calls per run (cold asymmetric rows use n/10)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    rows: dict[str, float] = {}
    for alg in ("HS256", "EdDSA", "ES256"):
        rows.update(bench_verify(alg, args.n, args.repeat))
    rows.update(bench_replay(args.n, args.repeat))
    rows.update(bench_middleware(args.n, args.repeat))
    width = max(len(name) for name in rows)
    print(f"{'scenario':<{width}}  {'µs/op':>8}")
    print(f"{'-' * width}  {'-' * 8}")
    for name, micros in rows.items():
        print(f"{name:<{width}}  {micros:>8.2f}")
    print(f"\n(median of {args.repeat} runs, n={args.n}; python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
