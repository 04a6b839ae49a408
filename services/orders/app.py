"""orders: orders in its own database; reading one asks auth who its user is.

Internal: every route needs a service token (the gateway calls it).

- ``POST /orders``        ``{"user_id", "item", "quantity"}`` -> 201 the order
- ``GET /orders/{id}``    the order with ``"user": {"id", "username"}`` (looked up at auth), or 404
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path
from pydantic import BaseModel, Field
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, bindparam, insert, select

from otel_dist import DbSession, EncodableStr, ServiceClient, create_app, downstream, get_logger
from services._ttl import TTLCache

log = get_logger("services.orders")
metadata = MetaData()
orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, nullable=False, index=True),
    Column("item", String(100), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

app = create_app("orders", metadata=metadata, downstreams=["auth"])
MAX_ID = 2**31 - 1  # the Integer column on every database (Postgres int4); larger ids are a 422, never a DB error
OrderId = Annotated[int, Path(gt=0, le=MAX_ID)]
Auth = Annotated[ServiceClient, Depends(downstream("auth"))]
# ORDERS_USER_CACHE_TTL > 0: users by id for that long (no endpoint renames a user, so auth need not be
# asked on every read).  Off by default, so that a read shows all three services in its trace.
USER_TTL: float = app.state.settings.user_cache_ttl
users: TTLCache[int, dict[str, Any]] = TTLCache(10_000)


class NewOrder(BaseModel):
    user_id: int = Field(gt=0, le=MAX_ID)
    item: EncodableStr = Field(min_length=1, max_length=100)
    quantity: int = Field(gt=0, le=1000)


class UserRef(BaseModel):
    id: int
    username: str


class Order(BaseModel):
    id: int
    user_id: int
    item: str
    quantity: int
    created_at: datetime
    user: UserRef | None = None


def _aware(moment: datetime) -> datetime:
    # SQLite hands DateTime(timezone=True) back naive; it was stored in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@app.post("/orders", status_code=201)
async def create_order(body: NewOrder, session: DbSession) -> Order:
    created_at = datetime.now(UTC)
    statement = insert(orders).values(**body.model_dump(), created_at=created_at).returning(orders.c.id)
    order_id = (await session.execute(statement)).scalar_one()
    await session.commit()
    order = Order(id=order_id, created_at=created_at, **body.model_dump())
    log.info("order created", order_id=order.id, user_id=order.user_id)
    return order


# Built once: the read path's statement (SQLAlchemy caches its compiled form; this also skips rebuilding it).
ORDER_BY_ID = select(orders).where(orders.c.id == bindparam("order_id"))


@app.get(
    "/orders/{order_id}",
    responses={404: {"description": "No such order"}, 502: {"description": "auth answered unexpectedly"}},
)
async def read_order(order_id: OrderId, session: DbSession, auth: Auth) -> Order:
    row = (await session.execute(ORDER_BY_ID, {"order_id": order_id})).first()
    await session.close()  # the connection goes back to the pool now, not after the call to auth below
    if row is None:
        raise HTTPException(404, "no such order")
    order = Order(**{**row._mapping, "created_at": _aware(row.created_at)})
    cached = users.get(order.user_id) if USER_TTL else None
    if cached is not None:
        order.user = UserRef.model_validate(cached)
        return order
    response = await auth.get(f"/users/{order.user_id}")
    if response.status_code == 200:
        order.user = UserRef.model_validate(response.json())
        users.put(order.user_id, order.user.model_dump(), USER_TTL)
    elif response.status_code != 404:
        raise HTTPException(502, f"auth answered {response.status_code} to a user lookup")
    return order
