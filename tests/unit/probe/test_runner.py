"""The probe runner's verdicts, against a small scripted server (no platform involved).

Each row is one way a deployment can answer wrongly (or rightly); the runner must call it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.probe.auth import (
    PASSWORD_ONLY,
    STALE_AUTH,
    Credential,
    PasswordOnly,
    TokenBook,
    TokenError,
    expired_of,
    login_of,
)
from fleetward.probe.manifest import LoginClient, Manifest, ManifestActor, PartnerKey
from fleetward.probe.model import Case, Expect, Family, Request, Result, Verdict
from fleetward.probe.runner import EXCERPT_LIMIT, _unchanged, excerpt, phases, run

CANARY = "canary-7f3a9c"
HIDDEN = {"type": "about:blank#not-found", "title": "Not found", "status": 404}
TARGET = "http://probe.test"


class Scripted:
    """A server whose answers the test chooses; it records what it was sent."""

    def __init__(self) -> None:
        self.label = "original"
        self.applied = 0
        self.seen: list[tuple[str, str, dict[str, str]]] = []

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/readyz", self.ready),
                Route("/mobile/v1/{name}", self.answer, methods=["GET", "POST", "PATCH"]),
            ]
        )

    async def ready(self, request: HttpRequest) -> Response:
        return JSONResponse({"status": "ready", "policy_version": "pv-123"})

    async def answer(self, request: HttpRequest) -> Response:
        name = request.path_params["name"]
        self.seen.append((request.method, name, dict(request.headers)))
        hidden = {**HIDDEN, "instance": request.url.path}
        answers: dict[str, Response] = {
            "ok": JSONResponse({"id": "veh_1", "label": CANARY}),
            "ok-extra": JSONResponse({"items": [{"id": "veh_1", "vin": "SECRETVIN"}]}),
            "forbidden": JSONResponse({"title": "Forbidden"}, status_code=403),
            "leaky": JSONResponse({"title": "Forbidden", "label": CANARY}, status_code=403),
            "leaky-header": JSONResponse({}, status_code=403, headers={"x-label": CANARY}),
            "hidden": JSONResponse(hidden, status_code=404),
            "hidden-different": JSONResponse(
                {**hidden, "detail": "vehicle exists but not yours"}, status_code=404
            ),
            "unknown": JSONResponse(hidden, status_code=404),
            "challenge": JSONResponse(
                {}, status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            ),
            "no-challenge": JSONResponse({}, status_code=401),
            "boom": JSONResponse({"title": "oops"}, status_code=500),
            "secret": Response(
                'token eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl code=abc123 "x"' * 20
            ),
            "state": JSONResponse({"label": self.label}),
        }
        if name == "write-refused-but-applied" and request.method == "PATCH":
            self.applied += 1  # not idempotent: every refused write changes the object again
            self.label = f"changed-{self.applied}"
            return JSONResponse({"title": "Forbidden"}, status_code=403)
        if name == "write-refused-but-set" and request.method == "PATCH":
            self.label = "set"  # idempotent: sent again alone, it changes nothing more
            return JSONResponse({"title": "Forbidden"}, status_code=403)
        if name == "write-refused" and request.method == "PATCH":
            return JSONResponse({"title": "Forbidden"}, status_code=403)
        if name == "write-allowed" and request.method == "PATCH":
            self.label = "allowed-change"
            return JSONResponse({"label": self.label})
        return answers[name]


def _tokens(dpop: ECKey | None = None) -> TokenBook:
    return TokenBook(
        {("alice", Surface.MOBILE): Credential("alice-token", dpop)},
        {"alice": Surface.MOBILE},
        expired={Surface.MOBILE: "expired-token"},
    )


def _case(
    name: str,
    expect: Expect,
    *,
    method: str = "GET",
    actor: str | None = "alice",
    credential: str | None = None,
    fields: frozenset[str] | None = None,
    read_back: bool = False,
    reference: bool = False,
) -> Case:
    return Case(
        id=f"test/{name}/{expect.value}/{method}",
        family=Family.MATRIX,
        route_id=f"mobile:test:{name}",
        request=Request(method, f"/mobile/v1/{name}", actor, credential=credential),
        expect=expect,
        why="test",
        canaries=(CANARY,),
        read_back=Request("GET", "/mobile/v1/state", "alice") if read_back else None,
        allowed_fields=fields,
        hidden_reference=Request("GET", "/mobile/v1/unknown", actor) if reference else None,
    )


async def _run(server: Scripted, cases: list[Case], tokens: TokenBook | None = None) -> Any:
    transport = httpx.ASGITransport(app=server.app())
    return await run(cases, target=TARGET, tokens=tokens or _tokens(), transport=transport)


# (case name, expect, options, verdict, why the runner must say so)
VERDICTS: list[tuple[str, Expect, dict[str, Any], Verdict, str]] = [
    ("ok", Expect.ALLOW, {}, Verdict.PASS, "allowed and served"),
    ("forbidden", Expect.ALLOW, {}, Verdict.FAIL, "allowed but refused: broken access"),
    (
        "ok-extra",
        Expect.ALLOW,
        {"fields": frozenset({"id"})},
        Verdict.FAIL,
        "a field outside the role's allow-list (excessive data exposure)",
    ),
    ("ok", Expect.ALLOW, {"fields": frozenset({"id", "label"})}, Verdict.PASS, "fields allowed"),
    ("forbidden", Expect.DENY, {}, Verdict.PASS, "refused without data"),
    ("ok", Expect.DENY, {}, Verdict.FAIL, "denied but served: broken object level authz"),
    ("leaky", Expect.DENY, {}, Verdict.FAIL, "refusal body discloses the object's data"),
    ("leaky-header", Expect.DENY, {}, Verdict.FAIL, "a header discloses the object's data"),
    ("hidden", Expect.DENY_HIDDEN, {"reference": True}, Verdict.PASS, "same 404 as unknown"),
    (
        "hidden-different",
        Expect.DENY_HIDDEN,
        {"reference": True},
        Verdict.FAIL,
        "the 404 differs from an unknown id's: existence oracle",
    ),
    ("forbidden", Expect.DENY_HIDDEN, {}, Verdict.FAIL, "403 reveals that the object exists"),
    ("challenge", Expect.UNAUTHENTICATED, {"actor": None}, Verdict.PASS, "401 + challenge"),
    (
        "no-challenge",
        Expect.UNAUTHENTICATED,
        {"credential": "garbage"},
        Verdict.FAIL,
        "401 without WWW-Authenticate",
    ),
    ("forbidden", Expect.UNAUTHENTICATED, {"credential": "expired"}, Verdict.FAIL, "not a 401"),
    ("forbidden", Expect.FILTERED, {}, Verdict.FAIL, "a filtered list must still answer"),
    ("ok", Expect.FILTERED, {}, Verdict.FAIL, "the list carries an object the actor may not see"),
    ("state", Expect.FILTERED, {}, Verdict.PASS, "a 2xx without the object"),
    ("boom", Expect.DENY, {}, Verdict.FAIL, "a 5xx is never a correct refusal"),
    ("boom", Expect.ALLOW, {}, Verdict.FAIL, "a 5xx is never a success"),
    ("ok", Expect.ALLOW, {"actor": "nobody"}, Verdict.ERROR, "no token for the actor"),
]


@pytest.mark.parametrize(("name", "expect", "options", "verdict", "why"), VERDICTS)
async def test_verdicts(
    name: str, expect: Expect, options: dict[str, Any], verdict: Verdict, why: str
) -> None:
    [result] = await _run(Scripted(), [_case(name, expect, **options)])
    assert result.verdict is verdict, (why, result.reason)
    assert (result.reason == "") is (verdict is Verdict.PASS), why
    assert result.policy_version == "pv-123"


async def test_a_refused_write_that_changed_the_object_fails() -> None:
    server = Scripted()
    cases = [
        _case("write-refused", Expect.DENY, method="PATCH", read_back=True),
        _case("write-refused-but-applied", Expect.DENY, method="PATCH", read_back=True),
    ]
    first, second = await _run(server, cases)
    # The object changed during the phase: each write is sent again alone to name the culprit.
    assert first.verdict is Verdict.PASS, first.reason
    assert second.verdict is Verdict.FAIL
    assert "read-back differs" in second.reason


async def test_a_change_no_single_write_reproduces_fails_the_whole_group() -> None:
    server = Scripted()
    cases = [
        _case("write-refused", Expect.DENY, method="PATCH", read_back=True),
        _case("write-refused-but-set", Expect.DENY, method="PATCH", read_back=True),
    ]
    results = await _run(server, cases)
    assert all(r.verdict is Verdict.FAIL for r in results)
    assert all("changed while its refused writes ran" in r.reason for r in results)


async def test_refused_writes_are_read_back_once_per_object() -> None:
    server = Scripted()
    cases = [
        _case("write-refused", Expect.DENY, method="PATCH", read_back=True),
        _case("forbidden", Expect.DENY, method="PATCH", read_back=True),
    ]
    results = await _run(server, cases)
    assert all(r.verdict is Verdict.PASS for r in results), [r.reason for r in results]
    reads = [name for method, name, _h in server.seen if method == "GET" and name == "state"]
    assert len(reads) == 2  # one snapshot before the phase, one after


async def test_phases_run_reads_then_refused_then_allowed_writes() -> None:
    server = Scripted()
    cases = [
        _case("write-allowed", Expect.ALLOW, method="PATCH"),
        _case("write-refused", Expect.DENY, method="PATCH", read_back=True),
        _case("state", Expect.ALLOW),
    ]
    assert phases(cases) == [[2], [1], [0]]
    results = await _run(server, cases)
    # Results come back in the cases' order, each with its own case.
    assert [r.case for r in results] == cases
    assert all(r.verdict is Verdict.PASS for r in results), [r.reason for r in results]
    # The read ran before the allowed write changed the state.
    assert results[2].response_excerpt == '{"label":"original"}'
    order = [(method, name) for method, name, _headers in server.seen]
    assert order.index(("PATCH", "write-refused")) < order.index(("PATCH", "write-allowed"))


async def test_credentials_sent_for_each_kind() -> None:
    server = Scripted()
    cases = [
        _case("forbidden", Expect.DENY),
        _case("forbidden", Expect.DENY, actor=None),
        _case("forbidden", Expect.DENY, credential="expired"),
        _case("forbidden", Expect.DENY, credential="garbage"),
    ]
    await _run(server, cases)
    sent = [headers.get("authorization") for _m, _n, headers in server.seen]
    assert sent[0] == "Bearer alice-token"
    assert sent[1] is None
    assert sent[2] == "Bearer expired-token"
    assert sent[3] is not None and sent[3].startswith("Bearer eyJ")


async def test_a_dpop_bound_token_is_sent_with_a_fresh_proof() -> None:
    server = Scripted()
    key = ECKey.generate_key("P-256")
    await _run(server, [_case("ok", Expect.ALLOW)] * 2, _tokens(dpop=key))
    proofs = [headers["dpop"] for _m, _n, headers in server.seen]
    assert all(h["authorization"] == "DPoP alice-token" for _m, _n, h in server.seen)
    assert len(set(proofs)) == 2  # a proof is never reused


async def test_excerpts_are_short_and_redacted() -> None:
    [result] = await _run(Scripted(), [_case("secret", Expect.ALLOW)])
    assert len(result.response_excerpt) <= EXCERPT_LIMIT
    assert "eyJ" not in result.response_excerpt
    assert "abc123" not in result.response_excerpt
    assert "[redacted]" in result.response_excerpt


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678"),
        ('{"access_token": "tok-value-1", "x": 1}', "tok-value-1"),
        ("https://client/callback?code=the-code&state=s", "the-code"),
        ('{"refresh_token":"rt-secret"}', "rt-secret"),
    ],
)
def test_excerpt_redacts(text: str, secret: str) -> None:
    assert secret not in excerpt(text)


def test_unknown_credential_kinds_are_refused() -> None:
    tokens = _tokens()
    with pytest.raises(TokenError):
        tokens.resolve("alice", "other-surface:nowhere", "/mobile/v1/x")
    with pytest.raises(TokenError):
        tokens.resolve("alice", "forged", "/mobile/v1/x")
    with pytest.raises(TokenError):
        tokens.resolve("alice", "expired", "/fleet/v1/x")  # no expired fleet token


async def test_progress_sees_every_result() -> None:
    seen: list[Result] = []
    transport = httpx.ASGITransport(app=Scripted().app())
    cases = [_case("ok", Expect.ALLOW), _case("forbidden", Expect.DENY)]
    await run(cases, target=TARGET, tokens=_tokens(), transport=transport, progress=seen.append)
    assert sorted(r.case.id for r in seen) == sorted(c.id for c in cases)


def test_manifest_actors_sign_in_as_their_kind() -> None:
    key = ECKey.generate_key("P-256")
    common: dict[str, Any] = {"state": "active", "side": "home", "tenant_id": "ten_x"}
    person = ManifestActor(
        name="owner:active:home",
        role="owner",
        kind="user",
        tenant_slug="probe",
        surfaces=["mobile", "fleet"],
        username="probe-owner",
        password="pw",
        totp_secret="JBSWY3DPEHPK3PXP",
        **common,
    )
    partner = ManifestActor(
        name="partner:active:home",
        role="partner",
        kind="partner",
        tenant_slug="probe-partner",
        surfaces=["partner"],
        client=PartnerKey(
            client_id="probe-partner",
            private_jwk=dict(key.as_dict(private=True)),
            kid=key.thumbprint(),
            scopes=["vehicle:read_status"],
        ),
        **common,
    )
    manifest = Manifest(
        run_id="r",
        created_at="2026-01-01T00:00:00Z",
        spec_name="test",
        login_client=LoginClient(
            client_id="probe-login", redirect_uri="http://127.0.0.1/cb", surfaces=["mobile"]
        ),
        actors=[person, partner],
        objects=[],
        expired_tokens={"mobile": "old", "nowhere": "ignored"},
    )
    login = login_of(person, manifest)
    assert (login.client_id, login.surface, login.extra_surfaces) == (
        "probe-login",
        Surface.MOBILE,
        (Surface.FLEET,),
    )
    assert login.is_person and login.redirect_uri == "http://127.0.0.1/cb"
    machine = login_of(partner, manifest)
    assert not machine.is_person
    assert machine.client_id == "probe-partner" and machine.scope == "vehicle:read_status"
    assert machine.client_key is not None and machine.client_key.thumbprint() == key.thumbprint()
    assert expired_of(manifest) == {Surface.MOBILE: "old"}
    # Secrets stay out of reprs (and so out of logs and reports).
    assert "pw" not in repr(login) and "JBSWY3DPEHPK3PXP" not in repr(login)


# ------------------------------------------------------------------------------ commands

KEY = "Idempotency-Key"
JOBS = "/mobile/v1/vehicles/v1/commands"
LIST = Request("GET", JOBS, "alice", refusal_record=(("state", "rejected"),))


class Commands:
    """A vehicle that takes one command at a time (a lock holds its slot until the job is
    cancelled), stores a refused command as a rejected job, and lists its jobs."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.keys: list[str | None] = []
        self.cancelled: list[str] = []
        self.refuse_cancel = False
        # Pages of this many jobs, newest first (None: one page): a new job pushes the
        # oldest of a page onto the next.
        self.page: int | None = None

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/readyz", self.ready),
                Route(JOBS, self.listing),
                Route(JOBS + "/{job}/cancel", self.cancel, methods=["POST"]),
                Route(JOBS + "/{name}", self.create, methods=["POST"]),
            ]
        )

    async def ready(self, request: HttpRequest) -> Response:
        return JSONResponse({"status": "ready", "policy_version": "pv-123"})

    async def listing(self, request: HttpRequest) -> Response:
        if self.page is None:
            return JSONResponse({"items": self.jobs, "next_cursor": None})
        newest = list(reversed(self.jobs))
        start = int(request.query_params.get("cursor", "0"))
        end = start + self.page
        cursor = str(end) if end < len(newest) else None
        return JSONResponse({"items": newest[start:end], "next_cursor": cursor})

    def _job(self, state: str) -> dict[str, Any]:
        job = {"id": f"job_{len(self.jobs)}", "state": state}
        self.jobs.append(job)
        return job

    async def create(self, request: HttpRequest) -> Response:
        name = request.path_params["name"]
        self.keys.append(request.headers.get(KEY))
        if request.headers.get(KEY) is None:
            return JSONResponse({"title": "Idempotency-Key required"}, status_code=400)
        if name in ("unlock", "unlock-unchecked", "unlock-age-only"):
            # A step-up command: only a recent multi-factor sign-in's token ("alice-fresh");
            # "unlock-age-only" reads the sign-in's age but not its strength, so it takes the
            # recent password-only sign-in's token ("weak-token") too.
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            taken = {"alice-fresh"} | ({"weak-token"} if name == "unlock-age-only" else set())
            if token not in taken and name != "unlock-unchecked":
                job = self._job("rejected")
                challenge = 'Bearer error="insufficient_user_authentication", max_age="300"'
                return JSONResponse(
                    {"job_id": job["id"]}, status_code=401, headers={"WWW-Authenticate": challenge}
                )
            return JSONResponse(self._job("queued"), status_code=202)
        if name == "unlock-plain-401":
            self._job("rejected")
            return JSONResponse({}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        if name == "lock":
            if any(job["state"] == "queued" for job in self.jobs):
                return JSONResponse({"reason": "conflict"}, status_code=409)
            return JSONResponse(self._job("queued"), status_code=202)
        if name == "refused":
            job = self._job("rejected")
            return JSONResponse({"job_id": job["id"], "state": "rejected"}, status_code=403)
        if name in ("quota", "vehicle-state"):
            # Refused past the permission: by the vehicle's quota or state, not authorization.
            job = self._job("rejected")
            link, status = ("quota", 429) if name == "quota" else ("vehicle_state", 409)
            body = {"job_id": job["id"], "state": "rejected", "link": link}
            return JSONResponse(body, status_code=status, headers={"Retry-After": "1"})
        if name == "refused-but-changed":
            # Refused, yet the oldest job (on the list's last page) was changed.
            self.jobs[0]["state"] = "cancelled"
            job = self._job("rejected")
            return JSONResponse({"job_id": job["id"], "state": "rejected"}, status_code=403)
        if name == "refused-but-queued":
            self._job("queued")
            return JSONResponse({"title": "Forbidden"}, status_code=403)
        if name == "hidden":
            return JSONResponse(HIDDEN, status_code=404)
        if name == "no-job":
            return JSONResponse({"state": "queued"}, status_code=202)
        return JSONResponse(self._job("queued"), status_code=200)  # "ok-200"

    async def cancel(self, request: HttpRequest) -> Response:
        job_id = request.path_params["job"]
        found = next((job for job in self.jobs if job["id"] == job_id), None)
        if found is None or self.refuse_cancel:
            return JSONResponse(HIDDEN, status_code=404)
        found["state"] = "cancelled"
        self.cancelled.append(job_id)
        return JSONResponse(found)


def _command(
    name: str, expect: Expect, *, credential: str | None = None, step_up: bool = False
) -> Case:
    return Case(
        id=f"test/{name}/{expect.value}",
        family=Family.MATRIX,
        route_id=f"mobile:commands:{name}",
        request=Request(
            "POST",
            f"{JOBS}/{name}",
            "alice",
            body={},
            fresh_headers=(KEY,),
            credential=credential,
        ),
        expect=expect,
        why="test",
        read_back=LIST if expect is not Expect.ALLOW else None,
        job=True,
        cancel=Request("POST", JOBS + "/{id}/cancel", "alice"),
        step_up=step_up,
    )


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _step_up_tokens(clock: Clock, renew: bool = True) -> tuple[TokenBook, list[str]]:
    """Alice signed in at 0 s; signing her in again gives "alice-fresh"."""
    renewed: list[str] = []

    async def sign_in_again(actor: str) -> dict[tuple[str, Surface], Credential]:
        renewed.append(actor)
        return {(actor, Surface.MOBILE): Credential("alice-fresh")}

    book = TokenBook(
        {("alice", Surface.MOBILE): Credential("alice-token")},
        {"alice": Surface.MOBILE},
        stale={("alice", Surface.MOBILE): "stale-token"},
        signed_in={"alice": 0.0},
        renew=sign_in_again if renew else None,
        monotonic=clock,
    )
    return book, renewed


@pytest.mark.parametrize(
    ("name", "verdict", "reason"),
    [
        ("unlock", Verdict.PASS, ""),
        ("unlock-unchecked", Verdict.FAIL, "expected 401 (a step-up challenge), got 202"),
        ("unlock-plain-401", Verdict.FAIL, "insufficient_user_authentication"),
    ],
)
async def test_a_step_up_command_without_a_recent_sign_in_must_be_challenged(
    name: str, verdict: Verdict, reason: str
) -> None:
    server = Commands()
    book, _renewed = _step_up_tokens(Clock(0.0))
    case = _command(name, Expect.STEP_UP, credential=STALE_AUTH)
    [result] = await _run_commands(server, [case], book)
    assert result.verdict is verdict, result.reason
    assert reason in result.reason
    if name == "unlock":
        assert [job["state"] for job in server.jobs] == ["rejected"]
    if name == "unlock-unchecked":
        assert server.cancelled == ["job_0"]  # a wrongly accepted job is cancelled too


async def test_an_allowed_step_up_command_is_sent_with_a_recent_sign_in() -> None:
    # 100 s after the sign-in: its token is recent enough, and the server takes it as such.
    book, renewed = _step_up_tokens(Clock(100.0))
    case = _command("unlock-unchecked", Expect.ALLOW, step_up=True)
    [result] = await _run_commands(Commands(), [case], book)
    assert result.verdict is Verdict.PASS and renewed == []

    # 250 s after: past the probe's margin, so alice signs in again before the request.
    clock = Clock(250.0)
    book, renewed = _step_up_tokens(clock)
    server = Commands()
    [result] = await _run_commands(server, [_command("unlock", Expect.ALLOW, step_up=True)], book)
    assert result.verdict is Verdict.PASS, result.reason
    assert renewed == ["alice"] and book.renewals == 1
    # Once renewed, the next step-up case within the window uses the same sign-in.
    clock.now = 400.0
    [again] = await _run_commands(server, [_command("unlock", Expect.ALLOW, step_up=True)], book)
    assert again.verdict is Verdict.PASS, again.reason
    assert renewed == ["alice"]


async def test_a_step_up_case_that_cannot_sign_in_again_is_an_error() -> None:
    book, _renewed = _step_up_tokens(Clock(1000.0), renew=False)
    server = Commands()
    [result] = await _run_commands(server, [_command("unlock", Expect.ALLOW, step_up=True)], book)
    assert result.verdict is Verdict.ERROR
    assert "step-up" in result.reason
    assert server.keys == []  # nothing was sent with a sign-in too old


def test_the_stale_auth_credential_is_the_actors_own() -> None:
    book, _renewed = _step_up_tokens(Clock(0.0))
    found = book.resolve("alice", STALE_AUTH, "/mobile/v1/vehicles/v/commands/unlock")
    assert found is not None and found.access_token == "stale-token"
    with pytest.raises(TokenError, match="stale-auth"):
        book.resolve("alice", STALE_AUTH, "/fleet/v1/vehicles/v/commands/unlock")
    with pytest.raises(TokenError, match="stale-auth"):
        book.resolve("bob", STALE_AUTH, "/mobile/v1/vehicles/v/commands/unlock")


SIGNED_IN = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _weak_tokens(after: timedelta) -> TokenBook:
    """Alice's recent password-only token, ``after`` its sign-in."""
    return TokenBook(
        {("alice", Surface.MOBILE): Credential("alice-token")},
        {"alice": Surface.MOBILE},
        stale={("alice", Surface.MOBILE): "stale-token"},
        password_only=PasswordOnly({("alice", Surface.MOBILE): "weak-token"}, SIGNED_IN),
        clock=FrozenClock(SIGNED_IN + after),
    )


@pytest.mark.parametrize(
    ("name", "credential", "verdict"),
    [
        ("unlock", PASSWORD_ONLY, Verdict.PASS),
        ("unlock", STALE_AUTH, Verdict.PASS),
        # A deployment that checks the sign-in's age but not its strength: only the
        # password-only twin catches it.
        ("unlock-age-only", PASSWORD_ONLY, Verdict.FAIL),
        ("unlock-age-only", STALE_AUTH, Verdict.PASS),
    ],
)
async def test_a_step_up_command_with_a_password_only_sign_in_must_be_challenged(
    name: str, credential: str, verdict: Verdict
) -> None:
    server = Commands()
    case = _command(name, Expect.STEP_UP, credential=credential)
    [result] = await _run_commands(server, [case], _weak_tokens(timedelta(seconds=30)))
    assert result.verdict is verdict, result.reason
    if verdict is Verdict.FAIL:
        assert "expected 401 (a step-up challenge), got 202" in result.reason
        assert server.cancelled == ["job_0"]


async def test_a_password_only_sign_in_past_the_step_up_window_proves_nothing() -> None:
    # Refused for its age alone, it would pass on a deployment that never reads the
    # strength: the case is an error, and nothing is sent.
    server = Commands()
    case = _command("unlock-age-only", Expect.STEP_UP, credential=PASSWORD_ONLY)
    [result] = await _run_commands(server, [case], _weak_tokens(timedelta(seconds=241)))
    assert result.verdict is Verdict.ERROR
    assert "older than the step-up window" in result.reason
    assert server.keys == []


def test_the_password_only_credential_is_the_actors_own() -> None:
    book = _weak_tokens(timedelta(seconds=0))
    found = book.resolve("alice", PASSWORD_ONLY, "/mobile/v1/vehicles/v/commands/unlock")
    assert found is not None and found.access_token == "weak-token"
    with pytest.raises(TokenError, match="password-only"):
        book.resolve("alice", PASSWORD_ONLY, "/fleet/v1/vehicles/v/commands/unlock")
    with pytest.raises(TokenError, match="password-only"):
        book.resolve("bob", PASSWORD_ONLY, "/mobile/v1/vehicles/v/commands/unlock")
    unknown_time = TokenBook({}, {}, password_only=PasswordOnly({("alice", Surface.MOBILE): "t"}))
    with pytest.raises(TokenError, match="older than the step-up window"):
        unknown_time.resolve("alice", PASSWORD_ONLY, "/mobile/v1/vehicles/v/commands/unlock")


@pytest.mark.parametrize(
    ("name", "verdict"), [("refused", Verdict.PASS), ("refused-but-changed", Verdict.FAIL)]
)
async def test_a_paged_job_list_is_read_back_whole(name: str, verdict: Verdict) -> None:
    # Three jobs, pages of two, newest first: a refusal's rejected job pushes a job that did
    # not change onto the second page; one that changes the oldest job changes only the last
    # page. The whole list is what is compared, page by page.
    server = Commands()
    server.page = 2
    for state in ("queued", "executed", "cancelled"):
        server._job(state)
    [result] = await _run_commands(server, [_command(name, Expect.DENY)])
    assert result.verdict is verdict, result.reason
    if verdict is Verdict.FAIL:
        assert "changed" in result.reason


async def test_every_command_request_carries_a_fresh_idempotency_key() -> None:
    server = Commands()
    cases = [_command("hidden", Expect.DENY_HIDDEN), _command("refused-but-queued", Expect.DENY)]
    results = await _run_commands(server, cases)
    # The list changed: both are sent again alone to name the culprit, each with a new key.
    assert results[1].verdict is Verdict.FAIL
    assert len(server.keys) == 4
    assert all(key and key.startswith("probe-") for key in server.keys)
    assert len(set(server.keys)) == 4


async def test_allowed_commands_are_accepted_one_at_a_time_and_cancelled() -> None:
    server = Commands()
    cases = [_command("lock", Expect.ALLOW), _command("lock", Expect.ALLOW)]
    cases[1] = replace(cases[1], id="test/lock/second")
    assert phases(cases) == [[0, 1]]
    results = await _run_commands(server, cases)
    # The vehicle takes one lock at a time: the second passes only because the first job was
    # cancelled before it was sent.
    assert [r.verdict for r in results] == [Verdict.PASS, Verdict.PASS], [r.reason for r in results]
    assert server.cancelled == ["job_0", "job_1"]
    assert [job["state"] for job in server.jobs] == ["cancelled", "cancelled"]


async def test_allowed_commands_run_after_refused_writes_and_before_other_writes() -> None:
    cases = [
        _case("write-allowed", Expect.ALLOW, method="PATCH"),
        _command("lock", Expect.ALLOW),
        _command("refused", Expect.DENY),
        _case("state", Expect.ALLOW),
    ]
    assert phases(cases) == [[3], [2], [1], [0]]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("ok-200", "expected 202"),
        ("no-job", "names no job"),
    ],
)
async def test_an_accepted_command_is_a_202_naming_its_job(name: str, reason: str) -> None:
    [result] = await _run_commands(Commands(), [_command(name, Expect.ALLOW)])
    assert result.verdict is Verdict.FAIL
    assert reason in result.reason


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("quota", "a quota refusal, not an authorization answer"),
        ("vehicle-state", "a vehicle-state or conflict refusal, not an authorization answer"),
    ],
)
@pytest.mark.parametrize("expect", [Expect.ALLOW, Expect.DENY, Expect.DENY_HIDDEN])
async def test_a_quota_or_state_refusal_is_never_an_authorization_answer(
    name: str, reason: str, expect: Expect
) -> None:
    # Allowed: it must be accepted. Refused for its permission: 403; hidden: the 404. A 429 or
    # 409 (with the rejected job, as the platform stores it) passes for none of them.
    [result] = await _run_commands(Commands(), [_command(name, expect)])
    assert result.verdict is Verdict.FAIL
    assert ("expected 404" if expect is Expect.DENY_HIDDEN else reason) in result.reason


async def test_a_job_the_probe_cannot_cancel_is_an_error() -> None:
    server = Commands()
    server.refuse_cancel = True
    [result] = await _run_commands(server, [_command("lock", Expect.ALLOW)])
    assert result.verdict is Verdict.ERROR
    assert "could not cancel" in result.reason


async def test_a_refused_command_may_leave_its_rejected_job_and_nothing_else() -> None:
    server = Commands()
    cases = [_command("refused", Expect.DENY), _command("hidden", Expect.DENY_HIDDEN)]
    results = await _run_commands(server, cases)
    assert all(r.verdict is Verdict.PASS for r in results), [r.reason for r in results]
    assert [job["state"] for job in server.jobs] == ["rejected"]

    server = Commands()
    cases = [_command("refused", Expect.DENY), _command("refused-but-queued", Expect.DENY)]
    first, second = await _run_commands(server, cases)
    assert first.verdict is Verdict.PASS, first.reason
    assert second.verdict is Verdict.FAIL
    assert "read-back differs" in second.reason


async def test_a_changed_job_is_not_excused_by_the_refusal_record() -> None:
    server = Commands()
    server.jobs.append({"id": "job_seeded", "state": "executed"})
    case = _command("refused", Expect.DENY)
    results = await _run_commands(server, [case])
    assert results[0].verdict is Verdict.PASS
    # The same refusal, but the seeded job was changed meanwhile: a difference.
    before = {"items": [{"id": "job_seeded", "state": "executed"}], "next_cursor": None}
    after = {
        "items": [{"id": "job_seeded", "state": "cancelled"}, {"id": "j", "state": "rejected"}],
        "next_cursor": None,
    }
    assert not _unchanged(before, after, LIST.refusal_record)
    assert _unchanged(
        before, {**before, "items": [*before["items"], after["items"][1]]}, (("state", "rejected"),)
    )
    assert not _unchanged(before, {**before, "items": []}, LIST.refusal_record)


async def _run_commands(
    server: Commands, cases: list[Case], tokens: TokenBook | None = None
) -> Any:
    transport = httpx.ASGITransport(app=server.app())
    return await run(cases, target=TARGET, tokens=tokens or _tokens(), transport=transport)
