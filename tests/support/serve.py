"""An ASGI app served by uvicorn on loopback inside the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from fleetward.cli.runtime import server_config


@asynccontextmanager
async def served(app: Any, port: int = 0, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """``app`` served, its lifespan run, until the block ends; yields its base URL (with the
    port the system chose when ``port`` is 0). The server stops after the block's own
    clean-up, so sessions the block closes close against a running server.

    Served as ``fleetward serve`` serves (``cli.runtime.server_config``): forwarded headers
    left to the app, no WebSocket compression, the same message cap."""
    server = uvicorn.Server(server_config(app, host=host, port=port, lifespan="on"))
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
