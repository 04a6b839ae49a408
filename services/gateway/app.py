"""gateway: the public edge.  Users log in here and read their orders with their bearer token.

- ``POST /register``       ``{"username", "password"}`` -> auth ``POST /users``
- ``POST /login``          ``{"username", "password"}`` -> auth ``POST /login`` (the user access token)
- ``POST /orders``         bearer token; ``{"item", "quantity"}`` -> orders ``POST /orders`` for that user
- ``GET /orders/{id}``     bearer token; introspected at auth, then orders ``GET /orders/{id}``
  (which asks auth for the user): one request, three services.  ``GATEWAY_INTROSPECTION_CACHE_TTL`` and
  orders' ``ORDERS_USER_CACHE_TTL`` let them reuse those answers (off by default).

It takes no service tokens (``public=True``) and sends its own to auth and orders.
When orders' breaker is open, reads answer 503 at once with a JSON body naming it.
Login and register are throttled per submitted username and per client address
(``LOGIN_RATE_LIMIT_PER_USERNAME`` / ``LOGIN_RATE_LIMIT_PER_CLIENT``): 429 with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Annotated, Any

import httpx
from fastapi import Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from otel_dist import EncodableStr, ServiceClient, create_app, downstream, get_logger, throttle
from services._ttl import TTLCache

log = get_logger("services.gateway")
app = create_app("gateway", downstreams=["auth", "orders"], public=True)
Auth = Annotated[ServiceClient, Depends(downstream("auth"))]
Orders = Annotated[ServiceClient, Depends(downstream("orders"))]
bearer = HTTPBearer(auto_error=False)
login_throttle, register_throttle = throttle(app, "login"), throttle(app, "register")
OrderId = Annotated[int, Path(gt=0, le=2**31 - 1)]  # orders' id range: a bad id is a 422 here
# GATEWAY_INTROSPECTION_CACHE_TTL > 0: active introspections, by token digest, reused until the token's
# exp at most: user tokens are signed and unrevocable, so the answer cannot change before then; inactive
# ones are never kept.  Off by default, so that a read shows all three services in its trace.
INTROSPECTION_TTL: float = app.state.settings.introspection_cache_ttl
introspected: TTLCache[bytes, dict[str, Any]] = TTLCache(10_000)


def _safe_to_resend() -> dict[str, str]:
    # Introspection and login change nothing that a resend could duplicate, so they
    # may be retried like a GET: an Idempotency-Key tells the client so.
    return {"idempotency-key": str(uuid.uuid4())}


def relay(response: httpx.Response, *expected: int) -> JSONResponse:
    """Pass a downstream answer through when it is one we expect (success or a client error)."""
    if response.status_code in expected or 400 <= response.status_code < 500:
        return JSONResponse(response.json(), status_code=response.status_code)
    raise HTTPException(502, f"unexpected answer {response.status_code} from a downstream service")


class User(BaseModel):
    id: int
    username: str


async def current_user(
    auth: Auth, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> User:
    unauthorized = HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    if credentials is None:
        raise unauthorized
    key = hashlib.sha256(credentials.credentials.encode()).digest()
    claims = introspected.get(key) if INTROSPECTION_TTL else None
    if claims is None:
        response = await auth.post("/introspect", json={"token": credentials.credentials}, headers=_safe_to_resend())
        if response.status_code != 200:
            raise HTTPException(502, f"auth answered {response.status_code} to an introspection")
        claims = response.json()
        if not claims.get("active"):
            raise unauthorized
        introspected.put(key, claims, min(INTROSPECTION_TTL, float(claims.get("exp", 0)) - time.time()))
    return User(id=int(claims["sub"]), username=claims["username"])


CurrentUser = Annotated[User, Depends(current_user)]


class Credentials(BaseModel):
    # The auth service's contract, checked here so a bad body never costs a downstream call.
    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    password: EncodableStr = Field(min_length=8, max_length=256)


class NewOrder(BaseModel):
    item: EncodableStr = Field(min_length=1, max_length=100)
    quantity: int = Field(default=1, gt=0, le=1000)


Responses = dict[int | str, dict[str, Any]]
THROTTLED: Responses = {429: {"description": "Too many attempts (per username or per client); see Retry-After"}}
BAD_GATEWAY: Responses = {502: {"description": "A downstream service answered unexpectedly"}}
NEEDS_USER: Responses = {401: {"description": "A valid bearer token is required"}}


@app.post("/register", status_code=201, responses={409: {"description": "Username taken"}, **THROTTLED, **BAD_GATEWAY})
async def register(body: Credentials, request: Request, auth: Auth) -> JSONResponse:
    register_throttle.check(request, body.username)
    return relay(await auth.post("/users", json=body.model_dump()), 201)


@app.post("/login", responses={401: {"description": "Invalid username or password"}, **THROTTLED, **BAD_GATEWAY})
async def login(body: Credentials, request: Request, auth: Auth) -> JSONResponse:
    login_throttle.check(request, body.username)
    return relay(await auth.post("/login", json=body.model_dump(), headers=_safe_to_resend()), 200)


@app.post("/orders", status_code=201, responses={**NEEDS_USER, **BAD_GATEWAY})
async def create_order(body: NewOrder, user: CurrentUser, orders: Orders) -> JSONResponse:
    return relay(await orders.post("/orders", json={"user_id": user.id, **body.model_dump()}), 201)


@app.get("/orders/{order_id}", responses={**NEEDS_USER, 404: {"description": "No such order"}, **BAD_GATEWAY})
async def read_order(order_id: OrderId, user: CurrentUser, orders: Orders) -> JSONResponse:
    response = await orders.get(f"/orders/{order_id}")
    if response.status_code == 200 and response.json()["user_id"] != user.id:
        log.info("order of another user refused", order_id=order_id, user_id=user.id)
        raise HTTPException(404, "no such order")  # do not reveal that it exists
    return relay(response, 200)
