"""A live platform with simulated vehicles for the command tests: the real app on loopback
(uvicorn), the demo world and its OAuth clients, ALICE-1 and ACME-N1 enrolled through the
real enrolment endpoint and driven by the simulator over the WebSocket, and real tokens.

The clock runs (real time from the seed instant, plus whatever a test adds with
``advance``), so deadlines, freshness and ordering behave as in production while a test can
still jump past a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from fleetward.app import build_app
from fleetward.audit.recorder import Actor
from fleetward.authz.permissions import Permission
from fleetward.commands.runtime import commands_of
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.demo.clients import seed_demo_clients
from fleetward.demo.world import VEHICLES, seed_demo_world
from fleetward.gateway.websocket import gateway_of
from fleetward.identity.acr import Acr
from fleetward.identity.models import Tenant, User
from fleetward.identity.oauth.revocation import RevocationService
from fleetward.platform import Platform
from fleetward.sim.driver import DriveConfig, VehicleDriver
from fleetward.sim.provision import provision_fleet
from fleetward.sim.transport import Endpoint, WebSocketTransport
from fleetward.sim.vehicle import SimVehicle
from fleetward.vehicles.models import Vehicle
from support.serve import served
from unit.authz.kit import HOME

# Reports often, and moves almost no simulated time per report: a parked car stays parked.
DRIVE = DriveConfig(messages=None, interval_s=0.1, step_s=0.001)
CLIENT_OF = {
    Surface.MOBILE: "fleetward-mobile",
    Surface.FLEET: "fleet-console",
    Surface.DEALER: "dealer-tool",
}
TERMINAL = {
    "rejected",
    "cancelled",
    "expired",
    "failed",
    "rejected_by_vehicle",
    "confirmed",
    "outcome_unknown",
}


class RunningClock(FrozenClock):
    """Real time from ``start`` on, plus what ``advance`` adds."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self._origin = time.monotonic()

    def now(self) -> datetime:
        return super().now() + timedelta(seconds=time.monotonic() - self._origin)


@dataclass
class SimCar:
    label: str
    driver: VehicleDriver
    task: asyncio.Task[Any] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def vehicle(self) -> SimVehicle:
        return self.driver.vehicle

    def online(self) -> None:
        if self.task is None:
            self.stop = asyncio.Event()
            self.task = asyncio.create_task(self.driver.run(self.stop))

    async def offline(self) -> None:
        if self.task is not None:
            self.stop.set()
            await self.task
            self.task = None

    def acted(self) -> int:
        guard = self.driver.guard
        return guard.stats.acted if guard is not None else 0


@dataclass
class CommandWorld:
    platform: Platform
    app: FastAPI
    http: httpx.AsyncClient
    clock: RunningClock
    users: dict[str, User]
    tenants: dict[str, Tenant]
    vehicles: dict[str, Vehicle]
    cars: dict[str, SimCar]

    def token(
        self,
        who: str,
        surface: Surface = Surface.MOBILE,
        *,
        auth_age: timedelta = timedelta(seconds=30),
        acr: Acr = Acr.MFA,
        scopes: Iterable[str] | None = None,
        client_id: str | None = None,
        family: str | None = None,
    ) -> str:
        user = self.users[who]
        now = self.clock.now()
        return self.platform.identity.tokens.issue(
            subject=user.id,
            client_id=client_id or CLIENT_OF[surface],
            tenant=user.home_tenant_id,
            surface=surface,
            scopes=sorted(scopes) if scopes is not None else _all_scopes(),
            auth_time=now - auth_age,
            acr=acr.value,
            amr=["pwd", "otp"] if acr is not Acr.PASSWORD else ["pwd"],
            token_family=family,
            subject_type="user",
        ).token

    async def command(
        self,
        who: str,
        label: str,
        name: str,
        parameters: dict[str, Any] | None = None,
        *,
        key: str | None = "k-1",
        surface: Surface = Surface.MOBILE,
        **token: Any,
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.token(who, surface, **token)}"}
        if key is not None:
            headers["idempotency-key"] = key
        return await self.http.post(
            f"/{surface.value}/v1/vehicles/{self.vehicles[label].id}/commands/{name}",
            json={"parameters": parameters or {}},
            headers=headers,
        )

    async def job(
        self, who: str, label: str, job_id: str, surface: Surface | None = None
    ) -> dict[str, Any]:
        surface = surface or _surface_of(who)
        response = await self.http.get(
            f"/{surface.value}/v1/vehicles/{self.vehicles[label].id}/commands/{job_id}",
            headers={"authorization": f"Bearer {self.token(who, surface)}"},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def settle(
        self,
        who: str,
        label: str,
        job_id: str,
        *,
        until: set[str] | None = None,
        within: float = 10,
        surface: Surface | None = None,
    ) -> dict[str, Any]:
        """The job once it reaches one of ``until`` (terminal states by default)."""
        wanted = until or TERMINAL
        deadline = time.monotonic() + within
        while True:
            body = await self.job(who, label, job_id, surface)
            if body["state"] in wanted or time.monotonic() > deadline:
                return body
            await asyncio.sleep(0.05)

    async def sweep(self) -> None:
        await commands_of(self.app).dispatcher.sweep()

    async def sign_out_everywhere(self, who: str) -> None:
        """Every token of ``who`` revoked, as their "sign out everywhere" does."""
        async with self.platform.services() as (uow, ctx):
            revocations = RevocationService(ctx, self.platform.identity.revocations)
            await revocations.revoke_user(
                self.users[who].id, reason="signed-out-everywhere", actor=Actor.system("t")
            )
            await uow.commit()


def _surface_of(who: str) -> Surface:
    return (
        Surface.FLEET
        if HOME.get(who, "acme-logistics") in {"acme-logistics", "globex"}
        else Surface.MOBILE
    )


def _all_scopes() -> list[str]:
    return sorted(p.value for p in Permission)


@asynccontextmanager
async def command_world(
    platform: Platform, clock: RunningClock, port: int, *, cars: tuple[str, ...] = ("ALICE-1",)
) -> AsyncIterator[CommandWorld]:
    async with platform.services() as (uow, ctx):
        await seed_demo_world(ctx, platform.passwords)
        await seed_demo_clients(ctx, platform.settings.data_dir)
        await uow.commit()
    app = build_app(platform.settings, platform=platform)
    world: CommandWorld | None = None
    async with served(app, port) as base:
        try:
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                async with platform.unit_of_work() as uow:
                    users = {u.username: u for u in await uow.session.scalars(select(User))}
                    tenants = {t.slug: t for t in await uow.session.scalars(select(Tenant))}
                    vehicles = {v.label: v for v in await uow.session.scalars(select(Vehicle))}
                order = [label for label, *_rest in VEHICLES]
                by_label = {}
                if cars:
                    fleet = await provision_fleet(
                        platform,
                        http,
                        max(order.index(label) for label in cars) + 1,
                        path=platform.settings.data_dir / "sim-devices.json",
                    )
                    by_label = {d.label: d for d in fleet.devices}
                gateway = gateway_of(app)
                assert gateway is not None
                transport = WebSocketTransport(Endpoint(base, gateway.server_id))
                simulated: dict[str, SimCar] = {}
                for label in cars:
                    device = by_label[label]
                    vehicle = SimVehicle(seed=len(simulated) + 1)
                    vehicle.sleep()  # parked and locked ...
                    vehicle.wake()  # ... and awake: it reports, and stays parked (DRIVE)
                    driver = VehicleDriver(
                        vehicle, device.credentials, transport, DRIVE, clock=platform.clock.now
                    )
                    simulated[label] = SimCar(label, driver)
                world = CommandWorld(
                    platform, app, http, clock, users, tenants, vehicles, simulated
                )
                for car in simulated.values():
                    car.online()
                yield world
        finally:
            if world is not None:
                for car in world.cars.values():
                    await car.offline()


async def reported(world: CommandWorld, label: str) -> None:
    """Wait until the car's state is in the store (its first message was accepted)."""
    car = world.cars[label]
    for _ in range(200):
        if car.driver.tally.replies.get("accepted", 0) >= 1:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the simulated car never reported")
