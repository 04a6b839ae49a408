"""Which issuers' public keys a verifier trusts, and how they stay fresh.

Trust is bound per issuer: ``SERVICE_JWT_JWKS_URLS=billing=http://billing/.well-known/jwks.json``
means keys from that document verify only tokens whose ``iss`` is ``billing``,
so one service cannot mint tokens in another's name.  A source is an http(s)
URL or a file path.  Static issuers (this service's own keys, or keys handed
to :meth:`TrustStore.trust`) never refresh.

Refresh rules, all per issuer and bounded:

- first use: the key set is loaded once (concurrent requests share one fetch);
- older than ``refresh_interval``: refreshed in the background, the old set
  keeps serving (stale-while-revalidate);
- a token names an unknown ``kid``: one fetch, awaited by the request, at most
  once per ``min_refresh_interval``; inside that window an unknown kid fails
  at once, so random kids cannot force unbounded reloads;
- documents are capped at 64 KiB and 16 keys; a failed fetch keeps the old set.

When a key disappears from a set, :attr:`TrustStore.generation` moves on and
the verifier's cache of verified tokens stops honouring older entries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.instrumentation.utils import suppress_http_instrumentation

from .._redact import redact_url
from ._keys import VerificationKey, parse_jwks

__all__ = ["IssuerKeys", "TrustStore"]

MAX_DOCUMENT_BYTES = 64 * 1024
_log = logging.getLogger("otel_dist.auth")


class IssuerKeys:
    __slots__ = ("attempted_at", "keys", "loaded_at", "source")

    def __init__(self, source: str | None, keys: Mapping[str, VerificationKey] | None = None) -> None:
        self.source = source
        self.keys: dict[str, VerificationKey] = dict(keys or {})
        self.loaded_at: float | None = None if source is not None else 0.0
        self.attempted_at = float("-inf")


class TrustStore:
    def __init__(
        self,
        sources: Mapping[str, str] | None = None,
        *,
        refresh_interval: float = 300.0,
        min_refresh_interval: float = 30.0,
        fetch_timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuers: dict[str, IssuerKeys] = {name: IssuerKeys(src) for name, src in (sources or {}).items()}
        self._refresh_interval = refresh_interval
        self._min_refresh_interval = min_refresh_interval
        self._fetch_timeout = fetch_timeout
        self._clock = clock
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self.generation = 0
        self.fetches = 0

    # ------------------------------------------------------------ lookups

    def issuer(self, name: str) -> IssuerKeys | None:
        return self._issuers.get(name)

    def trust(self, issuer: str, keys: Mapping[str, VerificationKey] | Any) -> None:
        """Trust `keys` (by kid, or a JWKS document) for `issuer`, statically (no refresh)."""
        parsed = parse_jwks(keys) if isinstance(keys, dict) and "keys" in keys else dict(keys)
        current = self._issuers.get(issuer)
        self._replace(issuer, current.keys if current else {}, parsed)
        self._issuers[issuer] = IssuerKeys(None, parsed)

    @property
    def issuers(self) -> list[str]:
        return list(self._issuers)

    def is_stale(self, state: IssuerKeys) -> bool:
        return state.source is not None and (
            state.loaded_at is None or self._clock() - state.loaded_at > self._refresh_interval
        )

    def may_refresh(self, state: IssuerKeys) -> bool:
        """A fetch for an unknown kid is allowed now (never-loaded sets always may)."""
        if state.source is None:
            return False
        if state.loaded_at is None and state.attempted_at == float("-inf"):
            return True
        return self._clock() - state.attempted_at >= self._min_refresh_interval

    # ------------------------------------------------------------ refresh

    async def refresh(self, issuer: str) -> bool:
        """Fetch `issuer`'s keys (shared by concurrent callers); False when rate-limited or failed."""
        state = self._issuers.get(issuer)
        if state is None or state.source is None:
            return False
        loop = asyncio.get_running_loop()
        task = self._inflight.get(issuer)
        if task is None or task.done() or task.get_loop() is not loop:
            if not self.may_refresh(state):
                return False
            state.attempted_at = self._clock()
            task = loop.create_task(self._load(issuer, state))
            self._inflight[issuer] = task
        try:
            await asyncio.wait_for(asyncio.shield(task), self._fetch_timeout + 0.5)
        except Exception:  # noqa: BLE001 - timeouts and fetch errors (logged in _load) alike
            return False
        return state.loaded_at is not None and state.attempted_at <= state.loaded_at

    def refresh_in_background(self, issuer: str) -> None:
        """Start a refresh of a stale set unless one runs or the rate limit says no."""
        state = self._issuers.get(issuer)
        task = self._inflight.get(issuer)
        if state is None or (task is not None and not task.done()) or not self.may_refresh(state):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        state.attempted_at = self._clock()
        self._inflight[issuer] = loop.create_task(self._load(issuer, state))

    async def _load(self, issuer: str, state: IssuerKeys) -> None:
        source = state.source
        assert source is not None
        self.fetches += 1
        try:
            document = await self._read(source)
            keys = parse_jwks(document)
        except Exception as exc:  # noqa: BLE001 - a failed fetch keeps the old keys
            _log.warning(
                "JWKS fetch failed; keeping the previous keys",
                extra={
                    "otel_dist_fields": {
                        "otel_dist.auth.issuer": issuer,
                        "otel_dist.auth.jwks_source": redact_url(source),
                        "error.type": type(exc).__qualname__,
                    }
                },
            )
            return
        self._replace(issuer, state.keys, keys)
        state.keys = keys
        state.loaded_at = self._clock()

    def _replace(self, issuer: str, old: Mapping[str, VerificationKey], new: Mapping[str, VerificationKey]) -> None:
        if any(kid not in new or new[kid] != key for kid, key in old.items()):
            self.generation += 1  # a key went away: cached verifications made with it must go too

    async def _read(self, source: str) -> Any:
        if source.startswith(("http://", "https://")):
            # A third-party host: no CLIENT span and, above all, no traceparent or baggage sent to it.
            with suppress_http_instrumentation():
                return await self._fetch(source)
        path = Path(source.removeprefix("file://"))
        data = await asyncio.to_thread(_read_capped, path)
        return json.loads(data)

    async def _fetch(self, source: str) -> Any:
        async with (
            httpx.AsyncClient(timeout=self._fetch_timeout, follow_redirects=False) as client,
            client.stream("GET", source, headers={"accept": "application/jwk-set+json, application/json"}) as resp,
        ):
            resp.raise_for_status()
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise ValueError("JWKS document too large")
        return json.loads(bytes(body))


def _read_capped(path: Path) -> bytes:
    with path.open("rb") as fh:
        data = fh.read(MAX_DOCUMENT_BYTES + 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ValueError("JWKS document too large")
    return data
