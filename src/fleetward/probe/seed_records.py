"""The probe world's cases, platform objects, partner clients and vehicle history, and the
record of what one side holds (``SideWorld``)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from joserfc.jwk import ECKey

from fleetward.audit.recorder import Actor
from fleetward.authz.permissions import CONSENTABLE_PERMISSIONS, Permission
from fleetward.commands.models import CommandJob, JobState
from fleetward.core.ids import new_id
from fleetward.core.surfaces import Surface
from fleetward.identity.models import Tenant, User
from fleetward.identity.oauth.client_side import public_jwks_of
from fleetward.identity.oauth.clients import ClientRegistry, ClientSpec
from fleetward.identity.oauth.policy import CLIENT_CREDENTIALS
from fleetward.identity.oauth_models import ClientType
from fleetward.ota.campaigns import CampaignService, CampaignSpec
from fleetward.probe.manifest import ManifestActor, ObjectRecord, PartnerKey
from fleetward.probe.spec.models import Side, actor_name
from fleetward.services import ServiceContext
from fleetward.vehicles.cases import CaseService
from fleetward.vehicles.models import Vehicle
from fleetward.vehicles.records import (
    ChargerKind,
    ChargingSession,
    DiagnosticReport,
    DiagnosticSource,
    Trip,
)

SEEDER: Final = Actor.system("probe-seed")
PARTNER_SCOPES: Final = tuple(sorted(CONSENTABLE_PERMISSIONS))
PARTNER_STATES: Final = ("consented", "consent-revoked", "none")


def canary() -> str:
    """A random string that exists nowhere else: finding it in a refusal is a leak."""
    return "cnry" + secrets.token_hex(8)


@dataclass
class SideWorld:
    """What one side's seed made, for the manifest."""

    side: Side
    tenants: dict[str, Tenant] = field(default_factory=dict)
    people: dict[str, User] = field(default_factory=dict)  # actor name or fixture key
    passwords: dict[str, str] = field(default_factory=dict)
    totp: dict[str, str] = field(default_factory=dict)
    # Tenant key or person key -> the canary in its name.
    canaries: dict[str, str] = field(default_factory=dict)
    actors: list[ManifestActor] = field(default_factory=list)
    objects: list[ObjectRecord] = field(default_factory=list)

    def add(
        self,
        type_: str,
        anchor: str,
        ids: dict[str, str],
        *,
        canaries: list[str] | None = None,
        spare: bool = False,
        actor: str | None = None,
    ) -> None:
        tenant = self.tenants.get(anchor)
        self.objects.append(
            ObjectRecord(
                type=type_,
                anchor=anchor,
                side=self.side,
                tenant_id=tenant.id if tenant is not None else None,
                ids=ids,
                canaries=canaries or [],
                spare=spare,
                actor=actor,
            )
        )

    def person(self, role: str, state: str) -> User:
        return self.people[actor_name(role, state, self.side)]


async def seed_cases(ctx: ServiceContext, world: SideWorld, vehicle: Vehicle, owner: User) -> None:
    """Dealer cases (open, a spare open one, closed) and support cases (the same) about the
    consumer vehicle and its owner."""
    cases = CaseService(ctx)
    open_tech = world.person("dealer_technician", "case-open")
    closed_tech = world.person("dealer_technician", "case-closed")
    summaries = [canary() for _ in range(3)]
    dealer_cases = []
    for summary, tech, dealer in zip(
        summaries,
        (open_tech, open_tech, closed_tech),
        ("dealer", "dealer", "dealer-closed"),
        strict=True,
    ):
        case = await cases.open_dealer_case(
            world.tenants[dealer], vehicle, f"probe {summary}", actor=SEEDER
        )
        await cases.assign_technician(case, tech, actor=SEEDER)
        dealer_cases.append(case)
    await cases.close_dealer_case(dealer_cases[2], actor=SEEDER)
    world.add("dealer_case", "consumer", {"case_id": dealer_cases[0].id}, canaries=summaries[:1])
    world.add(
        "dealer_case",
        "consumer",
        {"case_id": dealer_cases[1].id},
        canaries=[summaries[1]],
        spare=True,
    )

    agent = world.person("support_agent", "case-assigned")
    closed_agent = world.person("support_agent", "case-closed")
    notes = [canary() for _ in range(3)]
    support_cases = [
        await cases.open_support_case(who, owner, f"probe {note}", vehicle=vehicle, actor=SEEDER)
        for note, who in zip(notes, (agent, agent, closed_agent), strict=True)
    ]
    await cases.close_support_case(support_cases[2], actor=SEEDER)
    v = {"vehicle_id": vehicle.id}
    owner_mark = world.canaries["owner-active"]
    world.add("support_case", "consumer", v | {"case_id": support_cases[0].id}, canaries=notes[:1])
    world.add(
        "support_case",
        "consumer",
        v | {"case_id": support_cases[1].id},
        canaries=[notes[1]],
        spare=True,
    )
    world.add(
        "support_account", "consumer", {"case_id": support_cases[0].id}, canaries=[owner_mark]
    )


async def seed_platform(ctx: ServiceContext, world: SideWorld, slug: Callable[[str], str]) -> None:
    """Partner clients (the partner actors), OTA campaigns, and the tenant and client records
    the platform roles are probed against."""
    registry = ClientRegistry(ctx)
    clients: dict[str, str] = {}
    for state in PARTNER_STATES:
        key = ECKey.generate_key("P-256")
        tenant = world.tenants[f"partner-{state}"]
        client_id = slug(f"ptr-{state}")  # client ids are at most 40 characters
        mark = canary()
        world.canaries[client_id] = mark
        await registry.register(
            ClientSpec(
                client_id=client_id,
                name=f"Probe {mark}",
                client_type=ClientType.PARTNER,
                surfaces=(Surface.PARTNER,),
                scopes=PARTNER_SCOPES,
                grant_types=(CLIENT_CREDENTIALS,),
                tenant_id=tenant.id,
                jwks=public_jwks_of(key),
            ),
            actor=SEEDER,
        )
        clients[state] = client_id
        private = {k: str(v) for k, v in key.as_dict(private=True).items()}
        kid = key.thumbprint()
        world.actors.append(
            ManifestActor(
                name=actor_name("partner", state, world.side),
                role="partner",
                state=state,
                side=world.side,
                kind="partner",
                tenant_id=tenant.id,
                tenant_slug=tenant.slug,
                surfaces=["partner"],
                client=PartnerKey(
                    client_id=client_id,
                    private_jwk=private | {"kid": kid, "alg": "ES256"},
                    kid=kid,
                    scopes=[p.value for p in PARTNER_SCOPES],
                ),
            )
        )

    campaigns = CampaignService(ctx)
    engineer = world.person("engineer", "active")
    names = [canary() for _ in range(2)]
    made = [
        await campaigns.create(
            CampaignSpec(name=f"probe {name}", target_model="Probe Model", to_version="2026.12.1"),
            creator_id=engineer.id,
            actor=Actor.user(engineer.id),
        )
        for name in names
    ]
    world.add("ota_campaign", "platform", {"campaign_id": made[0].id}, canaries=names[:1])
    world.add(
        "ota_campaign", "platform", {"campaign_id": made[1].id}, canaries=names[1:], spare=True
    )
    consumer = world.tenants["consumer"]
    world.add(
        "tenant",
        "platform",
        {"tenant_id": consumer.id},
        canaries=[world.canaries["consumer"]],
    )
    consented = clients["consented"]
    world.add("client", "platform", {"client_id": consented}, canaries=[world.canaries[consented]])


def command_job(
    vehicle: Vehicle,
    requester: User,
    command: Permission,
    state: JobState,
    at: datetime,
    lifetime: timedelta,
    **extra: Any,
) -> CommandJob:
    """A job row as a delivery would have written it. No command service writes jobs outside
    a delivery: the probe's rows are written directly."""
    return CommandJob(
        id=new_id("job"),
        vehicle_id=vehicle.id,
        tenant_id=vehicle.tenant_id,
        command=command.value,
        parameters=extra.pop("parameters", {}),
        state=state,
        requested_by=requester.id,
        client_id="probe-seed",
        created_at=at,
        expires_at=at + lifetime,
        updated_at=at,
        **extra,
    )


def queued_climate(vehicle: Vehicle, requester: User, at: datetime) -> CommandJob:
    """A climate job still queued, for longer than a probe run takes (climate is not
    security-exclusive: it holds no slot, so the probe's allowed commands meet no conflict)."""
    return command_job(
        vehicle,
        requester,
        Permission.VEHICLE_CLIMATE,
        JobState.QUEUED,
        at,
        timedelta(minutes=15),
        parameters={"cabin_celsius": 21},
    )


async def seed_history(
    ctx: ServiceContext, world: SideWorld, anchor: str, vehicle: Vehicle, requester: User
) -> None:
    """One trip, charging session, diagnostic report and command job, dated now: after every
    relationship began, so they belong to the current keepers (and not the former owner)."""
    at = ctx.clock.now()
    summary = canary()
    trip = Trip(
        id=new_id("trp"),
        vehicle_id=vehicle.id,
        started_at=at,
        ended_at=at + timedelta(seconds=1),
        distance_km=1.5,
        energy_kwh=0.3,
        start_latitude=45.0,
        start_longitude=-93.0,
        end_latitude=45.01,
        end_longitude=-93.01,
    )
    charging = ChargingSession(
        id=new_id("chg"),
        vehicle_id=vehicle.id,
        started_at=at,
        ended_at=None,
        energy_kwh=0.0,
        start_soc_percent=40.0,
        end_soc_percent=None,
        charger_kind=ChargerKind.AC,
    )
    report = DiagnosticReport(
        id=new_id("dgr"),
        vehicle_id=vehicle.id,
        created_at=at,
        source=DiagnosticSource.VEHICLE,
        software_version="2026.11.1",
        trouble_codes=["P0420"],
        summary=f"probe {summary}",
    )

    def seeded_job(
        command: Permission, state: JobState, lifetime: timedelta, **extra: Any
    ) -> CommandJob:
        return command_job(vehicle, requester, command, state, at, lifetime, **extra)

    five_minutes = timedelta(minutes=5)
    job = seeded_job(Permission.VEHICLE_LOCK, JobState.EXECUTED, five_minutes)
    # For following on the mobile and fleet surfaces: the requester's lock, already ended
    # (cancelled), so an allowed follow's stream ends after its first event (a job still
    # pending would hold it open for the follow's 60 s).
    ended = seeded_job(Permission.VEHICLE_LOCK, JobState.CANCELLED, five_minutes, finished_at=at)
    # For the dealer's follow: the requester's diagnostics run, ended (cancelled) as well; a
    # technician with an open case on the vehicle sees it (never a lock job).
    diagnostics = seeded_job(
        Permission.VEHICLE_DIAGNOSTICS_RUN, JobState.CANCELLED, five_minutes, finished_at=at
    )
    # The spare for cancelling (an allowed cancel consumes it): the requester's climate job,
    # still queued; the active driver is lent climate, so sees it and may send it, but did
    # not request it.
    queued = queued_climate(vehicle, requester, at)
    ctx.session.add_all([trip, charging, report, job, ended, diagnostics, queued])
    v = {"vehicle_id": vehicle.id}
    world.add("trip", anchor, v | {"trip_id": trip.id})
    world.add("charging_session", anchor, v | {"session_id": charging.id})
    world.add("diagnostic_report", anchor, v | {"report_id": report.id}, canaries=[summary])
    world.add(
        "command_job",
        anchor,
        v | {"job_id": job.id, "ended_job_id": ended.id, "diagnostics_job_id": diagnostics.id},
    )
    world.add("command_job", anchor, v | {"job_id": queued.id}, spare=True)
