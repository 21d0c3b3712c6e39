"""The values every part of the probe shares: a case to send, what the oracle expects of it,
and what happened.

The oracle (``fleetward.probe.oracle``) fills ``Case.expect`` from the spec alone; it never
imports or evaluates the platform's policies. The runner fills ``Result``; the reports read
``Result`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Expect(StrEnum):
    """What the oracle says must happen."""

    ALLOW = "allow"  # a 2xx, and the response carries the object's canary where it has one
    DENY = "deny"  # a refusal: no 2xx, no canary of the object anywhere, no side effect
    DENY_HIDDEN = "deny-hidden"  # a refusal that must look like "not found" (404)
    UNAUTHENTICATED = "unauthenticated"  # 401 with a WWW-Authenticate challenge
    # A list filtered to what the caller may see: a 2xx whose body and headers carry none of
    # the object's canaries (the object is simply not in it).
    FILTERED = "filtered"
    # A command that needs a step-up, sent with a stale or a password-only sign-in's token by
    # an actor who would otherwise be allowed: 401 with the RFC 9470 challenge
    # (``insufficient_user_authentication``), no canary, no side effect.
    STEP_UP = "step-up"


class Family(StrEnum):
    """The generator that produced a case (the report groups by it)."""

    MATRIX = "matrix"
    REPLAY = "replay"
    FUNCTION = "function"
    OBJECT_ID = "object-id"
    PROPERTY = "property"
    INVENTORY = "inventory"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # with the query string, exactly as sent (confusing ids are sent raw)
    actor: str | None  # the spec's actor name whose token is used; None: no credentials
    headers: tuple[tuple[str, str], ...] = ()
    body: Any = None  # JSON body, or None
    # How to obtain the credential when it is not the actor's ordinary token:
    # "garbage", "expired", "other-surface:<surface>", "stale-auth" (the actor's own token
    # from a multi-factor sign-in long past the step-up window), "password-only" (the actor's
    # own token from a recent sign-in by password alone: too weak for a step-up).
    credential: str | None = None
    # Headers given a new unique value every time the request is sent (a command's
    # Idempotency-Key: a case sent again is asked again, never answered from the first).
    fresh_headers: tuple[str, ...] = ()
    # For a read-back list that records refusals: the fields of such a record. Read back
    # around refused writes, the list may gain items holding these values (a rejected
    # command job), and nothing else may change.
    refusal_record: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Case:
    id: str  # stable across runs: family/route/actor/state/variant
    family: Family
    route_id: str  # the catalog route name (e.g. "mobile:vehicles:status")
    request: Request
    expect: Expect
    why: str  # one line: the threat this case covers
    # Strings that must not appear in a denied response (body or headers).
    canaries: tuple[str, ...] = ()
    # For writes: a read to repeat before and after to prove there was no side effect.
    read_back: Request | None = None
    # For allowed reads: response fields allowed for this actor (None: not checked).
    allowed_fields: frozenset[str] | None = None
    # For DENY_HIDDEN: the same request naming an object that does not exist; a hidden denial
    # must answer exactly its 404 body (``instance`` aside). None: only the 404 is checked.
    hidden_reference: Request | None = None
    # A command (spec operation "command"): allowed means accepted, a 202 whose JSON body
    # names the job it created (``id``).
    job: bool = False
    # For an allowed command: the request that cancels the job it created, its path holding
    # ``{id}`` for the job's id; sent by the runner right after the case is judged.
    cancel: Request | None = None
    # An allowed command that needs a step-up: its actor's token must come from a sign-in
    # recent enough when the request is sent (``TokenBook.fresh``).
    step_up: bool = False


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    ERROR = "error"  # the case could not be run (transport error, setup missing)


@dataclass(frozen=True, slots=True)
class Result:
    case: Case
    verdict: Verdict
    status: int | None
    reason: str  # why it failed ("" when it passed)
    elapsed_ms: float
    # The policy version the deployment reported (x-fleetward-policy-version or /readyz), for
    # TARA evidence.
    policy_version: str | None = None
    response_excerpt: str = ""  # at most 500 characters, secrets redacted


@dataclass(slots=True)
class Report:
    target: str
    spec_name: str
    started_at: str
    finished_at: str = ""
    policy_version: str | None = None
    results: list[Result] = field(default_factory=list)

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.verdict is not Verdict.PASS]
