"""A store error reaches the client as a problem: busy is a retryable 503, anything else an
opaque 500 (and never the database's own message)."""

from __future__ import annotations

import sqlite3

import pytest
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from fleetward.api import problems
from support.http import client_for


def _app(error: Exception) -> FastAPI:
    app = FastAPI()
    problems.install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return app


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (
            OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked")),
            503,
        ),
        (PoolTimeout("QueuePool limit reached"), 503),
        (
            OperationalError("SELECT 1", {}, sqlite3.OperationalError("no such table: secret_t")),
            500,
        ),
    ],
)
async def test_store_errors_are_problems(error: Exception, status: int) -> None:
    async with client_for(_app(error)) as client:
        response = await client.get("/boom")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret_t" not in response.text and "SELECT" not in response.text
    if status == 503:
        assert response.headers["retry-after"] == "1"
        assert response.json()["type"] == "urn:fleetward:problem:store-busy"
