"""``fleetward token``: a token for a demo person, through the real OAuth endpoints.

For scripts and tests: drives the authorization code + PKCE flow headlessly (login page with
the person's password and TOTP code from the demo credentials file, consent, token endpoint)
over HTTP against a running server. Prints the access token, or with ``--json`` the whole
token response (plus the DPoP private key when the token is DPoP-bound, since every use of
the token needs a proof made with it). Nothing is logged.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Final

import httpx
import typer

from fleetward.cli.runtime import load_or_exit
from fleetward.core.surfaces import Surface
from fleetward.demo.clients import client_key_path, load_client_key
from fleetward.demo.credentials import read_credentials
from fleetward.identity.oauth.headless import (
    Account,
    ClientChoice,
    HeadlessError,
    HeadlessFlow,
    TokenResult,
)

DEFAULT_CLIENT: Final = "fleetward-cli"
# The surface a demo person works on, for clients (like the CLI) that serve several.
ROLE_SURFACE: Final = {
    "customer": Surface.MOBILE,
    "fleet_admin": Surface.FLEET,
    "fleet_operator": Surface.FLEET,
    "dealer_technician": Surface.DEALER,
    "partner_admin": Surface.PARTNER,
    "support_agent": Surface.SUPPORT,
    "platform_admin": Surface.ADMIN,
    "engineer": Surface.ADMIN,
}


async def _obtain(target: str, account: Account, client: ClientChoice) -> TokenResult:
    async with httpx.AsyncClient(timeout=30.0, follow_redirects=False) as http:
        return await HeadlessFlow(http, target).obtain(account, client)


def _fail(message: str) -> None:
    typer.echo(f"fleetward token: {message}", err=True)
    sys.exit(1)


def token(
    user: Annotated[
        str, typer.Option("--user", help="demo person (a key of the credentials file)")
    ],
    target: Annotated[str | None, typer.Option("--target", help="server URL")] = None,
    client: Annotated[str, typer.Option("--client", help="OAuth client id")] = DEFAULT_CLIENT,
    scope: Annotated[str | None, typer.Option("--scope", help="space-separated scopes")] = None,
    surface: Annotated[Surface | None, typer.Option("--surface", help="token audience")] = None,
    credentials: Annotated[Path | None, typer.Option("--credentials", help="logins file")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole token response")] = False,
    dpop: Annotated[
        bool, typer.Option("--dpop", help="always bind the token to a DPoP key")
    ] = False,
) -> None:
    """Obtain an access token for USER through the real OAuth flows."""
    settings = load_or_exit()
    path = credentials or settings.demo_credentials_path
    try:
        logins = read_credentials(path)
    except (OSError, ValueError):
        _fail(f"cannot read the credentials file {path}")
        return
    login = logins.get(user)
    if login is None or "password" not in login:
        _fail(f"no login for {user!r} in {path}")
        return
    chosen = surface
    if chosen is None and client == DEFAULT_CLIENT:
        chosen = ROLE_SURFACE.get(str(login.get("role", "")))
    key_file = client_key_path(settings.data_dir, client)
    choice = ClientChoice(
        client_id=client,
        scope=scope,
        surface=chosen,
        key=load_client_key(key_file) if key_file.exists() else None,
        force_dpop=dpop,
    )
    account = Account(user, login["password"], login.get("totp_secret"))
    try:
        result = asyncio.run(_obtain(target or settings.base_url, account, choice))
    except (HeadlessError, httpx.HTTPError) as error:
        _fail(str(error) if isinstance(error, HeadlessError) else type(error).__name__)
        return
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2, sort_keys=True))
    else:
        typer.echo(result.response["access_token"])
