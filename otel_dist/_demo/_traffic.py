"""The demo's traffic: users, requests through the gateway, the fault phase, progress lines.

Also reads the gateway's breaker transitions (for orders) from its JSON log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from .._auth import service_auth
from .._settings import load_settings
from ._model import DemoError, DemoUser, Outcome, Traffic, _DemoState


class _Traffic(_DemoState):
    """Driving traffic through the gateway while orders fails for a while."""

    async def _drive(self) -> Traffic:
        opts = self.options
        gateway = self.services["gateway"].url
        orders_url = self.services["orders"].url
        # The demo calls orders' admin route as a service of its own, with the shared secret.
        admin = service_auth("orders", settings=load_settings({}, service_name="demo", jwt_secret=self.secret))
        traffic = Traffic()
        rng = random.Random()
        async with httpx.AsyncClient(base_url=gateway, timeout=10.0) as client:
            users = await self._setup_users(client, opts.users)
            traffic.started = time.monotonic()
            end = traffic.started + opts.duration
            stop = asyncio.Event()

            async def worker(pace: float) -> None:
                next_at = time.monotonic() + rng.random() * pace
                while not stop.is_set():
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if time.monotonic() >= end:
                        return
                    next_at += pace
                    traffic.outcomes.append(await self._one_request(client, users, rng, traffic.started))

            async def faults() -> None:
                on_at = traffic.started + opts.fault_window[0] * opts.duration
                off_at = traffic.started + opts.fault_window[1] * opts.duration
                async with httpx.AsyncClient(base_url=orders_url, auth=admin, timeout=5.0) as orders:
                    await asyncio.sleep(max(0.0, on_at - time.monotonic()))
                    (await orders.post("/_faults", json={"error_rate": 1.0})).raise_for_status()
                    traffic.fault_on_at = time.monotonic() - traffic.started
                    await asyncio.sleep(max(0.0, off_at - time.monotonic()))
                    (await orders.post("/_faults", json={"error_rate": 0.0})).raise_for_status()
                    traffic.fault_off_at = time.monotonic() - traffic.started

            async def progress() -> None:
                seen = 0
                log_offset = 0
                state = "closed"
                while time.monotonic() < end:
                    await asyncio.sleep(1.0)
                    elapsed = time.monotonic() - traffic.started
                    batch = traffic.outcomes[seen:]
                    seen += len(batch)
                    found, log_offset = _read_transitions(self.services["gateway"].log_path, log_offset)
                    if found:
                        state = found[-1][2]
                    counts = _classify(traffic.outcomes)
                    fault = "FAILING" if traffic.fault_on_at is not None and traffic.fault_off_at is None else "ok"
                    self.say(
                        f"  {min(elapsed, opts.duration):5.1f}s  sent {len(traffic.outcomes):4d} "
                        f"(+{len(batch):3d})  ok {counts['ok']:4d}  4xx {counts['expected 4xx']:3d}  "
                        f"breaker-503 {counts['503 breaker open']:3d}  other-5xx {counts['other 5xx']:3d}  "
                        f"| orders {fault:<7} | gateway->orders breaker {state}"
                    )

            workers = max(1, min(8, round(opts.rate / 4)))
            pace = workers / max(opts.rate, 0.1)
            tasks = [asyncio.create_task(worker(pace)) for _ in range(workers)]
            tasks.append(asyncio.create_task(faults()))
            tasks.append(asyncio.create_task(progress()))
            try:
                await asyncio.gather(*tasks)
            finally:
                stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return traffic

    async def _setup_users(self, client: httpx.AsyncClient, count: int) -> list[DemoUser]:
        users: list[DemoUser] = []
        tag = secrets.token_hex(3)
        for i in range(count):
            credentials = {"username": f"demo-{tag}-{i}", "password": secrets.token_urlsafe(12)}
            response = await client.post("/register", json=credentials)
            if response.status_code != 201:
                raise DemoError(f"registering a user failed: {response.status_code} {response.text[:200]}")
            login = await client.post("/login", json=credentials)
            if login.status_code != 200:
                raise DemoError(f"logging in failed: {login.status_code} {login.text[:200]}")
            token = login.json()["access_token"]
            user = DemoUser(credentials, {"authorization": f"Bearer {token}"}, [])
            created = await client.post("/orders", json={"item": "welcome kit", "quantity": 1}, headers=user.headers)
            if created.status_code != 201:
                raise DemoError(f"creating an order failed: {created.status_code} {created.text[:200]}")
            user.orders.append(created.json()["id"])
            users.append(user)
        return users

    async def _one_request(
        self, client: httpx.AsyncClient, users: list[DemoUser], rng: random.Random, started: float
    ) -> Outcome:
        user = rng.choice(users)
        roll = rng.random()
        if roll < 0.65:
            op, method, path = "read order", "GET", f"/orders/{rng.choice(user.orders)}"
            kwargs: dict[str, Any] = {"headers": user.headers}
        elif roll < 0.85:
            op, method, path = "create order", "POST", "/orders"
            item = rng.choice(["book", "lamp", "mug", "chair", "pen", "plant"])
            kwargs = {"headers": user.headers, "json": {"item": item, "quantity": rng.randint(1, 5)}}
        elif roll < 0.90:
            other = [u for u in users if u is not user] or [user]
            op, method, path = "read other's order", "GET", f"/orders/{rng.choice(rng.choice(other).orders)}"
            kwargs = {"headers": user.headers}
        elif roll < 0.95:
            op, method, path = "bad token", "GET", f"/orders/{rng.choice(user.orders)}"
            kwargs = {"headers": {"authorization": "Bearer not-a-token"}}
        else:
            op, method, path = "login", "POST", "/login"
            kwargs = {"json": user.credentials}
        t0 = time.monotonic()
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            return Outcome(t0 - started, op, 0, time.monotonic() - t0, error=type(exc).__name__)
        seconds = time.monotonic() - t0
        trace_id = _trace_id(response.headers.get("traceresponse"))
        error = None
        if response.status_code == 503:
            with contextlib.suppress(ValueError):
                error = response.json().get("error")
        if op == "create order" and response.status_code == 201:
            user.orders.append(response.json()["id"])
        return Outcome(t0 - started, op, response.status_code, seconds, error, trace_id)


def _classify(outcomes: list[Outcome]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for o in outcomes:
        if o.status in (200, 201):
            counts["ok"] += 1
        elif o.status == 0:
            counts["transport error"] += 1
        elif o.error == "dependency_unavailable":
            counts["503 breaker open"] += 1
        elif o.status >= 500:
            counts["other 5xx"] += 1
        else:
            counts["expected 4xx"] += 1
    return counts


def _trace_id(traceresponse: str | None) -> str | None:
    parts = (traceresponse or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def _read_transitions(path: Path, offset: int) -> tuple[list[tuple[float, str, str]], int]:
    """Breaker transitions logged (JSON lines) after byte `offset`: (epoch, from, to), new offset."""
    found: list[tuple[float, str, str]] = []
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return found, offset
    complete = data[: data.rfind(b"\n") + 1]
    for raw in complete.splitlines():
        if b"circuit_breaker.to" not in raw:
            continue
        with contextlib.suppress(ValueError, KeyError):
            line = json.loads(raw)
            if line.get("otel_dist.target") == "orders":
                ts = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
                found.append((ts, line["otel_dist.circuit_breaker.from"], line["otel_dist.circuit_breaker.to"]))
    return found, offset + len(complete)


def _breaker_transitions(path: Path, started_monotonic: float) -> list[tuple[float, str, str]]:
    found, _ = _read_transitions(path, 0)
    # Log timestamps are wall-clock; the run's time axis starts at the first request.
    wall_start = time.time() - (time.monotonic() - started_monotonic)
    return [(ts - wall_start, a, b) for ts, a, b in found]
