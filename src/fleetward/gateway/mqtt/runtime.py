"""The MQTT transport as a whole, for the app's lifespan: the consumer and, when the gateway
writes the broker's CRL, the CRL publisher."""

from __future__ import annotations

from fleetward.devices.crl import CrlSigner
from fleetward.gateway.mqtt.config import MqttGatewayConfig
from fleetward.gateway.mqtt.consumer import MqttGateway
from fleetward.gateway.mqtt.crl_publisher import CrlPublisher
from fleetward.gateway.websocket import Gateway


class MqttTransport:
    """Start after the telemetry pipeline, stop before it (sessions end first)."""

    def __init__(self, gateway: Gateway, config: MqttGatewayConfig) -> None:
        self.consumer = MqttGateway(gateway, config)
        self.crl: CrlPublisher | None = None
        if config.crl_file is not None:
            platform = gateway.platform
            gateway.ca_certificate()  # the device CA exists before its key signs a CRL
            self.crl = CrlPublisher(
                platform,
                CrlSigner.load(platform.settings, platform.identity.data_key),
                config.crl_file,
                broker_pid_file=config.broker_pid_file,
                poll=config.crl_poll,
            )

    async def start(self) -> None:
        if self.crl is not None:
            await self.crl.start()  # the broker refuses revoked devices before any session
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()
        if self.crl is not None:
            await self.crl.stop()
