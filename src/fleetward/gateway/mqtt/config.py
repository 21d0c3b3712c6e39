"""How the gateway reaches the broker (see ``docs/mqtt.md`` for the matching settings)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Final

DEFAULT_CLIENT_ID: Final = "fleetward-gateway"


@dataclass(frozen=True, slots=True)
class MqttGatewayConfig:
    """The gateway's connection to the broker's service listener.

    ``server_ca`` verifies the broker's certificate; ``certificate``/``key`` are the gateway's
    own service identity (CN = the username the broker's service ACL names). TLS is not
    optional: there is no setting for a plain connection."""

    host: str
    port: int
    server_ca: Path
    certificate: Path
    key: Path
    client_id: str = DEFAULT_CLIENT_ID
    keepalive_s: int = 30
    # Frames queued per device session before newer ones are dropped (the device, getting no
    # reply, retransmits with the same sequence).
    session_queue: int = 64
    # Where the device CA's CRL is written for the broker, how often the store is re-read
    # for new revocations, and the broker's pid file (SIGHUP reloads the CRL). None: the
    # broker is reloaded by something else (e.g. a sidecar watching the file).
    crl_file: Path | None = None
    crl_poll: timedelta = timedelta(seconds=2)
    broker_pid_file: Path | None = None

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.server_ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.certificate), str(self.key))
        return context
