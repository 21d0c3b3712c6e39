"""The probe's seeding hook: ``fleetward probe seed --out world.json``.

Runs ON the deployment host, in-process with the platform's settings (it is the one place the
probe touches the store; the prober itself speaks HTTP only). Every run makes a fresh world
(``run_id`` in every username, slug and client id), so seeding twice never collides:

* two sides (``home``, ``away``), each with its own consumer, fleet, dealer, operator and
  partner tenants, and on each side one actor per role and relationship state of the demo
  spec, with a password and a TOTP factor (users) or a registered partner client and its
  private key (partners);
* the objects each actor is probed against, with random canary strings in their labels,
  notes, names and summaries, and spare twins for the routes that consume their target;
* one already-expired access token per surface, signed by the platform's own keys;
* per person actor on the mobile and fleet surfaces, a valid token from a multi-factor
  sign-in an hour old (the step-up commands' "no step-up" credential), and one from a
  password-only sign-in at the seed (the "password only" credential: fresh, but too weak);
* the policy version the platform runs.

The manifest is written with mode 0600: it holds passwords, TOTP seeds and private keys of the
probe's fixtures. Use it against the probe's own deployment only.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from fleetward.authz.permissions import Permission
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr, Amr
from fleetward.identity.oauth.clients import ClientRegistry, ClientSpec
from fleetward.identity.oauth.policy import AUTHORIZATION_CODE, REFRESH_TOKEN
from fleetward.identity.oauth_models import ClientType
from fleetward.identity.tokens.issuing import DEFAULT_MAX_LIFETIME, AccessTokenIssuer
from fleetward.platform import Platform
from fleetward.probe.manifest import LoginClient, Manifest, ManifestActor
from fleetward.probe.seed_records import SEEDER, SideWorld
from fleetward.probe.seed_world import SideSeeder
from fleetward.probe.spec.models import SIDES
from fleetward.services import ServiceContext

REDIRECT_URI: Final = "http://127.0.0.1/callback"
LOGIN_SURFACES: Final = (
    Surface.MOBILE,
    Surface.FLEET,
    Surface.DEALER,
    Surface.SUPPORT,
    Surface.ADMIN,
)
# Minted this long ago with the shortest lifetime: expired for minutes when the probe runs.
EXPIRED_AGO: Final = timedelta(minutes=10)
EXPIRED_LIFETIME: Final = timedelta(seconds=60)
# The "no step-up" tokens are from a multi-factor sign-in this long before the seed (the
# step-up window is five minutes); they and the "password only" tokens (a password sign-in
# at the seed) are valid for the issuer's longest lifetime from the seed.
STALE_AUTH_AGO: Final = timedelta(hours=1)
PERSON_TOKEN_LIFETIME: Final = DEFAULT_MAX_LIFETIME
# The surfaces where step-up commands are offered.
STEP_UP_SURFACES: Final = (Surface.MOBILE, Surface.FLEET)
NOTES: Final = (
    "expired delegation: granted through DelegationService with the clock set five days back",
    "former owner: OwnershipService.start ten days back, OwnershipService.transfer five days back",
    "reassigned operator: assigned to the group, unassigned, assigned to another group",
    "command jobs: rows written directly (no service creates a job outside a delivery)",
)


async def _login_client(ctx: ServiceContext, run: str) -> LoginClient:
    """A public first-party client for the authorization code flow with PKCE."""
    client_id = f"probe-{run}-login"
    await ClientRegistry(ctx).register(
        ClientSpec(
            client_id=client_id,
            name=f"Probe login {run}",
            client_type=ClientType.FIRST_PARTY_CLI,
            surfaces=LOGIN_SURFACES,
            scopes=tuple(Permission),
            grant_types=(AUTHORIZATION_CODE, REFRESH_TOKEN),
            redirect_uris=(REDIRECT_URI,),
        ),
        actor=SEEDER,
    )
    return LoginClient(
        client_id=client_id,
        redirect_uri=REDIRECT_URI,
        surfaces=[s.value for s in LOGIN_SURFACES],
    )


def _expired_tokens(
    platform: Platform, actors: list[ManifestActor], client_id: str
) -> dict[str, str]:
    """One access token per surface, signed by the platform's key, expired minutes ago."""
    identity = platform.identity
    minted_at = platform.clock.now() - EXPIRED_AGO
    issuer = AccessTokenIssuer(
        identity.keyring, identity.issuer, FrozenClock(minted_at), EXPIRED_LIFETIME
    )
    tokens: dict[str, str] = {}
    for surface in Surface:
        actor = next(a for a in actors if a.side == "home" and surface.value in a.surfaces)
        partner = actor.client is not None
        subject = actor.client.client_id if actor.client is not None else actor.user_id
        if subject is None:
            raise ValueError(f"actor {actor.name} has no subject")
        issued = issuer.issue(
            subject=subject,
            client_id=subject if partner else client_id,
            tenant=actor.tenant_id,
            surface=surface,
            scopes=[Permission.VEHICLE_READ_STATUS.value],
            auth_time=minted_at,
            acr=Acr.MFA.value,
            amr=[Amr.PRIVATE_KEY_JWT.value] if partner else [Amr.PASSWORD.value, Amr.OTP.value],
            token_family=None,
            subject_type="workload" if partner else "user",
        )
        tokens[surface.value] = issued.token
    return tokens


def _person_tokens(
    platform: Platform,
    actors: list[ManifestActor],
    client_id: str,
    *,
    signed_in: datetime,
    acr: Acr,
    amr: list[str],
) -> dict[str, dict[str, str]]:
    """Per person actor and step-up surface: a valid token (for the issuer's longest lifetime
    from now) from a sign-in at ``signed_in`` of class ``acr`` by ``amr``, with every scope
    the login client holds (as the probe's real sign-ins ask)."""
    identity = platform.identity
    issuer = AccessTokenIssuer(
        identity.keyring, identity.issuer, FrozenClock(platform.clock.now()), PERSON_TOKEN_LIFETIME
    )
    tokens: dict[str, dict[str, str]] = {}
    for actor in actors:
        if actor.user_id is None or actor.client is not None:
            continue
        for surface in STEP_UP_SURFACES:
            if surface.value not in actor.surfaces:
                continue
            issued = issuer.issue(
                subject=actor.user_id,
                client_id=client_id,
                tenant=actor.tenant_id,
                surface=surface,
                scopes=[p.value for p in Permission],
                auth_time=signed_in,
                acr=acr.value,
                amr=amr,
                token_family=None,
                subject_type="user",
            )
            tokens.setdefault(actor.name, {})[surface.value] = issued.token
    return tokens


def _stale_auth_tokens(
    platform: Platform, actors: list[ManifestActor], client_id: str
) -> dict[str, dict[str, str]]:
    """The "no step-up" tokens: a multi-factor sign-in, but an hour old."""
    return _person_tokens(
        platform,
        actors,
        client_id,
        signed_in=platform.clock.now() - STALE_AUTH_AGO,
        acr=Acr.MFA,
        amr=[Amr.PASSWORD.value, Amr.OTP.value],
    )


def _password_only_tokens(
    platform: Platform, actors: list[ManifestActor], client_id: str, signed_in: datetime
) -> dict[str, dict[str, str]]:
    """The "password only" tokens: a sign-in as fresh as the seed, but by password alone
    (``acr`` password, ``amr`` ``pwd``): too weak for any step-up, whatever its age."""
    return _person_tokens(
        platform,
        actors,
        client_id,
        signed_in=signed_in,
        acr=Acr.PASSWORD,
        amr=[Amr.PASSWORD.value],
    )


async def seed_probe_world(
    platform: Platform, *, out: Path, spec_name: str = "fleetward-demo"
) -> Manifest:
    """Create a fresh probe world through the platform's services and write its manifest
    (mode 0600) to ``out``. All of it is one transaction: a failure leaves nothing behind."""
    run = secrets.token_hex(4)
    worlds: list[SideWorld] = []
    async with platform.services() as (uow, ctx):
        login = await _login_client(ctx, run)
        for side in SIDES:
            seeder = SideSeeder(
                ctx,
                run=run,
                side=side,
                hasher=platform.passwords,
                data_key=platform.identity.data_key,
            )
            worlds.append(await seeder.seed())
        await uow.commit()
    actors = [actor for world in worlds for actor in world.actors]
    signed_in = platform.clock.now()
    manifest = Manifest(
        run_id=run,
        created_at=platform.clock.now().astimezone(UTC).isoformat(),
        spec_name=spec_name,
        policy_version=platform.pdp.policy_version,
        login_client=login,
        actors=actors,
        objects=[record for world in worlds for record in world.objects],
        expired_tokens=_expired_tokens(platform, actors, login.client_id),
        stale_auth_tokens=_stale_auth_tokens(platform, actors, login.client_id),
        password_only_tokens=_password_only_tokens(platform, actors, login.client_id, signed_in),
        password_only_signed_in_at=signed_in.astimezone(UTC).isoformat(),
        notes=list(NOTES),
    )
    manifest.write(out)
    return manifest
