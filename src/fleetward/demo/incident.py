"""The demo world's scripted incident: a stolen token.

frank (an ACME fleet operator, assigned to group north) has his token family stolen. From a
network frank never used, the thief reads the status and location of the three vehicles of
group north and tries two of group south (refused: not frank's group). Meanwhile erin, the
fleet admin, goes on with her day from the office. Everything goes through the real routes
of the app, in process, on the configured store, so the audit log holds exactly what a real
incident would leave; ``fleetward investigate demo-incident`` then lists the vehicles the
stolen family reached (`docs/operations.md`, "Investigation").

The token is minted by the platform's issuer for a token family of its own (never printed):
what the thief holds is a valid token, which is the point of the exercise.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import httpx
from sqlalchemy import select

from fleetward.app import build_app
from fleetward.authz.permissions import Permission
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr
from fleetward.identity.models import Membership, Tenant, User
from fleetward.platform import Platform
from fleetward.vehicles.models import Vehicle

REACHED: Final = ("ACME-N1", "ACME-N2", "ACME-N3")
REFUSED: Final = ("ACME-S1", "ACME-S2")
# Documentation ranges (RFC 5737): the thief's network and the office's.
THIEF_ADDRESS: Final = ("203.0.113.77", 51_000)
OFFICE_ADDRESS: Final = ("198.51.100.10", 443)


class DemoWorldMissing(Exception):
    """The demo world is not seeded in this store (run `fleetward demo --no-serve`)."""


@dataclass(frozen=True, slots=True)
class Incident:
    token_family: str
    user_id: str
    reached: dict[str, str]  # label -> vehicle id
    refused: dict[str, str]
    request_ids: tuple[str, ...]


async def stage_incident(platform: Platform) -> Incident:
    """Play the incident through the real routes; returns what an investigator should find."""
    async with platform.unit_of_work() as uow:
        session = uow.session
        frank = await session.scalar(select(User).where(User.username == "frank"))
        erin = await session.scalar(select(User).where(User.username == "erin"))
        acme = await session.scalar(select(Tenant).where(Tenant.slug == "acme-logistics"))
        labels = (*REACHED, *REFUSED)
        vehicles = {
            v.label: v.id
            for v in await session.scalars(select(Vehicle).where(Vehicle.label.in_(labels)))
        }
        members = await session.scalar(
            select(Membership.id).where(Membership.tenant_id == (acme.id if acme else ""))
        )
    if frank is None or erin is None or acme is None or members is None:
        raise DemoWorldMissing("the demo world is not seeded: run `fleetward demo --no-serve`")
    if set(vehicles) != set(labels):
        raise DemoWorldMissing("the demo world's ACME vehicles are missing")
    family = f"fam_incident_{secrets.token_hex(8)}"
    stolen = _token(platform, frank.id, acme.id, family)
    office = _token(platform, erin.id, acme.id, f"fam_office_{secrets.token_hex(8)}")
    app = build_app(platform.settings, platform=platform)
    request_ids: list[str] = []
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=THIEF_ADDRESS),
            base_url="http://incident",
        ) as thief,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=OFFICE_ADDRESS),
            base_url="http://incident",
        ) as admin,
    ):
        for label in (*REACHED, *REFUSED):
            await _read(admin, office, vehicles[label])
        for label in (*REACHED, *REFUSED):
            for suffix in ("status", "location"):
                response = await thief.get(
                    f"/fleet/v1/vehicles/{vehicles[label]}/{suffix}",
                    headers={"authorization": f"Bearer {stolen}"},
                )
                request_ids.append(response.headers.get("x-request-id", ""))
    return Incident(
        token_family=family,
        user_id=frank.id,
        reached={label: vehicles[label] for label in REACHED},
        refused={label: vehicles[label] for label in REFUSED},
        request_ids=tuple(request_ids),
    )


async def _read(client: httpx.AsyncClient, token: str, vehicle_id: str) -> None:
    await client.get(
        f"/fleet/v1/vehicles/{vehicle_id}/status", headers={"authorization": f"Bearer {token}"}
    )


def _token(platform: Platform, user_id: str, tenant_id: str, family: str) -> str:
    now = platform.clock.now()
    return platform.identity.tokens.issue(
        subject=user_id,
        client_id="fleet-console",
        tenant=tenant_id,
        surface=Surface.FLEET,
        scopes=[Permission.VEHICLE_READ_STATUS.value, Permission.VEHICLE_READ_LOCATION.value],
        auth_time=now - timedelta(minutes=2),
        acr=Acr.MFA.value,
        amr=["pwd", "otp"],
        token_family=family,
        subject_type="user",
    ).token
