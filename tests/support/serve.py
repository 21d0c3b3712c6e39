"""An ASGI app served by uvicorn on loopback inside the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn


@asynccontextmanager
async def served(app: Any, port: int = 0, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """``app`` served, its lifespan run, until the block ends; yields its base URL (with the
    port the system chose when ``port`` is 0). The server stops after the block's own
    clean-up, so sessions the block closes close against a running server.

    Forwarded headers are left to the app, as ``fleetward serve`` leaves them
    (``proxy_headers=False``): uvicorn's default would rewrite the peer from loopback."""
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=host, port=port, log_config=None, lifespan="on", proxy_headers=False
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server stopped during start-up"
        await asyncio.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        await task
