"""The server's listening socket, bound here so that its TCP options are ours to set.

``TCP_USER_TIMEOUT`` (Linux): the kernel aborts a connection whose sent data stays
unacknowledged, or whose peer keeps its receive window shut, for longer than
``Settings.tcp_user_timeout_seconds``. Accepted connections inherit it from the listening
socket. A vehicle (or anyone holding a device credential) that stops reading its WebSocket has
its session closed by the gateway's send timeout, but the connection under it would stay: its
close frame and the transport's close both wait for buffers the peer never drains, and the
peer's kernel keeps acknowledging zero-window probes. Without this, one credential could hold
one connection (a file descriptor and its buffers) per reconnect, for ever.
"""

from __future__ import annotations

import socket
import sys

import uvicorn

from fleetward.observability.logging import get_logger
from fleetward.settings import Settings

logger = get_logger(__name__)


def listening_sockets(config: uvicorn.Config, settings: Settings) -> list[socket.socket]:
    """The bound listening socket of ``config`` (host and port), with the TCP user timeout
    set where the platform has the option (Linux); elsewhere a warning says it is not."""
    listener = config.bind_socket()
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is None:
        logger.warning("serve.tcp_user_timeout_unsupported", platform=sys.platform)
        return [listener]
    milliseconds = round(settings.tcp_user_timeout_seconds * 1000)
    listener.setsockopt(socket.IPPROTO_TCP, option, milliseconds)
    return [listener]
