"""The probe world on one side: tenants, actors and objects in every relationship state the
demo spec names. Built through the platform's services, in the caller's transaction.

Timeline (so every state is real, not simulated): the former owner bought the vehicle ten
days ago and sold it to the owner five days ago; the expired driver's delegation ran for one
day after the sale (granted with the services' clock set to the sale); every other
relationship starts now, and the history (trips, charging, diagnostics, command jobs) is dated
after all of them, so it belongs to the current keepers only.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import timedelta
from typing import Final

from fleetward.audit.recorder import Actor
from fleetward.authz.permissions import Permission
from fleetward.core.clock import FrozenClock
from fleetward.core.datakey import DataKey
from fleetward.core.vin import random_vin
from fleetward.identity.directory import Directory
from fleetward.identity.login.totp import TotpFactors
from fleetward.identity.models import Role, User
from fleetward.identity.passwords import PasswordHasher
from fleetward.probe.manifest import ManifestActor
from fleetward.probe.seed_cast import FIXTURES, PEOPLE, SURFACE_OF, TENANT_KINDS
from fleetward.probe.seed_records import (
    SEEDER,
    SideWorld,
    canary,
    queued_climate,
    seed_cases,
    seed_history,
    seed_platform,
)
from fleetward.probe.spec.models import Side, actor_name
from fleetward.services import ServiceContext
from fleetward.vehicles.appointments import AppointmentService
from fleetward.vehicles.consents import ConsentService
from fleetward.vehicles.delegation import DelegationService
from fleetward.vehicles.fleets import FleetService
from fleetward.vehicles.invitations import InvitationService
from fleetward.vehicles.models import Vehicle
from fleetward.vehicles.ownership import OwnershipService
from fleetward.vehicles.registry import VehicleRegistry
from fleetward.vehicles.transfers import TransferService

BOUGHT: Final = timedelta(days=10)
SOLD: Final = timedelta(days=5)
DRIVER_WINDOW: Final = timedelta(days=30)
DRIVER_GRANT: Final = (
    Permission.VEHICLE_READ_STATUS,
    Permission.VEHICLE_CLIMATE,
    Permission.VEHICLE_LOCK,
)
PARTNER_GRANT: Final = (Permission.VEHICLE_READ_STATUS, Permission.VEHICLE_READ_CHARGING)


class SideSeeder:
    """Seeds one side. Not reusable: one instance per side and transaction."""

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        run: str,
        side: Side,
        hasher: PasswordHasher,
        data_key: DataKey,
    ) -> None:
        self._ctx = ctx
        self._run = run
        self._hasher = hasher
        self._data_key = data_key
        self._now = ctx.clock.now()
        self.world = SideWorld(side)

    def _past(self, ago: timedelta) -> ServiceContext:
        # The services check windows against their clock: a state in the past is made by
        # running the same services with the clock set back, not by writing rows.
        return replace(self._ctx, clock=FrozenClock(self._now - ago))

    def _slug(self, key: str) -> str:
        return f"probe-{self._run}-{self.world.side}-{key}"

    async def seed(self) -> SideWorld:
        await self._tenants()
        await self._people()
        vehicle, owner = await self._consumer()
        fleet_vehicle = await self._fleet()
        await seed_cases(self._ctx, self.world, vehicle, owner)
        await seed_platform(self._ctx, self.world, self._slug)
        # Last: the history is dated after every relationship above began.
        await seed_history(self._ctx, self.world, "consumer", vehicle, owner)
        fleet_admin = self.world.people[self._name("fleet_admin", "active")]
        await seed_history(self._ctx, self.world, "fleet", fleet_vehicle, fleet_admin)
        await self._ctx.session.flush()
        return self.world

    # -- tenants and people ------------------------------------------------------------

    async def _tenants(self) -> None:
        directory = Directory(self._ctx)
        for key, kind in TENANT_KINDS.items():
            mark = canary()
            self.world.canaries[key] = mark
            self.world.tenants[key] = await directory.create_tenant(
                self._slug(key), f"Probe {mark}", kind, actor=SEEDER
            )

    def _name(self, role: str, state: str) -> str:
        return actor_name(role, state, self.world.side)

    async def _person(self, key: str, tenant_key: str, role: Role) -> User:
        directory = Directory(self._ctx)
        tenant = self.world.tenants[tenant_key]
        password = secrets.token_urlsafe(18)
        username = self._slug(key.replace(":", "-").replace("_", "-"))[:64]
        mark = canary()
        self.world.canaries[key] = mark
        user = await directory.create_user(
            username,
            f"Probe {mark}",
            tenant,
            password_hash=self._hasher.hash(password),
            actor=SEEDER,
        )
        await directory.grant_membership(user, tenant, role, actor=SEEDER)
        self.world.passwords[key] = password
        self.world.totp[key] = await TotpFactors(self._ctx, self._data_key).enrol(
            user, actor=SEEDER
        )
        self.world.people[key] = user
        return user

    async def _people(self) -> None:
        for role, state, tenant_key, platform_role in PEOPLE:
            name = self._name(role, state)
            user = await self._person(f"{role}-{state}", tenant_key, platform_role)
            self.world.people[name] = user
            surfaces = (
                ["admin"]
                if platform_role in (Role.PLATFORM_ADMIN, Role.ENGINEER)
                else [SURFACE_OF[tenant_key]]
            )
            tenant = self.world.tenants[tenant_key]
            self.world.actors.append(
                ManifestActor(
                    name=name,
                    role=role,
                    state=state,
                    side=self.world.side,
                    kind="user",
                    tenant_id=tenant.id,
                    tenant_slug=tenant.slug,
                    surfaces=surfaces,
                    user_id=user.id,
                    username=user.username,
                    password=self.world.passwords[f"{role}-{state}"],
                    totp_secret=self.world.totp[f"{role}-{state}"],
                )
            )
        for key, tenant_key, platform_role in FIXTURES:
            await self._person(key, tenant_key, platform_role)

    async def _vehicle(
        self, tenant_key: str, label: str, *, ctx: ServiceContext | None = None
    ) -> Vehicle:
        registry = VehicleRegistry(ctx or self._ctx)
        return await registry.register(
            random_vin(secrets.SystemRandom(), wmi="1FW").value,
            label=label,
            model="Probe Model",
            region="NA",
            tenant=self.world.tenants[tenant_key],
            actor=SEEDER,
        )

    # -- the consumer scenario ---------------------------------------------------------

    async def _consumer(self) -> tuple[Vehicle, User]:
        people, tenants, now = self.world.people, self.world.tenants, self._now
        owner = people[self._name("owner", "active")]
        former = people[self._name("former_owner", "transferred")]
        as_owner = Actor.user(owner.id)
        bought, sold = self._past(BOUGHT), self._past(SOLD)
        vehicle = await self._vehicle("consumer", canary(), ctx=bought)
        await OwnershipService(bought).start(vehicle, former, actor=SEEDER)
        await OwnershipService(sold).transfer(vehicle, former, owner, actor=SEEDER)
        # Expired: a one-day window that ended four days ago.
        await DelegationService(sold).delegate(
            vehicle,
            owner,
            people[self._name("driver", "expired")],
            DRIVER_GRANT,
            valid_until=now - SOLD + timedelta(days=1),
            actor=as_owner,
        )
        delegations = DelegationService(self._ctx)
        grants = {}
        for key in (
            self._name("driver", "active"),
            self._name("driver", "revoked"),
            "spare-driver",
        ):
            grants[key] = await delegations.delegate(
                vehicle,
                owner,
                people[key],
                DRIVER_GRANT,
                valid_until=now + DRIVER_WINDOW,
                actor=as_owner,
            )
        # While in force, the revoked driver asked for climate: the job is still queued when
        # the owner revokes (a revocation leaves it to the delivery's re-check), and its
        # requester may no longer cancel it (cancel is the requester's while still allowed).
        revoked = self._name("driver", "revoked")
        lapsed = queued_climate(vehicle, people[revoked], self._ctx.clock.now())
        self._ctx.session.add(lapsed)
        await delegations.revoke(grants[revoked], actor=as_owner)

        invitations = InvitationService(self._ctx)
        invited = [
            await invitations.invite(
                vehicle,
                owner,
                [Permission.VEHICLE_READ_STATUS.value],
                valid_until=now + timedelta(days=7),
                actor=as_owner,
            )
            for _ in range(2)
        ]
        # The owner's second vehicle carries the pending transfer a cancel consumes.
        second = await self._vehicle("consumer", canary())
        await OwnershipService(self._ctx).start(second, owner, actor=SEEDER)
        pending = await TransferService(self._ctx).start(second, owner, actor=as_owner)

        consents = ConsentService(self._ctx)
        granted = {}
        for key in ("partner-consented", "partner-consent-revoked", "partner-spare"):
            granted[key] = await consents.grant(
                tenants[key],
                vehicle,
                owner,
                PARTNER_GRANT,
                valid_until=now + DRIVER_WINDOW,
                actor=as_owner,
            )
        await consents.revoke(granted["partner-consent-revoked"], actor=as_owner)

        v = {"vehicle_id": vehicle.id}
        w = self.world
        w.add("vehicle", "consumer", v, canaries=[vehicle.label])
        w.add("remote_command", "consumer", v, canaries=[vehicle.label])
        w.add("status", "consumer", v, canaries=[vehicle.label])
        w.add("location", "consumer", v)
        await self._appointments("consumer", vehicle, owner, dealer="dealer")
        w.add("driver_invitation", "consumer", v | {"invitation_id": invited[0].invitation.id})
        w.add(
            "driver_invitation",
            "consumer",
            v | {"invitation_id": invited[1].invitation.id},
            spare=True,
        )
        w.add(
            "driver", "consumer", v | {"delegation_id": grants[self._name("driver", "active")].id}
        )
        w.add("driver", "consumer", v | {"delegation_id": grants["spare-driver"].id}, spare=True)
        w.add("command_job", "consumer", v | {"job_id": lapsed.id}, spare=True, actor=revoked)
        w.add("transfer", "consumer", v)
        w.add(
            "transfer",
            "consumer",
            {"vehicle_id": second.id, "transfer_id": pending.transfer.id},
            spare=True,
        )
        grant_to = {"grant_partner_id": tenants["partner-grant"].id}
        w.add("consent", "consumer", v | grant_to | {"consent_id": granted["partner-consented"].id})
        w.add(
            "consent",
            "consumer",
            v | grant_to | {"consent_id": granted["partner-spare"].id},
            spare=True,
        )
        return vehicle, owner

    async def _appointments(
        self, anchor: str, vehicle: Vehicle, booker: User, *, dealer: str, reserved: str = ""
    ) -> None:
        service = AppointmentService(self._ctx)
        dealer_id = self.world.tenants[dealer].id
        notes = [canary() for _ in range(4 if reserved else 3)]
        booked = [
            await service.book(
                vehicle,
                dealer_id=dealer_id,
                scheduled_for=self._now + timedelta(days=3),
                note=f"probe {note}",
                booked_by=booker.id,
                actor=Actor.user(booker.id),
            )
            for note in notes
        ]
        ids = {"vehicle_id": vehicle.id, "dealer_id": dealer_id}
        self.world.add(
            "appointment", anchor, ids | {"appointment_id": booked[0].id}, canaries=[notes[0]]
        )
        # Two spares: a cancel and a confirm each consume one.
        self.world.add(
            "appointment",
            anchor,
            ids | {"appointment_id": booked[1].id, "confirm_appointment_id": booked[2].id},
            canaries=notes[1:3],
            spare=True,
        )
        if reserved:
            self.world.add(
                "appointment",
                anchor,
                ids | {"appointment_id": booked[3].id, "confirm_appointment_id": booked[2].id},
                canaries=notes[3:],
                spare=True,
                actor=reserved,
            )

    # -- the fleet scenario ------------------------------------------------------------

    async def _fleet(self) -> Vehicle:
        people = self.world.people
        fleet = self.world.tenants["fleet"]
        admin = people[self._name("fleet_admin", "active")]
        fleets = FleetService(self._ctx)
        vehicles = {
            key: await self._vehicle("fleet", canary())
            for key in ("main", "other", "spare", "free")
        }
        for vehicle in vehicles.values():
            await fleets.add_vehicle(fleet, vehicle, actor=SEEDER)
        group_name, other_name = canary(), canary()
        group = await fleets.create_group(fleet, group_name, actor=SEEDER)
        other = await fleets.create_group(fleet, other_name, actor=SEEDER)
        await fleets.add_to_group(group, vehicles["main"], actor=SEEDER)
        await fleets.add_to_group(group, vehicles["spare"], actor=SEEDER)
        await fleets.add_to_group(other, vehicles["other"], actor=SEEDER)
        assigned = await fleets.assign_operator(
            group, people[self._name("fleet_operator", "assigned")], actor=SEEDER
        )
        # Reassigned: was on the group, moved to the other one.
        moved = people[self._name("fleet_operator", "reassigned")]
        earlier = await fleets.assign_operator(group, moved, actor=SEEDER)
        # While on the group, the moved operator asked the main vehicle for climate: still
        # queued, and no longer theirs to cancel once they left the group.
        lapsed = queued_climate(vehicles["main"], moved, self._ctx.clock.now())
        self._ctx.session.add(lapsed)
        await fleets.unassign_operator(earlier, actor=SEEDER)
        await fleets.assign_operator(other, moved, actor=SEEDER)
        spare = await fleets.assign_operator(group, people["spare-operator"], actor=SEEDER)

        main = vehicles["main"]
        v = {"vehicle_id": main.id}
        w = self.world
        w.add("vehicle", "fleet", v, canaries=[main.label])
        w.add("remote_command", "fleet", v, canaries=[main.label])
        w.add("status", "fleet", v, canaries=[main.label])
        reassigned = self._name("fleet_operator", "reassigned")
        w.add("command_job", "fleet", v | {"job_id": lapsed.id}, spare=True, actor=reassigned)
        w.add("location", "fleet", v)
        # The assigned operator may cancel too: a spare of its own, so both cancels can run.
        operator = self._name("fleet_operator", "assigned")
        await self._appointments("fleet", main, admin, dealer="dealer-fleet", reserved=operator)
        g = {"group_id": group.id}
        w.add("fleet_group", "fleet", g, canaries=[group_name])
        free = {"free_vehicle_id": vehicles["free"].id}
        w.add("group_vehicle", "fleet", g | v | free)
        w.add("group_vehicle", "fleet", g | free | {"vehicle_id": vehicles["spare"].id}, spare=True)
        user = {"free_user_id": people["free-operator"].id}
        w.add("operator", "fleet", g | user | {"assignment_id": assigned.id})
        w.add("operator", "fleet", g | user | {"assignment_id": spare.id}, spare=True)
        return main
