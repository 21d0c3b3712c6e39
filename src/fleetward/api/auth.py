"""Authentication of API callers on every surface: one dependency, used by every router.

For a route of surface S it accepts exactly an access token for S: validated by the
platform's AccessTokenValidator (signature, issuer, audience = S, ``at+jwt``, times,
revocation), sender-constrained when the token is DPoP-bound (a bound token presented as a
plain Bearer token is refused: no downgrade), bounded by scope (the route's permission must
be among the token's scopes, which bound whatever a relationship could grant), and fresh and
strong enough when the route demands step-up (RFC 9470).

The route's permission comes from its catalog entry, so a route cannot forget to declare it;
an endpoint without an entry is refused (fail closed).

Once the token is verified, its facts (client, token id and family, acr/amr, scope, surface,
route name) are bound to the request context, so every audit event the request records
carries them without each caller passing them (audit/recorder.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from fastapi import Request

from fleetward.api.quota_guard import charge_request
from fleetward.catalog.entry import AUTHENTICATED, PUBLIC, entry_of
from fleetward.core.context import CallerFacts, current_request
from fleetward.core.errors import FleetwardError, Forbidden, Unauthenticated
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr
from fleetward.identity.tokens import AccessTokenClaims, InvalidDpopProof, InvalidToken
from fleetward.platform import Platform

_MAX_AUTHORIZATION_HEADER = 8192


class AuthenticationRequired(Unauthenticated):
    code = "authentication-required"
    title = "Authentication required"


class InsufficientScope(Forbidden):
    code = "insufficient-scope"
    title = "Insufficient scope"


class StepUpRequired(Unauthenticated):
    code = "insufficient-user-authentication"
    title = "Stronger or more recent authentication required"


class RouteNotCatalogued(FleetwardError):
    """An authenticated dependency on an endpoint the catalog does not know: refuse."""

    code = "route-not-catalogued"


@dataclass(frozen=True, slots=True)
class StepUp:
    """What a route or command demands of the person's authentication (RFC 9470)."""

    acr: Acr = Acr.MFA
    max_age: timedelta = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller of one request (claims already verified)."""

    claims: AccessTokenClaims
    surface: Surface
    dpop_jkt: str | None


def _challenge(scheme: str, error: str, description: str, **params: str) -> dict[str, str]:
    parts = [f'error="{error}"', f'error_description="{description}"']
    parts += [f'{key}="{value}"' for key, value in params.items()]
    return {"WWW-Authenticate": f"{scheme} " + ", ".join(parts)}


def step_up_challenge(step_up: StepUp) -> dict[str, str]:
    """The RFC 9470 ``insufficient_user_authentication`` challenge for ``step_up``."""
    return _challenge(
        "Bearer",
        "insufficient_user_authentication",
        "a stronger or more recent authentication is required",
        acr_values=step_up.acr.value,
        max_age=str(int(step_up.max_age.total_seconds())),
    )


def _refused(scheme: str, reason: str) -> AuthenticationRequired:
    return AuthenticationRequired(
        "a valid access token for this API is required",
        reason=reason,
        headers=_challenge(scheme, "invalid_token", "the access token is not valid"),
    )


def authenticate(
    surface: Surface, *, step_up: StepUp | None = None
) -> Callable[[Request], Awaitable[Caller]]:
    """A FastAPI dependency that authenticates the caller of a ``surface`` route."""

    async def dependency(request: Request) -> Caller:
        entry = entry_of(request.scope.get("endpoint"))
        if entry is None or entry.permission is PUBLIC:
            # An authenticated route must be catalogued with a permission; anything else
            # is a wiring error, refused rather than guessed.
            raise RouteNotCatalogued("the route is not catalogued for authenticated callers")
        platform: Platform = request.app.state.platform
        await request.app.state.revocation_gate.ensure()
        scheme_lower, token = _presented(request)
        try:
            claims = await platform.identity.validator.validate(token, surface=surface)
        except InvalidToken as exc:
            scheme_name = "DPoP" if scheme_lower == "dpop" else "Bearer"
            raise _refused(scheme_name, exc.reason or "invalid") from None
        _bind_caller(request, claims, surface)
        jkt = await _sender_constraint(request, platform, scheme_lower, token, claims)
        permission = entry.permission
        if permission is not AUTHENTICATED and permission.value not in claims.scopes:
            raise InsufficientScope(
                "the token's scope does not cover this operation",
                reason="scope",
                headers=_challenge(
                    "Bearer", "insufficient_scope", "scope too narrow", scope=permission.value
                ),
            )
        if step_up is not None:
            _check_step_up(claims, step_up, platform)
        caller = Caller(claims=claims, surface=surface, dpop_jkt=jkt)
        # Every authenticated request pays for what it targets, before any object is looked
        # at (a guess costs as much as a hit): api/quota_guard.py.
        await charge_request(request, caller)
        return caller

    return dependency


def _presented(request: Request) -> tuple[str, str]:
    """The scheme (lower case) and token of the request's Authorization header."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    scheme_lower = scheme.lower()
    if not header or len(header) > _MAX_AUTHORIZATION_HEADER:
        raise _refused("Bearer", "missing-token")
    if scheme_lower not in ("bearer", "dpop") or not token or " " in token.strip():
        raise _refused("Bearer", "malformed-authorization")
    return scheme_lower, token.strip()


async def still_valid(request: Request, caller: Caller) -> bool:
    """Whether the token this request was authenticated with is still valid now (signature,
    expiry, revocations since): for a request that goes on (a stream), asked again later."""
    try:
        await require_still_valid(request, caller)
    except AuthenticationRequired:
        return False
    return True


async def require_still_valid(request: Request, caller: Caller) -> None:
    """The 401 an invalid token gets, unless the token this request was authenticated with
    is still valid now: for a request that acts after waiting (a command judged after its
    flow charge, a same-key twin or the store's write lock), asked before it commits."""
    scheme_lower, token = _presented(request)
    platform: Platform = request.app.state.platform
    try:
        await platform.identity.validator.validate(token, surface=caller.surface)
    except InvalidToken as exc:
        scheme_name = "DPoP" if scheme_lower == "dpop" else "Bearer"
        raise _refused(scheme_name, exc.reason or "invalid") from None


def _route_name(request: Request) -> str | None:
    route = request.scope.get("route")
    name = getattr(route, "name", None)
    return name[:128] if isinstance(name, str) else None


def _bind_caller(request: Request, claims: AccessTokenClaims, surface: Surface) -> None:
    """Facts of a token whose signature, issuer, audience, times and revocation were checked.
    Bound before the sender constraint on purpose: a stolen bound token presented without
    its key is exactly what an investigator needs to see (by jti, never the token)."""
    context = current_request()
    if context is None:
        return
    context.bind_caller(
        CallerFacts(
            client_id=claims.client_id,
            token_id=claims.jti,
            token_family=claims.fam,
            subject_type=claims.sub_type,
            subject_id=claims.sub,
            tenant_id=claims.tenant,
            acr=claims.acr,
            amr=" ".join(claims.amr)[:64],
            scope=claims.scope[:1024],
            surface=surface.value,
            endpoint=_route_name(request),
        )
    )


async def _sender_constraint(
    request: Request, platform: Platform, scheme: str, token: str, claims: AccessTokenClaims
) -> str | None:
    if claims.cnf_jkt is None:
        if scheme == "dpop":
            # A DPoP scheme with an unbound token would let a client claim a binding it lacks.
            raise _refused("DPoP", "not-dpop-bound")
        return None
    if scheme != "dpop":
        raise _refused("DPoP", "dpop-downgrade")  # a bound token used as a plain Bearer token
    # Exactly one proof (RFC 9449 section 4.3, check 1): headers.get would silently pick the
    # first of several header fields, and "," catches several proofs folded into one.
    proofs = request.headers.getlist("dpop")
    proof = proofs[0] if len(proofs) == 1 else None
    if not proof or "," in proof:
        raise _refused("DPoP", "missing-dpop-proof")
    try:
        return await platform.identity.dpop.verify(
            proof,
            method=request.method,
            url=_public_url(platform, request),
            access_token=token,
            expected_jkt=claims.cnf_jkt,
        )
    except InvalidDpopProof as exc:
        raise _refused("DPoP", f"dpop-{exc.reason}") from None


def _public_url(platform: Platform, request: Request) -> str:
    """The URL the client was told to use for this request: the configured issuer's origin
    and prefix with the request's path (a DPoP ``htu`` has no query). Never the Host header
    or the connection's scheme, as at the token endpoint: the Host is the caller's to choose,
    and behind a TLS-terminating proxy the scheme here is ``http`` while the client's proof
    says ``https``. The path is the one the client sent, still percent-encoded (the htu
    comparison normalises encodings itself): decoded, an encoded space made every proof for
    such a path fail, and an encoded ``?`` or ``#`` would read as the path's end."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) and raw else request.url.path
    return platform.identity.issuer.rstrip("/") + path


def _check_step_up(claims: AccessTokenClaims, step_up: StepUp, platform: Platform) -> None:
    try:
        strong_enough = Acr(claims.acr).satisfies(step_up.acr)
    except ValueError:
        strong_enough = False  # an acr we do not know is no acr at all
    age = platform.clock.now() - claims.authenticated_at
    if strong_enough and age <= step_up.max_age:
        return
    raise StepUpRequired(
        "this operation needs a stronger or more recent sign-in",
        reason="acr" if not strong_enough else "max-age",
        headers=step_up_challenge(step_up),
    )
