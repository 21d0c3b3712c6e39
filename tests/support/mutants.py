"""Deliberately broken variants of the platform, for proving the probe (issue #5).

Each mutant removes or weakens ONE check and is applied in test code only, with a
``pytest.MonkeyPatch`` (undone at the end of the test): a route module's ``authorize`` that
skips one route, a relation loader that keeps what it should drop, a token validator that
ignores the audience, a route whose body is swapped for a broken copy. ``src/`` is never
edited. Each mutant names the probe families and the routes whose cases exercise it (so a
run takes seconds) and the routes the probe must flag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

import pytest
from fastapi import Request
from fastapi.routing import APIRoute
from pydantic import ConfigDict
from sqlalchemy import select, true

import fleetward.api.authorize as authorize_module
import fleetward.api.commands as command_routes
import fleetward.api.ota as ota_routes
import fleetward.api.support_cases as support_routes
import fleetward.api.tenancy as tenancy_routes
import fleetward.api.vehicles as vehicle_routes
import fleetward.authz.relations.loader as loader_module
from fleetward.api.auth import Caller
from fleetward.api.objects import Page, cut_page, decode_cursor, encode_cursor, page_size
from fleetward.api.support_cases import SupportCaseView, _view
from fleetward.authz.decision import Decision, Reason, RequestContext, ResourceKind, ResourceRef
from fleetward.authz.permissions import Permission
from fleetward.authz.relations.facts import Grant
from fleetward.authz.relations.loader import Loader
from fleetward.commands.models import CommandJob
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr
from fleetward.identity.tokens.access import AccessTokenValidator
from fleetward.identity.tokens.claims import AccessTokenClaims
from fleetward.ota.models import CampaignStatus, OtaCampaign
from fleetward.probe.model import Family
from fleetward.vehicles.models import CaseStatus, DealerCase, PartnerConsent, SupportCase

Apply = Callable[[pytest.MonkeyPatch], None]

FAR_FUTURE: Final = timedelta(days=3650)
# The suffixes of an allowed step-up command's twins sent without a valid step-up.
WITHOUT_STEP_UP: Final = ("/no-step-up", "/password-only")


@dataclass(frozen=True)
class Mutant:
    name: str
    breaks: str  # the one check the mutant removes, and what that lets through
    apply: Apply
    families: frozenset[Family]
    routes: frozenset[str]  # the routes whose cases the probe runs against the mutant
    flagged: frozenset[str]  # the routes the probe must name in its failures
    # When set: the probe must fail exactly the selected cases whose id it holds for.
    exact: Callable[[str], bool] | None = None


def _route_name(request: Request) -> str:
    return str(getattr(request.scope.get("route"), "name", ""))


def skip_authorize(module: Any, route: str) -> Apply:
    """``module``'s routes no longer ask the PDP on ``route``: the check is simply gone."""

    def apply(patch: pytest.MonkeyPatch) -> None:
        real = module.authorize

        async def authorize(request: Request, *args: Any, **kwargs: Any) -> Any:
            if _route_name(request) == route:
                return None  # the decision is never asked for
            return await real(request, *args, **kwargs)

        patch.setattr(module, "authorize", authorize)

    return apply


def driver_window_ignored(patch: pytest.MonkeyPatch) -> None:
    """The loader reads a delegation's start and revocation but not its end: an expired
    delegation is kept, with an open window (the policy sees a delegation in force)."""
    real = Loader._delegations

    def delegations(
        self: Loader, rows: Iterable[tuple[str, list[str], datetime, datetime, datetime | None]]
    ) -> None:
        later = self.now + FAR_FUTURE
        real(self, [(vid, perms, start, later, revoked) for vid, perms, start, _, revoked in rows])

    patch.setattr(Loader, "_delegations", delegations)


def former_owner_kept(patch: pytest.MonkeyPatch) -> None:
    """The end of an ownership is not read: the seller still counts as the owner."""
    real = Loader._vehicles

    async def vehicles(self: Loader, *, with_delegations: bool = False) -> None:
        await real(self, with_delegations=with_delegations)
        me = self.principal.ref.id
        for ref, reason in list(self.notes.items()):
            if ref.kind is ResourceKind.VEHICLE and reason.value == "former-owner":
                self._set(ref.id, owner_id=me)
                del self.notes[ref]

    patch.setattr(Loader, "_vehicles", vehicles)


def partner_scope_widened(patch: pytest.MonkeyPatch) -> None:
    """A consent's actions are not read: a consented partner may do everything."""
    real = Loader._consents

    async def consents(self: Loader) -> None:
        await real(self)
        for vid, facts in list(self.vehicles.items()):
            if facts.consent is not None:
                widened = replace(facts.consent, permissions=frozenset(Permission))
                self._set(vid, consent=widened)

    patch.setattr(Loader, "_consents", consents)


def consent_revocation_ignored(patch: pytest.MonkeyPatch) -> None:
    """A revoked consent stays in force: its window is read, ``revoked_at`` is not."""

    async def consents(self: Loader) -> None:
        ids = list(self.vehicles)
        if not ids:
            return
        partner = self.principal.tenant_id
        rows = await self.session.scalars(
            select(PartnerConsent).where(
                PartnerConsent.vehicle_id.in_(ids), PartnerConsent.partner_tenant_id == partner
            )
        )
        known = {p.value for p in Permission}
        for consent in rows:
            if not consent.valid_from <= self.now < consent.valid_until:
                continue
            granted = frozenset(Permission(s) for s in consent.scopes if s in known)
            grant = Grant(partner, granted, consent.valid_from, consent.valid_until)
            self._set(consent.vehicle_id, consent=grant)

    patch.setattr(Loader, "_consents", consents)


def operator_group_ignored(patch: pytest.MonkeyPatch) -> None:
    """The vehicle's group is not compared with the operator's: an operator assigned to any
    group of the fleet reaches every vehicle of the fleet."""
    real = Loader._fleet

    async def fleet(self: Loader) -> None:
        await real(self)
        groups = self.principal.operator_groups
        if not groups:
            return
        for vid, facts in list(self.vehicles.items()):
            if facts.fleet_id is not None and not facts.groups:
                self._set(vid, groups=groups)

    patch.setattr(Loader, "_fleet", fleet)


def audience_ignored(patch: pytest.MonkeyPatch) -> None:
    """The validator checks a token against the surface the token names, not the route's."""
    real = AccessTokenValidator._check_per_call
    surfaces = {surface.audience: surface for surface in Surface}

    def check(
        self: AccessTokenValidator, claims: AccessTokenClaims, surface: Surface, now: float
    ) -> None:
        real(self, claims, surfaces.get(claims.aud, surface), now)

    patch.setattr(AccessTokenValidator, "_check_per_call", check)


def refusal_names_its_reason(patch: pytest.MonkeyPatch) -> None:
    """Object-route refusals say why (``tenant-mismatch``, ``former-owner``): the 404 of an
    object that exists differs from the 404 of one that does not."""
    real = authorize_module._refusal

    def refusal(decision: Decision, *, object_route: bool) -> Exception:
        found = real(decision, object_route=object_route)
        if isinstance(found, authorize_module.ObjectNotFound):
            return authorize_module.ObjectNotFound(f"no such object ({decision.reason})")
        return found

    patch.setattr(authorize_module, "_refusal", refusal)


def support_list_unfiltered(patch: pytest.MonkeyPatch) -> None:
    """The agent's case list is the whole case table: no ``agent = caller``, no ``open``,
    and (trusting its query) no decision per row."""

    async def list_cases(
        request: Request, caller: Caller, limit: int = 50, cursor: str | None = None
    ) -> Page[SupportCaseView]:
        platform = request.app.state.platform
        size = page_size(platform, limit)
        after = decode_cursor(cursor)
        async with platform.services() as (_uow, ctx):
            query = select(SupportCase)
            if after is not None:
                query = query.where(SupportCase.id > after)
            rows = await ctx.session.scalars(query.order_by(SupportCase.id).limit(size + 1))
            page, more = cut_page(list(rows), size)
        items = [_view(case) for case in page]
        cursor_out = encode_cursor(page[-1].id) if more else None
        return Page[SupportCaseView](items=items, next_cursor=cursor_out)

    patch.setattr(support_routes.list_cases, "__code__", list_cases.__code__)


def command_permission_unchecked(patch: pytest.MonkeyPatch) -> None:
    """Creating a command asks only whether the caller sees the vehicle, never the command's
    own permission: a driver sends a command the owner did not delegate."""
    real = command_routes.decide_each

    async def decide_each(request: Request, caller: Caller, asks: Any, **kwargs: Any) -> Any:
        decisions = await real(request, caller, asks, **kwargs)
        return [decisions[0]] * len(decisions)  # the read_status decision stands for all

    patch.setattr(command_routes, "decide_each", decide_each)


def step_up_unchecked_for_unlock(patch: pytest.MonkeyPatch) -> None:
    """Creating an unlock never asks for a step-up: the PDP's step-up-required answer on
    the unlock permission is taken for the allow it would otherwise be (a stolen or hour-old
    session opens the car). The other step-up commands keep their check."""
    real = command_routes.decide_each

    async def decide_each(request: Request, caller: Caller, asks: Any, **kwargs: Any) -> Any:
        decisions = list(await real(request, caller, asks, **kwargs))
        for index, ((permission, _), decision) in enumerate(zip(asks, decisions, strict=True)):
            if (
                permission is Permission.VEHICLE_UNLOCK
                and decision.reason is Reason.STEP_UP_REQUIRED
            ):
                decisions[index] = Decision(True, decisions[0].reason, decision.policy_version)
        return decisions

    patch.setattr(command_routes, "decide_each", decide_each)


# The delegable commands with no physical risk, asked as one: what the mutant below confuses.
_COMFORT: Final = frozenset(
    {Permission.VEHICLE_CHARGING_CONTROL, Permission.VEHICLE_DIAGNOSTICS_RUN}
)


def delegation_family_widened(patch: pytest.MonkeyPatch) -> None:
    """Creating a charging control or a diagnostics run asks the PDP for ``vehicle:climate``
    instead of the command's own permission (one "comfort" delegation for all three): a
    driver the owner lent climate stops the charging and runs diagnostics."""
    real = command_routes.decide_each

    async def decide_each(request: Request, caller: Caller, asks: Any, **kwargs: Any) -> Any:
        asked = [
            (Permission.VEHICLE_CLIMATE if permission in _COMFORT else permission, resource)
            for permission, resource in asks
        ]
        return await real(request, caller, asked, **kwargs)

    patch.setattr(command_routes, "decide_each", decide_each)


def _driver_comfort(case_id: str) -> bool:
    """The active driver's charging and diagnostics cases on their own side's vehicle (let
    through), and the open case's technician's diagnostics run on the case's vehicle (refused:
    a technician holds no climate, so the mutant turns their allowed run into a 403)."""
    parts = case_id.split("/")
    if len(parts) != 4 or parts[1] not in DELEGATION_FAMILY_FLAGGED:
        return False
    actor, target = parts[2], parts[3]
    role, state, side = actor.split(":")
    if parts[1] == DEALER_DIAGNOSTICS:
        return (role, state) == ("dealer_technician", "case-open") and target == f"consumer-{side}"
    return (role, state) == ("driver", "active") and target == f"consumer-{side}"


def cancel_requester_unchecked(patch: pytest.MonkeyPatch) -> None:
    """Cancelling a job finds it on the vehicle and asks whether the caller may send its
    command, but never whether the caller requested it: a driver lent climate cancels the
    owner's climate job, an operator the fleet admin's (a denial of service)."""

    async def own_job(
        request: Request, caller: Caller, vehicle_id: str, job_id: str, ctx: Any
    ) -> CommandJob:
        job = await ctx.session.scalar(
            select(CommandJob).where(CommandJob.id == job_id, CommandJob.vehicle_id == vehicle_id)
        )
        if job is None:
            await command_routes.authorize(
                request,
                caller,
                Permission.VEHICLE_READ_STATUS,
                ResourceRef.vehicle(vehicle_id),
                ctx=ctx,
            )
            raise command_routes.not_found()
        await command_routes.authorize(
            request, caller, Permission(job.command), ResourceRef.vehicle(vehicle_id), ctx=ctx
        )
        return job

    patch.setattr(command_routes, "_own_job", own_job)


JOB_CANCELS: Final = ("mobile:commands:cancel", "fleet:commands:cancel")


def _cancel_on_own_side(case_id: str, driver_state: str, operator_state: str) -> bool:
    """A cancel case of the driver in ``driver_state`` (mobile) or of the operator in
    ``operator_state`` (fleet), on their own side's vehicle."""
    parts = case_id.split("/")
    if len(parts) != 4 or parts[1] not in JOB_CANCELS:
        return False
    role, state, side = parts[2].split(":")
    if (role, state) == ("driver", driver_state):
        return parts[1] == JOB_CANCELS[0] and parts[3] == f"consumer-{side}"
    if (role, state) == ("fleet_operator", operator_state):
        return parts[1] == JOB_CANCELS[1] and parts[3] == f"fleet-{side}"
    return False


def _cancel_by_another(case_id: str) -> bool:
    """The refused cancels by someone who may send the job's command on the vehicle but did
    not request it: the active driver (the owner's climate job) and the assigned operator
    (the fleet admin's), on their own side's vehicle."""
    return _cancel_on_own_side(case_id, "active", "assigned")


def _no_step_up_unlock(case_id: str) -> bool:
    """A case of the unlock routes sent with an hour-old sign-in's token, or a recent
    password-only sign-in's: no step-up is asked for at all, so neither is refused."""
    return ":commands:unlock/" in case_id and case_id.endswith(WITHOUT_STEP_UP)


def step_up_strength_ignored(patch: pytest.MonkeyPatch) -> None:
    """The step-up reads the sign-in's age but not its strength: every known authentication
    class (a password alone included) reaches the policy as multi-factor, so a password-only
    sign-in from a minute ago opens, starts and immobilizes the car. An hour-old sign-in is
    still refused (its age is read)."""
    real = RequestContext.acr_level

    def acr_level(self: RequestContext) -> int:
        level: int = real.fget(self) if real.fget is not None else 0
        return max(level, Acr.MFA.strength) if level else 0  # workloads (no class) stay 0

    patch.setattr(RequestContext, "acr_level", property(acr_level))


def _password_only(case_id: str) -> bool:
    """A step-up command's case sent with a recent password-only sign-in's token."""
    return case_id.endswith("/password-only")


def cancel_permission_unchecked(patch: pytest.MonkeyPatch) -> None:
    """Cancelling a job checks that the caller requested it, but never asks whether they may
    still send its command: a driver revoked since asking (an operator moved off the group)
    still cancels their own queued job."""

    async def own_job(
        request: Request, caller: Caller, vehicle_id: str, job_id: str, ctx: Any
    ) -> CommandJob:
        job = await ctx.session.scalar(
            select(CommandJob).where(CommandJob.id == job_id, CommandJob.vehicle_id == vehicle_id)
        )
        if job is None or job.requested_by != caller.claims.sub:
            await command_routes.authorize(
                request,
                caller,
                Permission.VEHICLE_READ_STATUS,
                ResourceRef.vehicle(vehicle_id),
                ctx=ctx,
            )
            raise command_routes.not_found()
        return job  # the requester's, whatever they may do now

    patch.setattr(command_routes, "_own_job", own_job)


def _cancel_by_lapsed_requester(case_id: str) -> bool:
    """The refused cancels of their own queued job by a requester who lost its command: the
    revoked driver (mobile) and the moved operator (fleet), on their own side's vehicle."""
    return _cancel_on_own_side(case_id, "revoked", "reassigned")


def _m(
    name: str,
    breaks: str,
    apply: Apply,
    families: Iterable[Family],
    routes: Iterable[str],
    flagged: Iterable[str],
    exact: Callable[[str], bool] | None = None,
) -> Mutant:
    return Mutant(
        name,
        breaks,
        apply,
        frozenset(families),
        frozenset(routes),
        frozenset(flagged),
        exact,
    )


MATRIX: Final = (Family.MATRIX,)
DEALER_DIAGNOSTICS: Final = "dealer:commands:diagnostics_run"
DELEGATION_FAMILY_FLAGGED: Final = (
    "mobile:commands:charging_control",
    "mobile:commands:diagnostics_run",
    DEALER_DIAGNOSTICS,
)
NEW_COMMANDS: Final = (
    *(
        f"{surface}:commands:{command}"
        for surface in ("mobile", "fleet")
        for command in ("climate", "charging_control", "diagnostics_run")
    ),
    "dealer:commands:diagnostics_run",
)
COMMANDS: Final = (
    "mobile:commands:horn_lights",
    "mobile:commands:lock",
    "fleet:commands:horn_lights",
    "fleet:commands:lock",
)
STEP_UP_COMMANDS: Final = tuple(
    f"{surface}:commands:{command}"
    for surface in ("mobile", "fleet")
    for command in ("unlock", "remote_start", "immobilize")
)
VEHICLE_READS: Final = (
    "mobile:vehicles:read",
    "mobile:vehicles:status",
    "mobile:vehicles:list",
    "fleet:vehicles:read",
    "fleet:vehicles:status",
    "fleet:vehicles:list",
)
PARTNER_READS: Final = (
    "partner:vehicles:status",
    "partner:trips:list",
    "partner:charging:list",
    "partner:consents:list",
)


class LooseCampaignBody(ota_routes.CampaignBody):
    """The campaign body with its guard down: unknown fields are kept, not refused."""

    model_config = ConfigDict(extra="allow", frozen=True)


def status_mass_assigned(patch: pytest.MonkeyPatch) -> None:
    """POST /admin/v1/ota/campaigns takes any field, and applies ``status`` when sent."""
    router = ota_routes.router
    index, route = next(
        (i, r)
        for i, r in enumerate(router.routes)
        if getattr(r, "name", "") == "admin:ota:campaigns:create"
    )
    assert isinstance(route, APIRoute)
    original = route.endpoint

    async def create_campaign(
        body: LooseCampaignBody, request: Request, caller: Caller = ota_routes.stepped_up_engineer
    ) -> Any:
        view = await original(body=body, request=request, caller=caller)
        status = (body.model_extra or {}).get("status")
        if status is not None:
            platform = request.app.state.platform
            async with platform.services() as (uow, ctx):
                campaign = await ctx.session.get(OtaCampaign, view.id)
                assert campaign is not None
                campaign.status = CampaignStatus(status)
                await uow.commit()
            view = view.model_copy(update={"status": CampaignStatus(status)})
        return view

    create_campaign.__dict__.update(original.__dict__)  # its catalog entry
    mutated = type(route)(
        route.path,
        create_campaign,
        methods=list(route.methods),
        name=route.name,
        status_code=route.status_code,
        response_model=route.response_model,
        dependencies=list(route.dependencies),
    )
    routes = list(router.routes)
    routes[index] = mutated
    patch.setattr(router, "routes", routes)
    patch.setattr(router, "_routes_version", router._routes_version + 1)


def vehicles_filtered_after_paging(patch: pytest.MonkeyPatch) -> None:
    """The vehicle lists drop their SQL filter: a page of the whole table is cut first, and
    the per-row decision filters it afterwards (short pages, holes, others' ids in cursors)."""

    def related_vehicles(caller: Caller, now: datetime) -> Any:
        return true()

    patch.setattr(vehicle_routes, "related_vehicles", related_vehicles)


def closed_case_kept(patch: pytest.MonkeyPatch) -> None:
    """A dealer case's status is not read: a technician keeps access after the case closed.
    (The loader's statement of the technician's cases is answered with every case OPEN; its
    other statements are answered as they are.)"""
    real = loader_module.read_rows
    status = DealerCase.__table__.c.status

    async def read_rows(session: Any, statement: Any, params: Any = None) -> Any:
        rows = await real(session, statement, params)
        columns = list(getattr(statement, "selected_columns", ()))
        at = next(
            (
                i
                for i, c in enumerate(columns)
                if getattr(c, "table", None) is status.table and c.name == "status"
            ),
            None,
        )
        if at is None:
            return rows
        return [(*row[:at], CaseStatus.OPEN, *row[at + 1 :]) for row in rows]

    patch.setattr(loader_module, "read_rows", read_rows)


MUTANTS: Final[tuple[Mutant, ...]] = (
    _m(
        "object-check-missing",
        "GET /fleet/v1/vehicles/{id} never asks the PDP about the vehicle",
        skip_authorize(vehicle_routes, "fleet:vehicles:read"),
        MATRIX,
        ("fleet:vehicles:read", "fleet:vehicles:status"),
        ("fleet:vehicles:read",),
    ),
    _m(
        "driver-window-unchecked",
        "an expired driver delegation is kept, its end never read",
        driver_window_ignored,
        MATRIX,
        VEHICLE_READS,
        ("mobile:vehicles:read", "mobile:vehicles:status"),
    ),
    _m(
        "former-owner-not-revoked",
        "the end of an ownership is ignored: the seller still owns the sold vehicle",
        former_owner_kept,
        MATRIX,
        VEHICLE_READS,
        ("mobile:vehicles:read", "mobile:vehicles:status"),
    ),
    _m(
        "partner-scope-ignored",
        "a consent's actions are ignored: the partner gets every permission",
        partner_scope_widened,
        MATRIX,
        PARTNER_READS,
        ("partner:trips:list",),
    ),
    _m(
        "consent-revocation-ignored",
        "a revoked consent stays in force",
        consent_revocation_ignored,
        MATRIX,
        PARTNER_READS,
        ("partner:vehicles:status", "partner:charging:list"),
    ),
    _m(
        "operator-other-group",
        "an operator reaches the vehicles of every group of the fleet, not just their own",
        operator_group_ignored,
        MATRIX,
        VEHICLE_READS,
        ("fleet:vehicles:read", "fleet:vehicles:status"),
    ),
    _m(
        "support-list-unfiltered",
        "the support case list has no case filter: every case of every agent",
        support_list_unfiltered,
        MATRIX,
        ("support:cases:list", "support:cases:read"),
        ("support:cases:list",),
    ),
    _m(
        "admin-role-check-missing",
        "GET /admin/v1/tenants never asks whether the caller administers tenants",
        skip_authorize(tenancy_routes, "admin:tenants:list"),
        (Family.MATRIX, Family.FUNCTION),
        ("admin:tenants:list", "admin:clients:list"),
        ("admin:tenants:list",),
    ),
    _m(
        "not-found-oracle",
        "an object route's refusal names its reason: existing ids answer another 404",
        refusal_names_its_reason,
        MATRIX,
        ("mobile:vehicles:read", "fleet:vehicles:read"),
        ("mobile:vehicles:read", "fleet:vehicles:read"),
    ),
    _m(
        "closed-case-kept",
        "a dealer technician keeps the vehicle after their case closed",
        closed_case_kept,
        MATRIX,
        ("dealer:vehicles:read", "dealer:diagnostics:list", "dealer:cases:list"),
        ("dealer:vehicles:read", "dealer:diagnostics:list"),
    ),
    _m(
        "status-mass-assignment",
        "the OTA campaign body accepts unknown fields and applies the status it is sent",
        status_mass_assigned,
        (Family.PROPERTY,),
        ("admin:ota:campaigns:create",),
        ("admin:ota:campaigns:create",),
    ),
    _m(
        "list-filtered-after-paging",
        "the vehicle list pages the whole table, then filters the page in Python",
        vehicles_filtered_after_paging,
        MATRIX,
        ("mobile:vehicles:list", "fleet:vehicles:list"),
        ("mobile:vehicles:list", "fleet:vehicles:list"),
    ),
    _m(
        "audience-unchecked",
        "a token for any surface is accepted on every surface (audience not compared)",
        audience_ignored,
        (Family.REPLAY,),
        ("mobile:vehicles:list", "fleet:vehicles:list", "admin:tenants:list"),
        ("mobile:vehicles:list", "fleet:vehicles:list", "admin:tenants:list"),
    ),
    _m(
        "command-permission-unchecked",
        "creating a command asks whether the caller sees the vehicle, never whether they may "
        "send that command: a driver honks a car whose owner delegated lock only",
        command_permission_unchecked,
        MATRIX,
        COMMANDS,
        ("mobile:commands:horn_lights",),
    ),
    _m(
        "step-up-unchecked-for-unlock",
        "creating an unlock takes the PDP's step-up-required for the allow it would otherwise "
        "be: an owner, fleet admin or operator whose multi-factor sign-in is an hour old "
        "opens the car",
        step_up_unchecked_for_unlock,
        MATRIX,
        (*COMMANDS, *STEP_UP_COMMANDS),
        ("mobile:commands:unlock", "fleet:commands:unlock"),
        exact=_no_step_up_unlock,
    ),
    _m(
        "delegation-family-widened",
        "creating a charging control or diagnostics run asks the climate permission instead of "
        "its own: a driver lent climate stops the charging and runs diagnostics",
        delegation_family_widened,
        MATRIX,
        (*COMMANDS, *NEW_COMMANDS),
        DELEGATION_FAMILY_FLAGGED,
        exact=_driver_comfort,
    ),
    _m(
        "step-up-strength-unchecked",
        "the step-up reads the sign-in's age but not its strength (acr): a password-only "
        "sign-in from a minute ago unlocks, starts and immobilizes the car",
        step_up_strength_ignored,
        MATRIX,
        (*COMMANDS, *STEP_UP_COMMANDS),
        STEP_UP_COMMANDS,
        exact=_password_only,
    ),
    # Last: their broken cancels consume the seeded spare jobs the run shares.
    _m(
        "cancel-permission-unchecked",
        "cancelling a job checks its requester but never whether they may still send its "
        "command: a driver revoked since asking, an operator moved off the group, cancels",
        cancel_permission_unchecked,
        MATRIX,
        JOB_CANCELS,
        JOB_CANCELS,
        exact=_cancel_by_lapsed_requester,
    ),
    _m(
        "cancel-requester-unchecked",
        "cancelling a job never asks whether the caller requested it: a driver cancels the "
        "owner's climate job, an operator the fleet admin's",
        cancel_requester_unchecked,
        MATRIX,
        JOB_CANCELS,
        JOB_CANCELS,
        exact=_cancel_by_another,
    ),
)
