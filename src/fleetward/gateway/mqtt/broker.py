"""Mosquitto configuration: the broker half of the MQTT transport's security.

Two TLS listeners, each trusting one CA and enforcing its own ACL
(``per_listener_settings true``):

* the **device listener** trusts only the platform device CA, requires a client certificate,
  takes the username from the certificate's CN (the device id), checks the device CA's CRL,
  and applies pattern ACLs that confine every device to ``fleetward/v1/devices/<own id>/``;
* the **service listener** trusts only the service CA (:mod:`.pki`) and lets the gateway's
  identity read every device's upward topics and write every device's downward topics.

A certificate minted by the device CA never reaches the service listener's rights, and a
device certificate whose CN matched the gateway's name would still get only device patterns.
Retained messages are off (a retained frame would be replayed to every new subscriber), and
packets above ``max_packet_bytes`` are refused by the broker before the gateway sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fleetward.gateway.mqtt.topics import DEVICE_READS, DEVICE_WRITES, GATEWAY_READS, pattern

DEFAULT_GATEWAY_USERNAME: Final = "fleetward-gateway"
# Topic, headers and properties on top of the largest frame the gateway accepts.
PACKET_OVERHEAD_BYTES: Final = 1024


@dataclass(frozen=True, slots=True)
class BrokerLayout:
    """Where the broker listens and the files it reads. Paths must be absolute."""

    host: str
    device_port: int
    service_port: int
    device_ca: Path  # the platform device CA certificate (PEM)
    device_crl: Path  # its CRL (PEM), rewritten on revocation; the broker reloads on SIGHUP
    service_ca: Path
    server_certificate: Path  # the broker's own certificate, from the service CA
    server_key: Path
    device_acl: Path
    service_acl: Path
    pid_file: Path
    log_file: Path
    max_frame_bytes: int = 64 * 1024
    gateway_username: str = DEFAULT_GATEWAY_USERNAME
    # Messages held for a slow subscriber (the gateway) before the broker drops them.
    max_queued_messages: int = 100_000
    # Mosquitto started as root switches to this user (its default: "mosquitto"), which must
    # be able to read the files above. None: the default.
    run_as_user: str | None = None


def device_acl() -> str:
    """Pattern ACL for every device: ``%u`` is the CN of its certificate (its device id)."""
    lines = ["# Devices: each only under its own id (%u = certificate CN = device id)."]
    lines += [f"pattern write {pattern(channel, '%u')}" for channel in DEVICE_WRITES]
    lines += [f"pattern read {pattern(channel, '%u')}" for channel in DEVICE_READS]
    return "\n".join(lines) + "\n"


def service_acl(gateway_username: str) -> str:
    """The gateway reads what devices send and writes what devices receive; nothing else."""
    _check_token(gateway_username)
    lines = [f"user {gateway_username}"]
    lines += [f"topic read {pattern(channel, '+')}" for channel in GATEWAY_READS]
    lines += [f"topic write {pattern(channel, '+')}" for channel in DEVICE_READS]
    return "\n".join(lines) + "\n"


def render_conf(layout: BrokerLayout) -> str:
    paths = (
        layout.device_ca,
        layout.device_crl,
        layout.service_ca,
        layout.server_certificate,
        layout.server_key,
        layout.device_acl,
        layout.service_acl,
        layout.pid_file,
        layout.log_file,
    )
    for path in paths:
        if not path.is_absolute():
            raise ValueError("broker paths must be absolute")
        _check_token(str(path))
    _check_token(layout.host)
    user = [] if layout.run_as_user is None else [f"user {_token(layout.run_as_user)}"]
    tls = [
        f"certfile {layout.server_certificate}",
        f"keyfile {layout.server_key}",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        # The client id is the certificate's identity too, whatever the CONNECT says: client
        # ids are one namespace across listeners, and a CONNECT naming a connected client id
        # disconnects its holder, so any device could otherwise knock another vehicle (or the
        # gateway) off the broker.
        "use_username_as_clientid true",
        "allow_anonymous false",
    ]
    return "\n".join(
        [
            "# Rendered by fleetward.gateway.mqtt.broker; see docs/mqtt.md.",
            "per_listener_settings true",
            "persistence false",
            "retain_available false",
            f"max_packet_size {layout.max_frame_bytes + PACKET_OVERHEAD_BYTES}",
            f"max_queued_messages {layout.max_queued_messages}",
            *user,
            f"pid_file {layout.pid_file}",
            f"log_dest file {layout.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "",
            "# Devices: the platform device CA only, revocation checked against its CRL.",
            f"listener {layout.device_port} {layout.host}",
            f"cafile {layout.device_ca}",
            f"crlfile {layout.device_crl}",
            *tls,
            f"acl_file {layout.device_acl}",
            "",
            "# Services (the gateway): the service CA only.",
            f"listener {layout.service_port} {layout.host}",
            f"cafile {layout.service_ca}",
            *tls,
            f"acl_file {layout.service_acl}",
            "",
        ]
    )


def write_config(layout: BrokerLayout, conf_path: Path) -> None:
    """Write mosquitto.conf and both ACL files (the certificates and CRL are written by
    their owners: :mod:`.pki`, :mod:`fleetward.devices.crl`)."""
    layout.device_acl.write_text(device_acl())
    layout.service_acl.write_text(service_acl(layout.gateway_username))
    conf_path.write_text(render_conf(layout))


def _token(value: str) -> str:
    _check_token(value)
    return value


def _check_token(value: str) -> None:
    # Mosquitto's configuration is line- and space-separated: a value with whitespace (or a
    # newline) would add options of its own.
    if not value or any(ch.isspace() for ch in value) or "#" in value:
        raise ValueError("broker configuration values must be single tokens")
