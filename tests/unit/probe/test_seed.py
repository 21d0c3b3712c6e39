"""The seeding hook: a real world in every relationship state, read back through the
platform's own services, and a manifest file only its owner can read."""

from __future__ import annotations

import stat
from datetime import datetime
from pathlib import Path
from typing import Any

import pyotp
import pytest
from joserfc.jwk import ECKey
from sqlalchemy import select

from fleetward.commands.models import CommandJob, JobState
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr, Amr
from fleetward.identity.directory import Directory
from fleetward.identity.models import Tenant, User
from fleetward.identity.oauth.clients import ClientRegistry
from fleetward.identity.oauth_models import Client
from fleetward.identity.tokens.errors import InvalidToken
from fleetward.ota.models import OtaCampaign
from fleetward.platform import Platform
from fleetward.probe.manifest import Manifest, ObjectRecord
from fleetward.probe.seed import seed_probe_world
from fleetward.probe.spec.load import load_demo
from fleetward.vehicles.handover_models import DriverInvitation, OwnershipTransfer
from fleetward.vehicles.models import (
    DealerCase,
    DriverDelegation,
    FleetGroup,
    OperatorAssignment,
    Ownership,
    PartnerConsent,
    SupportCase,
    Vehicle,
)
from fleetward.vehicles.ownership import OwnershipService
from fleetward.vehicles.records import (
    ChargingSession,
    DiagnosticReport,
    ServiceAppointment,
    Trip,
)

# Which table each id of the manifest names (case ids depend on the object type).
TABLES: dict[str, type[Any]] = {
    "vehicle_id": Vehicle,
    "free_vehicle_id": Vehicle,
    "trip_id": Trip,
    "session_id": ChargingSession,
    "report_id": DiagnosticReport,
    "job_id": CommandJob,
    "ended_job_id": CommandJob,
    "diagnostics_job_id": CommandJob,
    "appointment_id": ServiceAppointment,
    "confirm_appointment_id": ServiceAppointment,
    "invitation_id": DriverInvitation,
    "delegation_id": DriverDelegation,
    "transfer_id": OwnershipTransfer,
    "consent_id": PartnerConsent,
    "group_id": FleetGroup,
    "assignment_id": OperatorAssignment,
    "campaign_id": OtaCampaign,
    "tenant_id": Tenant,
    "dealer_id": Tenant,
    "grant_partner_id": Tenant,
    "client_id": Client,
    "free_user_id": User,
}


def _one(manifest: Manifest, type_: str, anchor: str = "consumer") -> ObjectRecord:
    record = manifest.find(type_, anchor, "home")
    assert record is not None, type_
    return record


async def test_the_manifest_is_written_for_its_owner_only(
    platform: Platform, tmp_path: Path
) -> None:
    out = tmp_path / "probe" / "world.json"
    manifest = await seed_probe_world(platform, out=out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert Manifest.read(out) == manifest
    assert manifest.policy_version == platform.pdp.policy_version


async def test_every_actor_and_object_of_the_demo_spec_is_seeded(
    platform: Platform, tmp_path: Path
) -> None:
    spec = load_demo()
    manifest = await seed_probe_world(platform, out=tmp_path / "world.json")
    assert {a.name for a in manifest.actors} == {a.name for a in spec.actors()}
    for actor in spec.actors():
        for obj, route in spec.routes():
            for target in spec.targets(actor, obj):
                record = manifest.find(obj.name, target.anchor, target.side, spare=route.spare)
                assert record is not None, (obj.name, target, route.name)
                missing = set(route.params) - set(record.ids)
                assert not missing, (route.name, missing)


async def test_every_id_in_the_manifest_names_a_stored_object_of_its_parent(
    platform: Platform, tmp_path: Path
) -> None:
    manifest = await seed_probe_world(platform, out=tmp_path / "world.json")
    async with platform.services() as (_uow, ctx):
        for record in manifest.objects:
            for key, value in record.ids.items():
                if key == "case_id":
                    table: type[Any] = DealerCase if record.type == "dealer_case" else SupportCase
                else:
                    table = TABLES[key]
                row = await ctx.session.get(table, value)
                assert row is not None, (record.type, key)
                # A child is recorded with its own parent (never another vehicle's trip).
                parent = record.ids.get("vehicle_id")
                child = key not in {"vehicle_id", "free_vehicle_id"}
                if child and parent and hasattr(row, "vehicle_id"):
                    assert row.vehicle_id == parent, (record.type, key)
            for mark in record.canaries:
                assert mark.startswith("cnry") and len(mark) == 20


async def test_users_sign_in_with_their_password_and_totp(
    platform: Platform, tmp_path: Path
) -> None:
    manifest = await seed_probe_world(platform, out=tmp_path / "world.json")
    async with platform.services() as (_uow, ctx):
        for actor in manifest.actors:
            if actor.kind == "partner":
                assert actor.client is not None
                key = ECKey.import_key(actor.client.private_jwk)
                client = await ClientRegistry(ctx).get(actor.client.client_id)
                assert client is not None and client.tenant_id == actor.tenant_id
                public = client.jwks["keys"][0] if client.jwks else {}
                assert public["kid"] == key.thumbprint() == actor.client.kid
                continue
            assert actor.username and actor.password and actor.totp_secret
            user = await Directory(ctx).user(actor.username)
            assert user.password_hash is not None
            assert platform.passwords.verify(user.password_hash, actor.password)
            assert len(pyotp.TOTP(actor.totp_secret).now()) == 6


async def test_each_relationship_state_is_real(platform: Platform, tmp_path: Path) -> None:
    manifest = await seed_probe_world(platform, out=tmp_path / "world.json")
    vehicle_id = _one(manifest, "vehicle").ids["vehicle_id"]
    users = {a.name: a.user_id for a in manifest.actors if a.user_id}
    now = platform.clock.now()
    async with platform.services() as (_uow, ctx):
        session = ctx.session
        vehicle = await session.get(Vehicle, vehicle_id)
        assert vehicle is not None and vehicle.label in _one(manifest, "vehicle").canaries
        owner = await OwnershipService(ctx).current(vehicle)
        assert owner is not None and owner.owner_user_id == users["owner:active:home"]
        sold = await session.scalar(
            select(Ownership).where(
                Ownership.vehicle_id == vehicle_id,
                Ownership.owner_user_id == users["former_owner:transferred:home"],
            )
        )
        assert sold is not None and sold.valid_until is not None and sold.valid_until < now

        def delegation_of(name: str) -> object:
            return select(DriverDelegation).where(
                DriverDelegation.vehicle_id == vehicle_id,
                DriverDelegation.driver_user_id == users[name],
            )

        expired = await session.scalar(delegation_of("driver:expired:home"))
        assert expired is not None and expired.valid_until < now and expired.revoked_at is None
        revoked = await session.scalar(delegation_of("driver:revoked:home"))
        assert revoked is not None and revoked.revoked_at is not None
        active = await session.scalar(delegation_of("driver:active:home"))
        assert active is not None and active.revoked_at is None and active.valid_until > now

        moved = list(
            await session.scalars(
                select(OperatorAssignment).where(
                    OperatorAssignment.user_id == users["fleet_operator:reassigned:home"]
                )
            )
        )
        group_id = _one(manifest, "fleet_group", "fleet").ids["group_id"]
        on_group = [a for a in moved if a.group_id == group_id]
        assert on_group and all(a.valid_until is not None for a in on_group)
        assert any(a.group_id != group_id and a.valid_until is None for a in moved)

        cases = {c.id: c for c in await session.scalars(select(DealerCase))}
        assert cases[_one(manifest, "dealer_case").ids["case_id"]].closed_at is None
        assert any(c.closed_at is not None and c.vehicle_id == vehicle_id for c in cases.values())
        support = list(await session.scalars(select(SupportCase)))
        assert any(c.closed_at is not None for c in support)
        assert any(c.id == _one(manifest, "support_case").ids["case_id"] for c in support)

        consents = list(
            await session.scalars(
                select(PartnerConsent).where(PartnerConsent.vehicle_id == vehicle_id)
            )
        )
        assert any(c.revoked_at is not None for c in consents)
        assert any(c.id == _one(manifest, "consent").ids["consent_id"] for c in consents)


async def test_expired_tokens_are_the_platforms_own_and_expired(
    platform: Platform, tmp_path: Path
) -> None:
    manifest = await seed_probe_world(platform, out=tmp_path / "world.json")
    assert set(manifest.expired_tokens) == {s.value for s in Surface}
    validator = platform.identity.validator
    for surface, token in manifest.expired_tokens.items():
        with pytest.raises(InvalidToken) as refused:
            await validator.validate(token, surface=Surface(surface))
        assert refused.value.reason == "expired", surface


async def test_stale_auth_tokens_are_valid_but_past_the_step_up_window(
    platform: Platform, tmp_path: Path
) -> None:
    manifest = await seed_probe_world(platform, out=tmp_path / "world.json")
    people = {a.name: a for a in manifest.actors if a.kind == "user"}
    expected = {name for name, actor in people.items() if {"mobile", "fleet"} & set(actor.surfaces)}
    assert set(manifest.stale_auth_tokens) == expected
    validator = platform.identity.validator
    now = platform.clock.now()
    for name, by_surface in manifest.stale_auth_tokens.items():
        assert set(by_surface) == {"mobile", "fleet"} & set(people[name].surfaces), name
        for surface, token in by_surface.items():
            claims = await validator.validate(token, surface=Surface(surface))
            # The actor's own multi-factor sign-in, but an hour old: no step-up holds.
            assert claims.sub == people[name].user_id
            assert claims.acr == Acr.MFA.value
            assert (now - claims.authenticated_at).total_seconds() > 300, (name, surface)


async def test_password_only_tokens_are_recent_but_too_weak_for_a_step_up(
    platform: Platform, tmp_path: Path
) -> None:
    manifest = await seed_probe_world(platform, out=tmp_path / "world.json")
    people = {a.name: a for a in manifest.actors if a.kind == "user"}
    assert set(manifest.password_only_tokens) == set(manifest.stale_auth_tokens)
    assert manifest.password_only_signed_in_at is not None
    signed_in = datetime.fromisoformat(manifest.password_only_signed_in_at)
    validator = platform.identity.validator
    now = platform.clock.now()
    for name, by_surface in manifest.password_only_tokens.items():
        assert set(by_surface) == {"mobile", "fleet"} & set(people[name].surfaces), name
        for surface, token in by_surface.items():
            claims = await validator.validate(token, surface=Surface(surface))
            # The actor's own sign-in, inside the step-up window, but by password alone.
            assert claims.sub == people[name].user_id
            assert claims.acr == Acr.PASSWORD.value
            assert claims.amr == (Amr.PASSWORD.value,)
            assert abs((claims.authenticated_at - signed_in).total_seconds()) < 1
            assert (now - claims.authenticated_at).total_seconds() < 300, (name, surface)


async def test_a_requester_who_lost_the_command_has_a_queued_job_to_cancel(
    platform: Platform, tmp_path: Path
) -> None:
    """The revoked driver's climate job on the consumer's vehicle, the moved operator's on
    the fleet's: theirs, still queued, asked while they were allowed, reserved for them."""
    manifest = await seed_probe_world(platform, out=tmp_path / "world.json")
    users = {a.name: a.user_id for a in manifest.actors if a.user_id}
    async with platform.services() as (_uow, ctx):
        for side in ("home", "away"):
            for anchor, actor in (
                ("consumer", f"driver:revoked:{side}"),
                ("fleet", f"fleet_operator:reassigned:{side}"),
            ):
                record = manifest.find("command_job", anchor, side, spare=True, actor=actor)
                assert record is not None and record.actor == actor, actor
                shared = manifest.find("command_job", anchor, side, spare=True)
                assert shared is not None and shared.ids["job_id"] != record.ids["job_id"]
                job = await ctx.session.get(CommandJob, record.ids["job_id"])
                assert job is not None and job.vehicle_id == record.ids["vehicle_id"]
                assert job.requested_by == users[actor]
                assert job.state is JobState.QUEUED and job.command == "vehicle:climate"
                assert job.expires_at > platform.clock.now()
            revoked = await ctx.session.scalar(
                select(DriverDelegation).where(
                    DriverDelegation.driver_user_id == users[f"driver:revoked:{side}"]
                )
            )
            assert revoked is not None and revoked.revoked_at is not None
            moved = list(
                await ctx.session.scalars(
                    select(OperatorAssignment).where(
                        OperatorAssignment.user_id == users[f"fleet_operator:reassigned:{side}"]
                    )
                )
            )
            group = manifest.find("fleet_group", "fleet", side)
            assert group is not None
            on_group = [a for a in moved if a.group_id == group.ids["group_id"]]
            assert on_group and all(a.valid_until is not None for a in on_group)


async def test_the_dealer_follows_an_ended_diagnostics_run(
    platform: Platform, tmp_path: Path
) -> None:
    manifest = await seed_probe_world(platform, out=tmp_path / "world.json")
    users = {a.name: a.user_id for a in manifest.actors if a.user_id}
    record = _one(manifest, "command_job")
    async with platform.services() as (_uow, ctx):
        job = await ctx.session.get(CommandJob, record.ids["diagnostics_job_id"])
        assert job is not None and job.vehicle_id == record.ids["vehicle_id"]
        # The keeper's run, already over: a follow's stream ends after its first event.
        assert job.command == "vehicle:diagnostics_run"
        assert job.requested_by == users["owner:active:home"]
        assert job.state is JobState.CANCELLED and job.finished_at is not None


async def test_seeding_twice_makes_two_worlds(platform: Platform, tmp_path: Path) -> None:
    first = await seed_probe_world(platform, out=tmp_path / "one.json")
    second = await seed_probe_world(platform, out=tmp_path / "two.json")
    assert first.run_id != second.run_id
    assert not first.canaries() & second.canaries()

    def usernames(manifest: Manifest) -> set[str]:
        return {a.username for a in manifest.actors if a.username is not None}

    assert usernames(first).isdisjoint(usernames(second))
    assert len(usernames(first)) == len([a for a in first.actors if a.kind == "user"])


async def test_history_belongs_to_the_current_keeper(platform: Platform, tmp_path: Path) -> None:
    manifest = await seed_probe_world(platform, out=tmp_path / "world.json")
    trip_ids = _one(manifest, "trip").ids
    async with platform.services() as (_uow, ctx):
        trip = await ctx.session.get(Trip, trip_ids["trip_id"])
        assert trip is not None and trip.vehicle_id == trip_ids["vehicle_id"]
        owners = {
            o.owner_user_id: o
            for o in await ctx.session.scalars(
                select(Ownership).where(Ownership.vehicle_id == trip.vehicle_id)
            )
        }
    users = {a.name: a.user_id for a in manifest.actors}
    current = owners[users["owner:active:home"]]
    former = owners[users["former_owner:transferred:home"]]
    # Dated inside the current owner's ownership, after the former owner's ended.
    assert current.valid_from <= trip.started_at
    assert former.valid_until is not None and former.valid_until <= trip.started_at
