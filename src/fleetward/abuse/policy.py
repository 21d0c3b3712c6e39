"""The configured limits, and how one request becomes the charges it pays.

A request made by an actor (a user through a client, or a client acting as itself) in a
tenant, targeting N objects, costs N (:func:`~fleetward.abuse.quotas.request_cost`) against
its user, client, tenant and the global limit. A remote command also pays N against the
actor's limit for that command type, and 1 against each targeted vehicle's command limit
(a vehicle is commanded once per request however many others are in it). A sensitive flow
(unlock attempts, ownership transfers, logins, ...) pays against its own semantic limit,
per object or per request as the flow counts.

The defaults are starting points for a vehicle platform: a person acts on a handful of
vehicles, a fleet operator on hundreds (a bulk command to thousands needs an approved
raise, :mod:`fleetward.abuse.raised`), and no vehicle needs more than a few commands a
minute.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from fleetward.abuse.errors import TooManyTargets
from fleetward.abuse.quotas import MAX_CHARGES, Charge, Dimension, Limit, request_cost
from fleetward.abuse.raised import InMemoryRaisedQuotas, RaisedQuota, RaisedQuotas
from fleetward.authz.permissions import Permission
from fleetward.settings import Settings

MINUTE: Final = timedelta(minutes=1)
HOUR: Final = timedelta(hours=1)
DAY: Final = timedelta(days=1)
GLOBAL_SUBJECT: Final = "platform"
# Charges beside the per-vehicle ones: flow, command, user, client, tenant, global.
_FIXED_CHARGES: Final = 6


class Degrade(StrEnum):
    """What to do when the shared quota store is unreachable, chosen per route (catalog)."""

    FAIL_CLOSED = "fail_closed"  # refuse with 503 quota-store-down
    LOCAL_LIMIT = "local_limit"  # count in this process's buckets instead (reads only)


class Flow(StrEnum):
    """Sensitive flows with a semantic limit of their own."""

    REMOTE_UNLOCK = "remote-unlock"
    BULK_LOCATION = "bulk-location"
    DRIVER_INVITATION = "driver-invitation"
    OWNERSHIP_TRANSFER = "ownership-transfer"
    ACCOUNT_CREATION = "account-creation"
    LOGIN = "login"
    TOTP = "totp"
    RECOVERY = "recovery"
    DIAGNOSTIC_REQUEST = "diagnostic-request"
    TELEMETRY_EXPORT = "telemetry-export"
    BULK_FLEET_COMMAND = "bulk-fleet-command"


@dataclass(frozen=True, slots=True)
class FlowLimit:
    limit: Limit
    # True: each targeted object counts (bulk location: 1,000 vehicles cost 1,000);
    # False: each request counts once (one ownership transfer is one transfer).
    per_object: bool


def _flow(flow: Flow, capacity: int, window: timedelta, *, per_object: bool) -> FlowLimit:
    return FlowLimit(Limit(f"flow-{flow}", capacity, window), per_object)


DEFAULT_FLOWS: Final[Mapping[Flow, FlowLimit]] = MappingProxyType(
    {
        Flow.REMOTE_UNLOCK: _flow(Flow.REMOTE_UNLOCK, 30, HOUR, per_object=True),
        Flow.BULK_LOCATION: _flow(Flow.BULK_LOCATION, 5_000, HOUR, per_object=True),
        Flow.DRIVER_INVITATION: _flow(Flow.DRIVER_INVITATION, 20, DAY, per_object=False),
        Flow.OWNERSHIP_TRANSFER: _flow(Flow.OWNERSHIP_TRANSFER, 5, DAY, per_object=False),
        Flow.ACCOUNT_CREATION: _flow(Flow.ACCOUNT_CREATION, 20, HOUR, per_object=False),
        Flow.LOGIN: _flow(Flow.LOGIN, 60, HOUR, per_object=False),
        Flow.TOTP: _flow(Flow.TOTP, 30, HOUR, per_object=False),
        Flow.RECOVERY: _flow(Flow.RECOVERY, 10, DAY, per_object=False),
        Flow.DIAGNOSTIC_REQUEST: _flow(Flow.DIAGNOSTIC_REQUEST, 30, HOUR, per_object=True),
        Flow.TELEMETRY_EXPORT: _flow(Flow.TELEMETRY_EXPORT, 20, DAY, per_object=False),
        Flow.BULK_FLEET_COMMAND: _flow(Flow.BULK_FLEET_COMMAND, 20, HOUR, per_object=False),
    }
)

# Objects per minute (the settings' quota_*_per_minute change the capacities).
DEFAULT_USER: Final = Limit("user-objects", 600, MINUTE)
# A public mobile app is one client for every consumer: its limit is a platform-scale one.
DEFAULT_CLIENT: Final = Limit("client-objects", 120_000, MINUTE)
DEFAULT_TENANT: Final = Limit("tenant-objects", 120_000, MINUTE)
DEFAULT_GLOBAL: Final = Limit("global-objects", 1_200_000, MINUTE)
# Commands per vehicle per minute, whoever sends them.
DEFAULT_VEHICLE_COMMANDS: Final = Limit("vehicle-commands", 10, MINUTE)

# Objects per minute per actor and command type; the default for families not listed.
DEFAULT_COMMAND_CAPACITY: Final = 300
DEFAULT_COMMAND_CAPACITIES: Final[Mapping[Permission, int]] = MappingProxyType(
    {
        Permission.VEHICLE_UNLOCK: 100,
        Permission.VEHICLE_REMOTE_START: 100,
        Permission.VEHICLE_IMMOBILIZE: 20,
    }
)


def command_limit_name(command: Permission) -> str:
    return f"command-{command.value}"


@dataclass(frozen=True, slots=True)
class QuotaPlan:
    """The charges one request pays, its cost, the raised quotas they use (to audit) and
    whether the request may degrade to a local limit when the shared store is down."""

    charges: tuple[Charge, ...]
    cost: int
    raised: tuple[RaisedQuota, ...]
    may_degrade: bool


@dataclass(frozen=True, slots=True)
class QuotaPolicy:
    user: Limit = DEFAULT_USER
    client: Limit = DEFAULT_CLIENT
    tenant: Limit = DEFAULT_TENANT
    platform: Limit = DEFAULT_GLOBAL
    vehicle_commands: Limit = DEFAULT_VEHICLE_COMMANDS
    command_capacity: int = DEFAULT_COMMAND_CAPACITY
    command_capacities: Mapping[Permission, int] = field(
        default_factory=lambda: DEFAULT_COMMAND_CAPACITIES
    )
    flows: Mapping[Flow, FlowLimit] = field(default_factory=lambda: DEFAULT_FLOWS)
    max_targets: int = 10_000
    raised: RaisedQuotas = field(default_factory=InMemoryRaisedQuotas)

    def __post_init__(self) -> None:
        if not 1 <= self.max_targets <= MAX_CHARGES - _FIXED_CHARGES:
            raise ValueError(f"max_targets must be in 1..{MAX_CHARGES - _FIXED_CHARGES}")
        missing = set(Flow) - set(self.flows)
        if missing:
            raise ValueError(f"no limit for flows: {sorted(missing)}")

    @classmethod
    def from_settings(cls, settings: Settings) -> QuotaPolicy:
        """The policy the settings configure; raises ``ValueError`` if a raised quota names
        an unknown limit or the global one (the platform's own protection is never raised),
        or ``quota_flows`` names no flow."""
        raised = [
            RaisedQuota(r.tenant, r.limit, r.capacity, r.owner, r.reason, r.expires_at)
            for r in settings.quota_raised
        ]
        flows = dict(DEFAULT_FLOWS)
        for name, capacity in settings.quota_flows.items():
            try:
                flow = Flow(name)
            except ValueError:
                raise ValueError(f"quota_flows: {name!r} is not a flow") from None
            old = flows[flow]
            flows[flow] = FlowLimit(old.limit.with_capacity(capacity), old.per_object)
        policy = cls(
            user=DEFAULT_USER.with_capacity(settings.quota_user_per_minute),
            client=DEFAULT_CLIENT.with_capacity(settings.quota_client_per_minute),
            tenant=DEFAULT_TENANT.with_capacity(settings.quota_tenant_per_minute),
            platform=DEFAULT_GLOBAL.with_capacity(settings.quota_global_per_minute),
            vehicle_commands=DEFAULT_VEHICLE_COMMANDS.with_capacity(
                settings.quota_vehicle_commands_per_minute
            ),
            max_targets=settings.quota_max_targets,
            flows=MappingProxyType(flows),
            raised=InMemoryRaisedQuotas(raised),
        )
        raisable = policy.limit_names() - {policy.platform.name}
        for quota in raised:
            if quota.limit_name not in raisable:
                raise ValueError(
                    f"quota_raised: {quota.limit_name!r} is not a limit that can be raised"
                )
        return policy

    def command_limit(self, command: Permission) -> Limit:
        capacity = self.command_capacities.get(command, self.command_capacity)
        return Limit(command_limit_name(command), capacity, MINUTE)

    def limit_names(self) -> set[str]:
        names = {
            self.user.name,
            self.client.name,
            self.tenant.name,
            self.platform.name,
            self.vehicle_commands.name,
        }
        names |= {command_limit_name(p) for p in Permission}
        names |= {flow.limit.name for flow in self.flows.values()}
        return names

    def plan(
        self,
        *,
        tenant: str,
        client: str,
        now: datetime,
        user: str | None = None,
        vehicles: Sequence[str] = (),
        objects: int = 0,
        command: Permission | None = None,
        flow: Flow | None = None,
        flow_subject: str | None = None,
    ) -> QuotaPlan:
        """The charges for one request.

        ``user`` is the signed-in person (``None`` when a client acts as itself: a partner
        or workload with client credentials; the client is then the actor). ``vehicles``
        are the vehicle ids the request targets (repeats count), ``objects`` any other
        objects it targets. ``command`` is the command family of a remote command;
        ``flow`` a sensitive flow, counted for ``flow_subject`` when no one is signed in
        yet (a hashed username, a network) and for the actor otherwise.

        Ids must be the validated ids of the request (route parameters, body fields already
        parsed); a subject over 256 characters or with control characters is a
        ``ValueError``, not something to pass through.

        Raises :class:`~fleetward.abuse.errors.TooManyTargets` above ``max_targets``.
        """
        if type(objects) is not int or objects < 0:
            raise ValueError("objects must be a non-negative int")
        targets = len(vehicles) + objects
        if targets > self.max_targets:
            raise TooManyTargets(targets, self.max_targets)
        cost = request_cost(targets)
        actor = user if user is not None else client
        charges: list[Charge] = []
        if flow is not None:
            flow_limit = self.flows[flow]
            subject = flow_subject if user is None and flow_subject is not None else actor
            fixed = None if flow_limit.per_object else 1
            charges.append(Charge(Dimension.FLOW, subject, flow_limit.limit, fixed))
        if command is not None:
            charges.append(Charge(Dimension.COMMAND, actor, self.command_limit(command)))
            for vehicle, times in Counter(vehicles).items():
                charges.append(Charge(Dimension.VEHICLE, vehicle, self.vehicle_commands, times))
        if user is not None:
            charges.append(Charge(Dimension.USER, user, self.user))
        charges.append(Charge(Dimension.CLIENT, client, self.client))
        charges.append(Charge(Dimension.TENANT, tenant, self.tenant))
        charges.append(Charge(Dimension.GLOBAL, GLOBAL_SUBJECT, self.platform))
        raised_charges, used = self._apply_raises(charges, tenant, now)
        return QuotaPlan(
            charges=tuple(raised_charges),
            cost=cost,
            raised=used,
            may_degrade=command is None and flow is None,
        )

    def plan_flow(
        self,
        flow: Flow,
        *,
        tenant: str,
        client: str,
        now: datetime,
        user: str | None = None,
        objects: int = 1,
        flow_subject: str | None = None,
    ) -> QuotaPlan:
        """The flow's own charge alone, for a request whose user, client, tenant and global
        charges were already drawn (``api.quota_guard.charge_request`` draws them for every
        request; a route then adds its flow). Same subjects, raises and bounds as
        :meth:`plan`; never degrades."""
        if type(objects) is not int or objects < 0:
            raise ValueError("objects must be a non-negative int")
        if objects > self.max_targets:
            raise TooManyTargets(objects, self.max_targets)
        flow_limit = self.flows[flow]
        actor = user if user is not None else client
        subject = flow_subject if user is None and flow_subject is not None else actor
        fixed = None if flow_limit.per_object else 1
        charge = Charge(Dimension.FLOW, subject, flow_limit.limit, fixed)
        charges, used = self._apply_raises([charge], tenant, now)
        return QuotaPlan(
            charges=tuple(charges), cost=request_cost(objects), raised=used, may_degrade=False
        )

    def plan_command(
        self,
        command: Permission,
        *,
        tenant: str,
        client: str,
        now: datetime,
        vehicles: Sequence[str],
        user: str | None = None,
    ) -> QuotaPlan:
        """A remote command's own charges alone (per actor and command type, per vehicle),
        for a request whose user, client, tenant and global charges were already drawn by
        ``api.quota_guard.charge_request``: the same objects are never paid for twice. Same
        subjects, raises and bounds as :meth:`plan`; never degrades."""
        if not vehicles:
            raise ValueError("a command targets at least one vehicle")
        if len(vehicles) > self.max_targets:
            raise TooManyTargets(len(vehicles), self.max_targets)
        actor = user if user is not None else client
        charges = [Charge(Dimension.COMMAND, actor, self.command_limit(command))]
        for vehicle, times in Counter(vehicles).items():
            charges.append(Charge(Dimension.VEHICLE, vehicle, self.vehicle_commands, times))
        raised, used = self._apply_raises(charges, tenant, now)
        return QuotaPlan(
            charges=tuple(raised), cost=request_cost(len(vehicles)), raised=used, may_degrade=False
        )

    def plan_vehicle_commands(
        self, *, tenant: str, now: datetime, vehicles: Sequence[str]
    ) -> QuotaPlan:
        """The per-vehicle command charges alone (``vehicle-commands``, one unit per targeted
        vehicle, with the tenant's raises): what a car receiving commands pays when a bulk
        request's jobs are created later than the request was charged (at its approval:
        ``commands.bulk``). Never degrades."""
        if not vehicles:
            raise ValueError("a command targets at least one vehicle")
        if len(vehicles) > self.max_targets:
            raise TooManyTargets(len(vehicles), self.max_targets)
        charges = [
            Charge(Dimension.VEHICLE, vehicle, self.vehicle_commands, times)
            for vehicle, times in Counter(vehicles).items()
        ]
        raised, used = self._apply_raises(charges, tenant, now)
        return QuotaPlan(
            charges=tuple(raised), cost=request_cost(len(vehicles)), raised=used, may_degrade=False
        )

    def _apply_raises(
        self, charges: list[Charge], tenant: str, now: datetime
    ) -> tuple[list[Charge], tuple[RaisedQuota, ...]]:
        """Charges with the tenant's valid raises applied (never to the global limit), and
        the raises that were applied. A "raise" at or below the configured capacity is not
        used: a raise never lowers a limit."""
        looked_up: dict[str, RaisedQuota | None] = {}
        used: dict[str, RaisedQuota] = {}
        result: list[Charge] = []
        for charge in charges:
            limit = charge.limit
            if charge.dimension is Dimension.GLOBAL:
                result.append(charge)
                continue
            if limit.name not in looked_up:
                looked_up[limit.name] = self.raised.lookup(tenant, limit.name, now)
            quota = looked_up[limit.name]
            if quota is None or quota.capacity <= limit.capacity:
                result.append(charge)
                continue
            used[limit.name] = quota
            raised = limit.with_capacity(quota.capacity)
            result.append(Charge(charge.dimension, charge.subject, raised, charge.fixed_cost))
        return result, tuple(used.values())
