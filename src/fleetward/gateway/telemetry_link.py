"""Joins the gateway to the telemetry pipeline: the pipeline judges every frame, and the
gateway tells it when sessions end and when devices are quarantined or released."""

from __future__ import annotations

from fleetward.devices.models import DeviceStatus
from fleetward.devices.status import StoreDeviceStatus
from fleetward.platform import Platform
from fleetward.telemetry.pipeline import TelemetryPipeline


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


class TelemetryLink:
    """Builds the pipeline for a platform; started and stopped by the app's lifespan."""

    def __init__(self, platform: Platform) -> None:
        self._status = StoreDeviceStatus(platform)
        self.pipeline = TelemetryPipeline.build(platform.engine, platform.clock, self._status)
        self.observer = PipelineObserver(self.pipeline)

    async def start(self) -> None:
        await self.pipeline.start()
        # Devices quarantined before this process started stay set apart.
        for device_id in await self._status.quarantined_devices():
            self.pipeline.stages.quarantine.mark(device_id, "quarantined-before-start")

    async def stop(self) -> None:
        await self.pipeline.stop()
