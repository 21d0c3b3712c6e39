"""Reading a device's stored telemetry back, in the device's own order.

Kept apart from the pipeline's stages: those are compiled to native code (``tools/
build_native.py``) and hold no coroutine; this is a store read.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.telemetry.models import TelemetryMessage


async def device_history(
    session: AsyncSession, device_id: str, *, limit: int = 1000
) -> Sequence[TelemetryMessage]:
    """A device's stored messages in the device's own order (by sequence), late ones included."""
    rows = await session.scalars(
        select(TelemetryMessage)
        .where(TelemetryMessage.device_id == device_id)
        .order_by(TelemetryMessage.sequence)
        .limit(limit)
    )
    return rows.all()
