"""The devices side of the telemetry pipeline's ``DeviceStatusPort``.

The pipeline quarantines a device that keeps sending malformed or suspicious frames; the
devices capability owns the status flag and its audit event. Each call is its own short
transaction, so the pipeline never holds one open.
"""

from __future__ import annotations

import contextlib
import re
from typing import Final

from sqlalchemy import select

from fleetward.audit.recorder import Actor
from fleetward.core.ids import is_id
from fleetward.devices.errors import TransitionRefused
from fleetward.devices.lifecycle import QUARANTINABLE, DeviceLifecycle
from fleetward.devices.models import Device, DeviceStatus
from fleetward.devices.names import DEVICE_ID_PREFIX
from fleetward.platform import Platform
from fleetward.store.races import judged_again

PIPELINE: Final = Actor.system("telemetry")
_REASON: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")


class StoreDeviceStatus:
    """Safe for concurrent use (one transaction per call)."""

    def __init__(self, platform: Platform) -> None:
        self._platform = platform

    async def quarantine(self, device_id: str, reason: str) -> None:
        """Flag ``device_id`` as quarantined. Idempotent: a device already quarantined, ended
        or unknown is left as it is."""
        if not is_id(device_id, DEVICE_ID_PREFIX):
            return
        code = reason if isinstance(reason, str) and _REASON.fullmatch(reason) else "telemetry"

        async def once() -> None:
            async with self._platform.services() as (uow, ctx):
                device = await ctx.session.get(Device, device_id, with_for_update=True)
                if device is None or device.status not in QUARANTINABLE:
                    return
                await DeviceLifecycle(ctx).quarantine(
                    device, reason=code, actor=PIPELINE, details={}
                )
                await uow.commit()

        # Judged again if the device moved between its read and the write; a device that
        # keeps moving is left as the other writers made it.
        with contextlib.suppress(TransitionRefused):
            await judged_again(once, TransitionRefused)

    async def status(self, device_id: str) -> DeviceStatus | None:
        async with self._platform.unit_of_work() as uow:
            device = (
                await uow.session.get(Device, device_id)
                if is_id(device_id, DEVICE_ID_PREFIX)
                else None
            )
            return device.status if device else None

    async def quarantined_devices(self) -> list[str]:
        """Every quarantined device: what the pipeline seeds its local set with at start."""
        async with self._platform.unit_of_work() as uow:
            rows = await uow.session.scalars(
                select(Device.id).where(Device.status == DeviceStatus.QUARANTINED)
            )
            return list(rows)
