"""The one-table database the database tests share, and their instrumentation reset."""

import pytest
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from sqlalchemy import Column, Integer, MetaData, String, Table

metadata = MetaData()
notes = Table("notes", metadata, Column("id", Integer, primary_key=True), Column("text", String(100)))


@pytest.fixture(autouse=True)
def fresh_sqlalchemy_instrumentation():
    """The contrib instrumentor keeps the tracer of its first instrument(); each test gets its own."""
    yield
    if SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry:
        SQLAlchemyInstrumentor().uninstrument()
