"""A real Mosquitto broker for the MQTT tests, configured exactly as the gateway renders it.

``start_broker`` writes the device CA, its CRL, the service CA, the broker's certificate,
mosquitto.conf and both ACL files into a directory, starts ``/usr/sbin/mosquitto`` on two free
loopback ports and waits until both listen. A missing binary fails the test (never skips):
the MQTT guarantees are only shown against the real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509

from fleetward.core.clock import Clock
from fleetward.gateway.mqtt.broker import BrokerLayout, write_config
from fleetward.gateway.mqtt.config import MqttGatewayConfig
from fleetward.gateway.mqtt.pki import ServiceCa, pem, write_pem

MOSQUITTO = Path("/usr/sbin/mosquitto")
HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Broker:
    layout: BrokerLayout
    service_ca: ServiceCa
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def broker_ca(self) -> Path:
        """What clients trust to authenticate the broker."""
        return self.layout.service_ca

    def gateway_config(self, **overrides: object) -> MqttGatewayConfig:
        identity = self.service_ca.client(self.layout.gateway_username)
        identity.write(self.directory / "gateway.pem", self.directory / "gateway.key")
        return MqttGatewayConfig(
            host=HOST,
            port=self.layout.service_port,
            server_ca=self.broker_ca,
            certificate=self.directory / "gateway.pem",
            key=self.directory / "gateway.key",
            **overrides,  # type: ignore[arg-type]
        )

    def reload(self) -> None:
        os.kill(self.process.pid, signal.SIGHUP)

    def log(self) -> str:
        return self.layout.log_file.read_text() if self.layout.log_file.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def launch_broker(
    directory: Path, *, device_ca: x509.Certificate, crl_pem: bytes, clock: Clock
) -> Broker:
    """Write the files and start the process (not yet waited for)."""
    if not MOSQUITTO.exists():
        pytest.fail(f"{MOSQUITTO} is required for the MQTT tests (apt-get install mosquitto)")
    directory.mkdir(parents=True, exist_ok=True)
    service_ca = ServiceCa.generate(clock)
    layout = BrokerLayout(
        host=HOST,
        device_port=free_port(),
        service_port=free_port(),
        device_ca=directory / "device-ca.pem",
        device_crl=directory / "device-crl.pem",
        service_ca=directory / "service-ca.pem",
        server_certificate=directory / "broker.pem",
        server_key=directory / "broker.key",
        device_acl=directory / "devices.acl",
        service_acl=directory / "services.acl",
        pid_file=directory / "mosquitto.pid",
        log_file=directory / "mosquitto.log",
        # Started as root, Mosquitto would switch to "mosquitto", who cannot read our keys.
        run_as_user=pwd.getpwuid(os.geteuid()).pw_name,
    )
    write_pem(layout.device_ca, pem(device_ca), 0o644)
    write_pem(layout.device_crl, crl_pem, 0o644)
    write_pem(layout.service_ca, pem(service_ca.certificate), 0o644)
    service_ca.server([HOST, "localhost"]).write(layout.server_certificate, layout.server_key)
    conf = directory / "mosquitto.conf"
    write_config(layout, conf)
    process = subprocess.Popen(  # noqa: S603 - a fixed binary and our own config file
        [str(MOSQUITTO), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return Broker(layout, service_ca, directory, process)


@contextlib.asynccontextmanager
async def start_broker(
    directory: Path, *, device_ca: x509.Certificate, crl_pem: bytes, clock: Clock
) -> AsyncIterator[Broker]:
    broker = launch_broker(directory, device_ca=device_ca, crl_pem=crl_pem, clock=clock)
    layout, process = broker.layout, broker.process
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            for port in (layout.device_port, layout.service_port):
                while not await _listening(port):
                    if process.poll() is not None:
                        pytest.fail(f"mosquitto exited at start-up:\n{broker.log()}")
                    await asyncio.sleep(0.02)
        yield broker
    finally:
        broker.stop()


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _connect_packet(client_id: str) -> bytes:
    raw = client_id.encode()
    # MQTT 5 CONNECT: protocol name, level 5, clean start, keepalive 60, no properties.
    variable = b"\x00\x04MQTT\x05\x02\x00\x3c\x00"
    payload = len(raw).to_bytes(2, "big") + raw
    remaining = len(variable) + len(payload)
    return bytes([0x10, remaining]) + variable + payload


async def tls_probe(port: int, context: ssl.SSLContext, client_id: str = "probe") -> str:
    """Open TLS to the broker and send an MQTT CONNECT: ``"connack"`` when the broker
    answers, else the TLS alert that refused us (e.g. ``SSLV3_ALERT_CERTIFICATE_REVOKED``)
    or ``"closed"``.

    TLS 1.2 only: there the broker judges the client certificate inside the handshake, so its
    alert always reaches us (under TLS 1.3 it comes after the handshake and races the close).
    A blocking socket in a thread, for the same reason."""
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return await asyncio.to_thread(_probe, port, context, client_id)


def _probe(port: int, context: ssl.SSLContext, client_id: str) -> str:
    try:
        with (
            socket.create_connection((HOST, port), timeout=START_TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname=HOST) as tls,
        ):
            tls.sendall(_connect_packet(client_id))
            first = tls.recv(1)
    except ssl.SSLError as error:
        return str(error.reason)
    except OSError:
        return "closed"
    return "connack" if first == b"\x20" else "closed"


async def puback_reason(port: int, context: ssl.SSLContext, client_id: str, topic: str) -> str:
    """Publish one QoS 1 message and return the reason of the broker's MQTT 5 PUBACK (e.g.
    ``"Not authorized"``), which aiomqtt does not expose."""
    return await asyncio.to_thread(_puback_reason, port, context, client_id, topic)


def _puback_reason(port: int, context: ssl.SSLContext, client_id: str, topic: str) -> str:
    reasons: list[str] = []
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    client.tls_set_context(context)
    client.on_publish = lambda _client, _userdata, _mid, reason, _properties: reasons.append(
        str(reason)
    )
    client.connect(HOST, port)
    client.loop_start()
    try:
        client.publish(topic, b"probe", qos=1).wait_for_publish(START_TIMEOUT_S)
    finally:
        client.disconnect()
        client.loop_stop()
    return reasons[0] if reasons else "no puback"
