"""The seeded demo world behind the real app, with real tokens: ``api.get("alice", MOBILE,
"/vehicles")`` asks as alice would with a fresh multi-factor sign-in and every scope.

Tokens are minted by the platform's issuer (the OAuth flows are tested on their own); they
are otherwise exactly what the flows produce, so the routes under test cannot tell.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import fleetward.api.authorize
from fleetward.app import build_app
from fleetward.authz.decision import Decision, Obligation
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.settings import Settings
from support.http import client_for
from unit.authz.kit import ALL_SCOPES, HOME, PARTNER_APP, World, build_world

UNKNOWN_VEHICLE = "veh_aaaaaaaaaaaaaaaaaaaaaaaaaa"


@dataclass
class Api:
    world: World
    platform: Platform
    client: httpx.AsyncClient

    def token(
        self,
        who: str,
        surface: Surface,
        *,
        acr: Acr = Acr.MFA,
        auth_age: timedelta = timedelta(seconds=30),
        scopes: Iterable[str] = ALL_SCOPES,
        tenant: str | None = None,
    ) -> str:
        now = self.platform.clock.now()
        if who == PARTNER_APP:
            subject, subject_type = PARTNER_APP, "workload"
        else:
            subject, subject_type = self.world.users[who].id, "user"
        return self.platform.identity.tokens.issue(
            subject=subject,
            client_id=PARTNER_APP if who == PARTNER_APP else f"cli_{surface.value}",
            tenant=self.world.tenants[tenant or HOME[who]].id,
            surface=surface,
            scopes=sorted(scopes),
            auth_time=now - auth_age,
            acr=acr.value,
            amr=["pwd", "otp"] if acr is not Acr.PASSWORD else ["pwd"],
            token_family=None,
            subject_type=subject_type,  # type: ignore[arg-type]
        ).token

    def vehicle_id(self, label: str) -> str:
        return UNKNOWN_VEHICLE if label == "unknown" else self.world.vehicles[label].id

    def headers(self, who: str, surface: Surface, **token: Any) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token(who, surface, **token)}"}

    async def get(self, who: str, surface: Surface, path: str, **token: Any) -> httpx.Response:
        return await self.client.get(
            f"/{surface.value}/v1{path}", headers=self.headers(who, surface, **token)
        )

    async def post(
        self, who: str, surface: Surface, path: str, body: Any = None, **token: Any
    ) -> httpx.Response:
        return await self.client.post(
            f"/{surface.value}/v1{path}", json=body, headers=self.headers(who, surface, **token)
        )

    async def patch(
        self, who: str, surface: Surface, path: str, body: Any, **token: Any
    ) -> httpx.Response:
        return await self.client.patch(
            f"/{surface.value}/v1{path}", json=body, headers=self.headers(who, surface, **token)
        )

    async def delete(self, who: str, surface: Surface, path: str, **token: Any) -> httpx.Response:
        return await self.client.delete(
            f"/{surface.value}/v1{path}", headers=self.headers(who, surface, **token)
        )


@asynccontextmanager
async def running_api(
    platform: Platform, ctx: ServiceContext, clock: FrozenClock, settings: Settings
) -> AsyncIterator[Api]:
    """The demo world seeded and committed, and the app over it."""
    world = await build_world(platform, ctx, clock)
    await ctx.session.commit()
    app: FastAPI = build_app(settings, platform=platform)
    async with client_for(app) as client:
        yield Api(world, platform, client)


def obliged(monkeypatch: pytest.MonkeyPatch, obligation: Obligation) -> None:
    """Every allow a route asks for from now on carries ``obligation`` as well, as a policy
    that adds it would: a route that cannot apply it must deny (fail closed)."""
    decide = fleetward.api.authorize.decide_audited

    async def with_obligation(*args: Any) -> list[Decision]:
        decisions = await decide(*args)
        return [
            replace(d, obligations=d.obligations | {obligation}) if d.allowed else d
            for d in decisions
        ]

    monkeypatch.setattr(fleetward.api.authorize, "decide_audited", with_obligation)


__all__ = ["PARTNER_APP", "UNKNOWN_VEHICLE", "Api", "obliged", "running_api"]
