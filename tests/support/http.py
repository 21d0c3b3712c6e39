"""In-process HTTP clients for the app (real ASGI, no network)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
