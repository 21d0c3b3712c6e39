"""The server's listening socket: the kernel aborts a connection whose peer stopped reading."""

from __future__ import annotations

import errno
import socket
import time

import pytest
import uvicorn

from fleetward.cli.listener import listening_sockets
from fleetward.settings import Settings

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "TCP_USER_TIMEOUT"), reason="TCP_USER_TIMEOUT is Linux's"
)


def _listener(seconds: float) -> socket.socket:
    config = uvicorn.Config(app=None, host="127.0.0.1", port=0)  # type: ignore[arg-type]
    (listener,) = listening_sockets(config, Settings(tcp_user_timeout_seconds=seconds))
    listener.listen()  # the server does this when it starts serving on the socket
    return listener


def test_accepted_connections_carry_the_user_timeout() -> None:
    listener = _listener(30)
    with listener, socket.create_connection(listener.getsockname()[:2]) as _client:
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000


def test_a_peer_that_stops_reading_is_cut_off_by_the_kernel() -> None:
    listener = _listener(1)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with listener, client:
        client.connect(listener.getsockname()[:2])
        accepted, _ = listener.accept()
        accepted.setblocking(False)
        with accepted:
            # The client reads nothing: its window shuts, and the server's writes stop.
            deadline = time.monotonic() + 30
            with pytest.raises(TimeoutError) as error:  # noqa: PT012 - the loop is the act
                while time.monotonic() < deadline:
                    try:
                        accepted.send(b"x" * 65_536)
                    except BlockingIOError:
                        time.sleep(0.05)
            assert error.value.errno == errno.ETIMEDOUT  # aborted, not just slow
