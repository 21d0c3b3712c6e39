"""The login pages against the seeded demo world, through the real ASGI app.

alice signs in with her generated password and a TOTP code computed from the seed in the
demo credentials, and ends up with an ``fw_login`` session cookie; erin (a fleet admin)
gets nothing from her password alone. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re

import pyotp
from sqlalchemy import select

from fleetward.app import build_app
from fleetward.demo.world import seed_demo_world
from fleetward.identity.acr import Acr
from fleetward.identity.credential_models import LoginSession
from fleetward.platform import Platform
from fleetward.settings import Settings
from support.http import client_for

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def test_alice_signs_in_with_password_and_totp(
    settings: Settings, platform: Platform
) -> None:
    async with platform.services() as (uow, ctx):
        seeded = await seed_demo_world(ctx, platform.passwords, data_key=platform.identity.data_key)
        await uow.commit()
    alice, erin = seeded.logins["alice"], seeded.logins["erin"]
    app = build_app(settings, platform=platform)
    target = "/oauth/authorize?client_id=demo-mobile&response_type=code"

    async with client_for(app) as client:
        page = await client.get("/login", params={"return_to": target})
        assert page.status_code == 200
        token = CSRF.findall(page.text)[0]

        # A fleet admin's password alone yields a second step, never a session.
        admin = await client.post(
            "/login",
            data={"csrf_token": token, "username": "erin", "password": erin["password"]},
        )
        assert admin.headers["location"] == "/login/mfa"
        assert "fw_login" not in client.cookies

        first = await client.post(
            "/login",
            data={
                "csrf_token": token,
                "username": "alice",
                "password": alice["password"],
                "return_to": target,
            },
        )
        assert first.status_code == 303 and first.headers["location"] == "/login/mfa"
        second_step = await client.get("/login/mfa")
        assert 'action="/login/totp"' in second_step.text

        code = pyotp.TOTP(alice["totp_secret"]).at(platform.clock.now())
        done = await client.post("/login/totp", data={"csrf_token": token, "code": code})
        assert done.status_code == 303 and done.headers["location"] == target
        assert client.cookies.get("fw_login")

        account = await client.get("/account")
        assert account.status_code == 200 and "Signed in as alice" in account.text

    async with platform.services() as (_uow, ctx):
        (session,) = list(await ctx.session.scalars(select(LoginSession)))
    assert (session.acr, session.amr) == (Acr.MFA.value, ["pwd", "otp"])
