"""Acknowledging an alert (detection/service.py) on a real store (SQLite and PostgreSQL):
an alert is acknowledged once, by one actor, with one audit event, also when two operators
acknowledge it at the same moment."""

from __future__ import annotations

from sqlalchemy import select

from fleetward.audit.alerts import Alert, AlertSeverity, AlertStatus
from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor
from fleetward.detection import raising
from fleetward.detection.finding import Finding
from fleetward.detection.service import AlertService
from fleetward.platform import Platform

ALICE, BOB = Actor.user("usr_alice_ops"), Actor.user("usr_bob_ops")


async def _alert(platform: Platform) -> str:
    finding = Finding(
        rule="vin-enumeration",
        severity=AlertSeverity.HIGH,
        dedup_key="vin-enumeration|user:usr_x|2026-11-26",
        subject_type="user",
        subject_id="usr_x",
        tenant_id=None,
        summary="a walk",
        evidence=("evt_1",),
        at=platform.clock.now(),
    )
    async with platform.unit_of_work() as uow:
        (alert,) = await raising.apply(uow.session, platform.audit, [finding], evidence_cap=10)
        await uow.commit()
    return alert.id


async def test_two_operators_acknowledging_at_once_acknowledge_it_once(
    platform: Platform,
) -> None:
    # Alice has read the open alert when Bob acknowledges it and commits: Alice's
    # acknowledgment must find it acknowledged (False, nothing recorded), not acknowledge
    # it again over Bob's name with a second audit event.
    alert_id = await _alert(platform)
    async with platform.services() as (alice_uow, alice):
        seen = await AlertService(alice).get(alert_id)
        assert seen.status is AlertStatus.OPEN
        async with platform.services() as (bob_uow, bob):
            assert await AlertService(bob).acknowledge(
                await AlertService(bob).get(alert_id), by=BOB
            )
            await bob_uow.commit()
        changed = await AlertService(alice).acknowledge(seen, by=ALICE)
        await alice_uow.commit()
    assert changed is False
    assert seen.status is AlertStatus.ACKNOWLEDGED and seen.acknowledged_by == "user:usr_bob_ops"
    async with platform.unit_of_work() as uow:
        stored = await uow.session.get(Alert, alert_id)
        acks = list(
            await uow.session.scalars(
                select(AuditRecord.actor_id).where(
                    AuditRecord.name == EventName.ALERT_ACKNOWLEDGED.value
                )
            )
        )
    assert stored is not None and stored.acknowledged_by == "user:usr_bob_ops"
    assert acks == ["usr_bob_ops"]
