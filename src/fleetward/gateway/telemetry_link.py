"""Joins the gateway to the telemetry pipeline: the pipeline judges every frame, and the
gateway tells it when sessions end and when devices are quarantined or released."""

from __future__ import annotations

from redis.asyncio import Redis

from fleetward.abuse.redis_store import RedisQuotaStore
from fleetward.abuse.telemetry_leases import PREFIX, LeasedQuotas
from fleetward.core.redis_scripts import connect
from fleetward.devices.models import DeviceStatus
from fleetward.devices.status import StoreDeviceStatus
from fleetward.gateway.registry import SessionRegistry
from fleetward.platform import Platform
from fleetward.telemetry.pipeline import TelemetryConfig, TelemetryPipeline
from fleetward.telemetry.shared_scores import RedisScores


class PipelineObserver:
    """The gateway's SessionObserver for the pipeline. Runs on the event loop; never raises."""

    def __init__(self, pipeline: TelemetryPipeline) -> None:
        self._pipeline = pipeline

    def end_session(self, session_id: str) -> None:
        self._pipeline.end_session(session_id)

    def device_status_changed(self, device_id: str, status: DeviceStatus, reason: str) -> None:
        quarantine = self._pipeline.stages.quarantine
        if status is DeviceStatus.QUARANTINED:
            quarantine.mark(device_id, reason)
        elif status is DeviceStatus.ACTIVE:
            quarantine.release(device_id)


class RegistryReportingStatus:
    """The pipeline's DeviceStatusPort: flags the device in the store, then tells the
    gateway's registry, which decides whether commands go down to the device and whether its
    answers are recorded. Without the second step the registry learnt of the pipeline's
    quarantine only at its next credential sweep, and meanwhile a device the pipeline had
    just set apart was still sent commands and had its answers recorded."""

    def __init__(self, store: StoreDeviceStatus) -> None:
        self._store = store
        self.registry: SessionRegistry | None = None

    async def quarantine(self, device_id: str, reason: str) -> None:
        # After the store's write only: a registry told first would take the store's "active"
        # (a write that failed) at its next sweep for a release, and lift the pipeline's own
        # quarantine with it.
        await self._store.quarantine(device_id, reason)
        if self.registry is not None:
            self.registry.status_changed(device_id, DeviceStatus.QUARANTINED, reason)


def _shared_quotas(redis: Redis, platform: Platform, config: TelemetryConfig) -> LeasedQuotas:
    return LeasedQuotas(
        RedisQuotaStore(redis, prefix=PREFIX),
        platform.clock,
        device=config.device_rate,
        fleet=config.fleet_rate,
    )


class TelemetryLink:
    """Builds the pipeline for a platform; started and stopped by the app's lifespan."""

    def __init__(self, platform: Platform) -> None:
        self._status = StoreDeviceStatus(platform)
        self._reporting = RegistryReportingStatus(self._status)
        # Replicas share a Redis: a device's refused frames add up across them (quarantine),
        # and a device or a fleet has one quota however its connections are spread.
        # One client for both (each closes it when the pipeline stops: closing twice is
        # harmless).
        url = platform.settings.redis_url
        redis = connect(url.get_secret_value()) if url is not None else None
        config = TelemetryConfig()
        self.pipeline = TelemetryPipeline.build(
            platform.engine,
            platform.clock,
            self._reporting,
            config=config,
            quotas=_shared_quotas(redis, platform, config) if redis is not None else None,
            shared_scores=RedisScores(redis) if redis is not None else None,
        )
        self.observer = PipelineObserver(self.pipeline)

    def attach(self, registry: SessionRegistry) -> None:
        """The gateway's registry, once the gateway exists: told of the pipeline's quarantines."""
        self._reporting.registry = registry

    async def start(self) -> None:
        await self.pipeline.start()
        # Devices quarantined before this process started stay set apart.
        registry = self._reporting.registry
        for device_id in await self._status.quarantined_devices():
            self.pipeline.stages.quarantine.mark(device_id, "quarantined-before-start")
            if registry is not None:
                # So that a release committed while the device has no session here (the
                # CLI, another replica) reaches the pipeline when its next session opens.
                registry.set_apart(device_id)

    async def stop(self) -> None:
        await self.pipeline.stop()
