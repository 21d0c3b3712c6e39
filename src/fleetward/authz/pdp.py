"""The policy decision point: the :class:`PolicyDecisionPoint` seam and its Cedar adapter.

This module and :mod:`fleetward.authz.slicing` (what is worked out once at start) are the only
ones that touch ``cedarpy``. :class:`CedarPdp` loads the schema and the policies
(``policy/``), validates them at construction and refuses to exist if they do not validate
(so the platform refuses to start). Every answer is a :class:`Decision`; anything that is not
a clean Allow or Deny from the engine (an exception, an evaluation error in any policy, a
missing attribute, a request outside the schema, an unknown answer, a timeout) is a deny with
its reason.

Per batch: the relations are read from the store (never cached), the entities built and
parsed with the schema, and each request evaluated ONCE against its action's slice of the
policies (see :mod:`fleetward.authz.slicing` for why that gives Cedar's answers).
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final, Protocol

import cedarpy
import msgspec
from cedarpy import _internal as _engine

from fleetward.authz.decision import (
    AuthzRequest,
    Decision,
    Obligation,
    PrincipalRef,
    Reason,
    RequestContext,
)
from fleetward.authz.permissions import Permission
from fleetward.authz.relations import (
    Relations,
    RelationSource,
    RelationsRefused,
    action_uid,
    cedar_context,
    cedar_entities,
    principal_uid,
    resource_uid,
)
from fleetward.authz.scopes import in_scope
from fleetward.authz.slicing import action_ancestors, admitted, fits, slices, unschematised
from fleetward.core.digest import framed_sha256
from fleetward.observability.logging import get_logger

logger = get_logger(__name__)

SCHEMA_FILE: Final = "schema.cedarschema"
_KEBAB: Final = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_REASONS: Final = frozenset(r.value for r in Reason)
_OBLIGATIONS: Final = frozenset(o.value for o in Obligation)
# Parsed entity sets kept, by their exact JSON text (~17 KiB each): see CedarPdp._parse.
# Small on purpose: 64 sets (~1 MiB) stay in the CPU's caches, 512 (~9 MiB) did not, and every
# decision on new facts paid for it (~203 -> ~187 us per cold decision, in process); a repeat
# of one of the last 64 requests' facts still skips the parse.
ENTITY_PARSE_CACHE: Final = 64
# Decisions by the tuple of satisfied policy ids (a few dozen combinations occur).
OUTCOME_CACHE: Final = 1024


class PolicyDecisionPoint(Protocol):
    """Answers "may this principal do this to this resource now?".

    Implementations are safe to share between concurrent tasks and threads: they hold no
    per-request state (the relation source they read may narrow that; see its docstring).
    They fail closed: ``decide`` and ``decide_many`` never raise for a request they cannot
    answer; they return a deny whose reason says why (``pdp-error``, ``pdp-timeout``, ...).
    Every implementation checks the token's scope bound before anything else
    (:func:`fleetward.authz.scopes.in_scope`).
    """

    @property
    def policy_version(self) -> str: ...

    async def decide(self, request: AuthzRequest) -> Decision: ...

    async def decide_many(self, requests: Sequence[AuthzRequest]) -> list[Decision]:
        """One decision per request, in order (list filtering: many resources at once)."""
        ...


class PolicyInvalid(Exception):
    """The policies do not parse, do not validate against the schema, or break a rule of this
    package (every policy has a unique @id that is a Reason; obligations are known)."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("the authorization policy is invalid:\n" + "\n".join(errors))
        self.errors = tuple(errors)


@dataclass(frozen=True, slots=True)
class PolicyText:
    """The schema and the policy files (name, text), in load order."""

    schema: str
    policies: tuple[tuple[str, str], ...]

    @classmethod
    def packaged(cls) -> PolicyText:
        return cls._read(resources.files("fleetward.authz") / "policy")

    @classmethod
    def from_directory(cls, directory: Path) -> PolicyText:
        return cls._read(directory)

    @classmethod
    def _read(cls, directory: Traversable) -> PolicyText:
        files = sorted(
            (entry.name, entry.read_text(encoding="utf-8"))
            for entry in directory.iterdir()
            if entry.name.endswith(".cedar")
        )
        return cls((directory / SCHEMA_FILE).read_text(encoding="utf-8"), tuple(files))

    @property
    def text(self) -> str:
        return "\n".join(text for _, text in self.policies)

    @property
    def version(self) -> str:
        """SHA-256 over the schema and every policy file (names included)."""
        files = ((SCHEMA_FILE, self.schema), *self.policies)
        return framed_sha256(part for name, text in files for part in (name, text))


@dataclass(frozen=True, slots=True)
class PdpConfig:
    # Regions where a permission is barred (vehicle market region or request region), e.g.
    # {Permission.VEHICLE_REMOTE_START: frozenset({"EU"})}. Empty by default.
    barred_regions: Mapping[Permission, frozenset[str]] = field(default_factory=dict)
    # How long loading a batch's relations may take before the batch is denied.
    timeout: timedelta = timedelta(seconds=2)


@dataclass(frozen=True, slots=True)
class _Meta:
    reason: Reason
    permit: bool
    order: int
    obligations: frozenset[Obligation]


@dataclass(frozen=True, slots=True)
class _Compiled:
    version: str
    schema: Any  # cedarpy.Schema
    policies: Any  # cedarpy.PolicySet, every policy
    meta: Mapping[str, _Meta]  # by Cedar policy id
    # Per action: every policy whose action scope can match it, all turned into permits (same
    # ids), so one evaluation names every satisfied permit AND forbid (see _evaluate).
    sliced: Mapping[Permission, Any]
    # (action, principal type, resource type) triples the schema admits (probed at start).
    applies_to: frozenset[tuple[str, str, str]]


def compile_policy(policy: PolicyText) -> _Compiled:
    """Parse and validate; raise :class:`PolicyInvalid` on any problem."""
    try:
        schema = cedarpy.Schema.from_str(policy.schema)
        tree = cedarpy.policies_to_pst(policy.text)
    except ValueError as exc:
        raise PolicyInvalid([str(exc)]) from None
    result = cedarpy.validate_policies(policy.text, schema)
    errors = [str(e) for e in result.errors]
    if not result.validation_passed:
        raise PolicyInvalid(errors or ["validation failed"])
    meta, problems = _read_annotations(tree)
    if problems:
        raise PolicyInvalid(problems)
    applies_to, problems = admitted(schema)
    if problems:
        raise PolicyInvalid(problems)
    return _Compiled(
        version=policy.version,
        schema=schema,
        policies=cedarpy.PolicySet.from_str(policy.text),
        meta=meta,
        sliced=slices(tree, action_ancestors(schema)),
        applies_to=applies_to,
    )


def _read_annotations(tree: Any) -> tuple[dict[str, _Meta], list[str]]:
    problems: list[str] = []
    if tree.templates:
        problems.append("templates are not used: every policy must be static")
    meta: dict[str, _Meta] = {}
    seen: set[str] = set()
    for order, (policy_id, policy) in enumerate(tree.static_policies.items()):
        annotations = dict(policy.annotations)
        name = annotations.pop("id", "")
        if not _KEBAB.fullmatch(name) or name not in _REASONS:
            problems.append(f"{policy_id}: @id {name!r} is not a Reason value")
            continue
        if name in seen:
            problems.append(f"{policy_id}: @id {name!r} is used twice")
        seen.add(name)
        obligations: set[Obligation] = set()
        if "obligation" in annotations:
            value = annotations.pop("obligation")
            if value not in _OBLIGATIONS:
                problems.append(f"{policy_id}: unknown @obligation {value!r}")
            else:
                obligations.add(Obligation(value))
        if annotations:
            problems.append(f"{policy_id}: unknown annotations {sorted(annotations)}")
        meta[policy_id] = _Meta(
            Reason(name), policy.effect == "permit", order, frozenset(obligations)
        )
    return meta, problems


class CedarPdp:
    """The Cedar PDP. Immutable after construction: share one across tasks and threads, and
    :meth:`bind` a per-request relation source (it shares the compiled policy)."""

    def __init__(
        self,
        source: RelationSource,
        *,
        policy: PolicyText | None = None,
        config: PdpConfig | None = None,
    ) -> None:
        self._compiled = compile_policy(policy or PolicyText.packaged())
        self._source = source
        self._config = config or PdpConfig()
        # Parsing the entity JSON is the engine's largest cost per decision. Its result
        # depends on the text and the schema only, so identical text is parsed once: the key
        # is the complete entity set, built from relations read from the store on EVERY
        # request (nothing about relations is cached: a revoked or lapsed relation changes
        # the text, so the next request parses the new set). An invalid text raises and is
        # not kept.
        self._parse: Callable[[str], Any] = functools.lru_cache(maxsize=ENTITY_PARSE_CACHE)(
            functools.partial(_engine.Entities.from_json_str, schema=self._compiled.schema)
        )
        self._outcome: Callable[[tuple[str, ...]], Decision | None] = functools.lru_cache(
            maxsize=OUTCOME_CACHE
        )(functools.partial(_outcome, self._compiled))

    def bind(self, source: RelationSource) -> CedarPdp:
        """The same policy and configuration, reading relations from ``source``."""
        sibling = object.__new__(CedarPdp)
        sibling._compiled = self._compiled
        sibling._source = source
        sibling._config = self._config
        sibling._parse = self._parse
        sibling._outcome = self._outcome
        return sibling

    @property
    def policy_version(self) -> str:
        return self._compiled.version

    async def decide(self, request: AuthzRequest) -> Decision:
        # decide_many for one request, without its grouping into batches.
        if not in_scope(request):
            return self._deny(Reason.SCOPE)
        return (await self._batch([request]))[0]

    async def decide_many(self, requests: Sequence[AuthzRequest]) -> list[Decision]:
        answers: list[Decision | None] = [None] * len(requests)
        batches: dict[tuple[PrincipalRef, RequestContext], list[int]] = {}
        for index, request in enumerate(requests):
            if not in_scope(request):
                answers[index] = self._deny(Reason.SCOPE)
            else:
                batches.setdefault((request.principal, request.context), []).append(index)
        for indices in batches.values():
            batch = [requests[i] for i in indices]
            for i, decision in zip(indices, await self._batch(batch), strict=True):
                answers[i] = decision
        return self._complete(answers)

    def _complete(self, answers: list[Decision | None]) -> list[Decision]:
        # Every slot is filled above; an unfilled one would be a bug, and a bug denies.
        return [a if a is not None else self._deny(Reason.PDP_ERROR) for a in answers]

    def _deny(self, reason: Reason, policy_ids: tuple[str, ...] = ()) -> Decision:
        return Decision.deny(reason, self._compiled.version, policy_ids)

    async def _batch(self, batch: list[AuthzRequest]) -> list[Decision]:
        """One principal, one context, many resources."""
        first = batch[0]
        try:
            async with asyncio.timeout(self._config.timeout.total_seconds()):
                relations = await self._source.relations(
                    first.principal, first.context, [r.resource for r in batch]
                )
        except RelationsRefused as refused:
            return [self._deny(refused.reason)] * len(batch)
        except TimeoutError:
            logger.warning("authz.pdp_timeout", batch=len(batch))
            return [self._deny(Reason.PDP_TIMEOUT)] * len(batch)
        except Exception as exc:  # fail closed on anything the store throws
            logger.warning("authz.pdp_error", stage="relations", error=type(exc).__name__)
            return [self._deny(Reason.PDP_ERROR)] * len(batch)
        try:
            return self._evaluate(batch, relations)
        except Exception as exc:  # fail closed on anything the engine throws
            # By type only: engine messages quote entity data.
            logger.warning("authz.pdp_error", stage="evaluate", error=type(exc).__name__)
            return [self._deny(Reason.PDP_ERROR)] * len(batch)

    def _evaluate(self, batch: list[AuthzRequest], relations: Relations) -> list[Decision]:
        compiled = self._compiled
        answers: list[Decision | None] = [None] * len(batch)
        pending: dict[Permission, list[tuple[int, dict[str, Any]]]] = {}
        for index, request in enumerate(batch):
            if not relations.exists(request.resource):
                answers[index] = self._deny(Reason.UNKNOWN_RESOURCE)
                continue
            cedar_request = self._cedar_request(request)
            if not fits(cedar_request, compiled.applies_to):
                # What the engine answers for a request outside the schema: no decision.
                logger.warning("authz.pdp_error", stage="request", action=request.action.value)
                answers[index] = self._deny(Reason.PDP_ERROR)
                continue
            pending.setdefault(request.action, []).append((index, cedar_request))
        if not pending:
            return self._complete(answers)
        entities = self._parse(_json(cedar_entities(relations)))
        for action, asks in pending.items():
            wire = [{**ask, "context": _json(unschematised(ask["context"]))} for _, ask in asks]
            # No schema here: fits() above stands for the request validation (slicing.py).
            results = _authorize(wire, compiled.sliced[action], entities)
            for (index, _), result in zip(asks, results, strict=True):
                decision = self._read(result)
                if decision is None:
                    decision = self._default_deny(batch[index], relations)
                answers[index] = decision
        return self._complete(answers)

    def _cedar_request(self, request: AuthzRequest) -> dict[str, Any]:
        barred = self._config.barred_regions.get(request.action, frozenset())
        return {
            "principal": principal_uid(request.principal),
            "action": action_uid(request.action),
            "resource": resource_uid(request.resource),
            "context": cedar_context(request.context, request.action, barred),
        }

    def _read(self, result: _Answer) -> Decision | None:
        """The decision of one evaluation of a slice (every policy a permit; see slicing.py),
        or None for a plain deny (no permit satisfied). Any error at all is a deny: an
        erroring policy is skipped by Cedar, and an erroring forbid could let a permit
        through."""
        diagnostics = result.diagnostics
        if diagnostics.errors or result.decision not in _DECIDED:
            logger.warning("authz.pdp_error", stage="policy", errors=len(diagnostics.errors))
            return self._deny(Reason.PDP_ERROR)
        return self._outcome(tuple(diagnostics.reason))

    def _default_deny(self, request: AuthzRequest, relations: Relations) -> Decision:
        return self._deny(relations.notes.get(request.resource, Reason.NO_RELATIONSHIP))


def _outcome(compiled: _Compiled, satisfied_ids: tuple[str, ...]) -> Decision | None:
    """Cedar's rule over the satisfied policies, read from the effects kept in the
    annotations: no permit is a plain deny (None); a forbid with a permit names the denial
    (a stranger is not told that a step-up would help, nor where a vehicle is barred).
    Depends on the ids and the policy only, so each CedarPdp keeps the answers it has worked
    out (see ``OUTCOME_CACHE``)."""
    satisfied = sorted((compiled.meta[pid] for pid in satisfied_ids), key=lambda m: m.order)
    permits = [m for m in satisfied if m.permit]
    if not permits:
        return None
    forbids = tuple(m.reason.value for m in satisfied if not m.permit)
    if forbids:
        return Decision.deny(Reason(forbids[0]), compiled.version, forbids)
    ids = tuple(m.reason.value for m in permits)
    obligations = frozenset(o for m in permits for o in m.obligations)
    return Decision(True, permits[0].reason, compiled.version, ids, obligations)


def bare_evaluator(
    policy: PolicyText, relations: Relations, request: AuthzRequest
) -> Callable[[], bool]:
    """The engine alone, everything parsed in advance: the ceiling benchmarks compare
    :meth:`CedarPdp.decide` with. Not a PDP (no fail-closed handling)."""
    compiled = compile_policy(policy)
    entities = cedarpy.Entities.from_json_str(_json(cedar_entities(relations)), compiled.schema)
    cedar_request = {
        "principal": principal_uid(request.principal),
        "action": action_uid(request.action),
        "resource": resource_uid(request.resource),
        "context": cedar_context(request.context, request.action, ()),
    }

    def evaluate() -> bool:
        result = cedarpy.is_authorized(
            cedar_request, compiled.policies, entities, schema=compiled.schema
        )
        return result.decision is cedarpy.Decision.Allow

    return evaluate


class _Diagnostics(msgspec.Struct, frozen=True):
    """What the engine says about one evaluation: the satisfied policies' ids (``reason``)
    and the errors of any policy that could not be evaluated."""

    reason: tuple[str, ...]
    errors: tuple[Any, ...]


class _Answer(msgspec.Struct, frozen=True):
    """One request's answer as the engine writes it (JSON); its other fields are not read."""

    decision: str
    diagnostics: _Diagnostics


_ANSWER: Final = msgspec.json.Decoder(_Answer)
_DECIDED: Final = frozenset({"Allow", "Deny"})


def _authorize(wire: list[dict[str, Any]], policies: Any, entities: Any) -> list[_Answer]:
    """Evaluate ``wire`` (requests whose context is JSON text) with no schema (``fits``
    stands for the request validation). The engine's own entry point, typed in cedarpy's
    ``_internal.pyi``: the package's Python wrapper around it parses each answer with
    ``json`` into objects, ~6 us per decision (a tenth of the evaluation); here one msgspec
    decode into the two fields read. A field missing or of another type is a ValidationError,
    which the caller turns into a deny (``pdp-error``), as any engine failure."""
    return [
        _ANSWER.decode(text)
        for text in _engine.is_authorized_batch(wire, policies, entities, None, False)
    ]


_ENCODER: Final = msgspec.json.Encoder()


def _json(value: object) -> str:
    """Compact JSON, keys in insertion order (the same text as ``json.dumps`` with compact
    separators, ~8x faster: it is written twice per decision)."""
    return _ENCODER.encode(value).decode()


__all__ = [
    "CedarPdp",
    "PdpConfig",
    "PolicyDecisionPoint",
    "PolicyInvalid",
    "PolicyText",
    "bare_evaluator",
    "compile_policy",
]
