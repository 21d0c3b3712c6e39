"""Audit events of the login pages. Reasons are stable codes; no password, code, seed or
submitted username is ever recorded (an unknown account appears as a hash of the name)."""

from __future__ import annotations

from fleetward.audit.events import Decision, EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.errors import JsonValue
from fleetward.identity.acr import Acr, Amr
from fleetward.identity.login.limits import Factor, ThrottleKey
from fleetward.identity.models import User
from fleetward.services import ServiceContext

# Failed attempts have no authenticated actor: the login component records them.
LOGIN_COMPONENT = Actor.system("login")


def user_target(user: User) -> Target:
    return Target("user", user.id, user.home_tenant_id)


def target_for(user: User | None, account: str) -> Target:
    return Target("account", account) if user is None else user_target(user)


def failed(
    ctx: ServiceContext,
    target: Target,
    *,
    factor: Factor,
    reason: str,
    network: str,
    client: str | None,
) -> None:
    """``client``: the registered client the login was started for (None: none named, or
    not a registered one); the credential-stuffing rule counts failures per client."""
    details: dict[str, JsonValue] = {"factor": factor.value, "network": network}
    if client is not None:
        details["client"] = client
    ctx.audit.record(
        ctx.session,
        EventName.LOGIN_FAILED,
        actor=LOGIN_COMPONENT,
        target=target,
        decision=Decision.DENIED,
        reason=reason,
        details=details,
    )


def locked_out(ctx: ServiceContext, target: Target, key: ThrottleKey) -> None:
    ctx.audit.record(
        ctx.session,
        EventName.LOGIN_LOCKED_OUT,
        actor=LOGIN_COMPONENT,
        target=target,
        decision=Decision.DENIED,
        reason=f"{key.factor.value}:{key.dimension.value}",
        details={"limit": key.limit},
    )


def spraying(ctx: ServiceContext, network: str) -> None:
    ctx.audit.record(
        ctx.session,
        EventName.LOGIN_SPRAYING_DETECTED,
        actor=LOGIN_COMPONENT,
        target=Target("network", network),
        decision=Decision.DENIED,
        reason="distinct-accounts",
    )


def succeeded(ctx: ServiceContext, user: User, *, acr: Acr, amr: list[Amr], network: str) -> None:
    ctx.audit.record(
        ctx.session,
        EventName.LOGIN_SUCCEEDED,
        actor=Actor.user(user.id, user.home_tenant_id),
        target=user_target(user),
        details={"acr": acr.value, "amr": [a.value for a in amr], "network": network},
    )


def ended(ctx: ServiceContext, user_id: str, tenant_id: str | None) -> None:
    ctx.audit.record(
        ctx.session,
        EventName.LOGIN_ENDED,
        actor=Actor.user(user_id, tenant_id),
        target=Target("user", user_id, tenant_id),
    )
