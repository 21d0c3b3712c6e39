"""Sends the cases to a deployment over HTTP and judges each answer against the oracle.

One shared ``httpx.AsyncClient`` (keep-alive, bounded connections), a fixed pool of workers
(``concurrency``), a timeout per request. Verdicts (a 5xx always fails):

* ALLOW: a 2xx; when the case names the fields allowed to the actor, no other field.
* A filtered list asked for pages (``limit=`` in its query) is walked page after page
  (``next_cursor``, at most MAX_PAGES): every page is judged together, so an object cut
  into the pages before the filter ran shows in a cursor (the case's canaries carry the
  object's ids in cursor form).
* DENY: no 2xx, and no canary of the object in the body or the headers.
* FILTERED: a 2xx (a list) that carries none of the object's canaries.
* DENY_HIDDEN: a 404 whose body equals the body of the same request for an object that does
  not exist (``Case.hidden_reference``), ``instance`` aside; and no canary.
* UNAUTHENTICATED: a 401 with a ``WWW-Authenticate`` challenge.
* A ``store-busy`` 503 (the deployment's "nothing written, retry") is sent again, at most
  BUSY_RETRIES times; any other 5xx is judged at once.
* A refused write with a ``read_back``: the read (a list: every page of it) answers the
  same before and after (but for the list's ``refusal_record``: a refused command may leave
  its rejected job in the vehicle's job list, and nothing else).
* A command (``Case.job``): every send carries a fresh ``Idempotency-Key``
  (``Request.fresh_headers``); allowed means a 202 whose body names its job (``id``), and
  the job is cancelled by its requester as soon as the case is judged (``Case.cancel``), so
  that no job of the probe's stays in flight to meet the next command on the vehicle.

Cases run in phases so that no write the oracle allows can change what another case reads
back: reads first, then writes that must be refused, then commands that must be accepted
(one at a time: a vehicle takes one security-relevant command at a time, and each is
cancelled before the next is sent), then writes that must succeed. The refused writes are
read back once per object before and after their phase; only an object that changed has its
writes sent again one by one, each read back, to name the culprit.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import parse_qs, parse_qsl, quote, urlencode, urlsplit

import httpx

from fleetward.probe.auth import TokenBook, TokenError
from fleetward.probe.model import Case, Expect, Request, Result, Verdict

ProgressHook = Callable[[Result], None]

EXCERPT_LIMIT: Final = 500
MAX_PAGES: Final = 200
BUSY_RETRIES: Final = 2
MAX_RETRY_AFTER: Final = 1.0
WRITE_CONCURRENCY: Final = 4
_READ_RETRIES: Final = (0.05, 0.25)
# RFC 9470: the error a resource server answers when the sign-in is too weak or too old.
STEP_UP_CHALLENGE: Final = "insufficient_user_authentication"
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
# Characters sent as they are in a request target; anything else is percent-encoded.
_TARGET_SAFE: Final = "/?&=%:@!$'()*+,;~-._"
_REDACTIONS: Final = (
    # Signed tokens (JWT / JWS compact form).
    re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
    # Authorization header values.
    re.compile(r"(?i)\b(?:bearer|dpop)\s+[A-Za-z0-9._~+/=-]{8,}"),
)
_SECRET_FIELDS: Final = re.compile(
    r"(?i)(\"?(?:access_token|refresh_token|id_token|device_code|user_code|code|"
    r"client_assertion|password|totp_secret|secret)\"?\s*[:=]\s*\"?)([^\"&\s,}]+)"
)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: httpx.Headers
    text: str

    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except ValueError:
            return None


class _CaseError(Exception):
    """The case could not be run (no token, transport failure): an ERROR verdict."""


def redact(text: str) -> str:
    """The text with tokens, codes and secrets replaced by ``[redacted]``."""
    for pattern in _REDACTIONS:
        text = pattern.sub("[redacted]", text)
    return _SECRET_FIELDS.sub(lambda m: f"{m.group(1)}[redacted]", text)


def excerpt(text: str) -> str:
    """At most EXCERPT_LIMIT characters of a response, secrets redacted first."""
    return redact(text)[:EXCERPT_LIMIT]


def _without_instance(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: v for k, v in body.items() if k != "instance"}
    return body


def _leaked(case: Case, answer: Answer) -> str | None:
    headers = "\n".join(f"{k}: {v}" for k, v in answer.headers.multi_items())
    for canary in case.canaries:
        if canary and (canary in answer.text or canary in headers):
            return canary
    return None


def _field_sets(body: Any) -> list[set[str]]:
    """The field names of the returned object(s): a list's items, or the object itself."""
    if isinstance(body, list):
        return [set(item) for item in body if isinstance(item, dict)]
    if isinstance(body, dict):
        items = body.get("items")
        if isinstance(items, list):
            return [set(item) for item in items if isinstance(item, dict)]
        return [set(body)]
    return []


def _job_id(answer: Answer) -> str | None:
    body = answer.json()
    found = body.get("id") if isinstance(body, dict) else None
    return found if isinstance(found, str) and found else None


def _not_authz(status: int) -> str:
    """What a command's 409 or 429 is: never an authorization answer, right or wrong."""
    if status == 409:
        return " (a vehicle-state or conflict refusal, not an authorization answer)"
    if status == 429:
        return " (a quota refusal, not an authorization answer)"
    return ""


def judge(case: Case, answer: Answer, reference: Answer | None) -> str:
    """Why the answer is wrong for the case ("" when it is right)."""
    status = answer.status
    if status >= 500:
        return f"server error {status}"
    expect = case.expect
    if expect is Expect.ALLOW:
        if not 200 <= status < 300 and not case.job:
            return f"expected a 2xx (allowed), got {status}"
        if case.job:
            if status != 202:
                return (
                    f"expected 202 (a command is accepted as a job), got {status}"
                    f"{_not_authz(status)}"
                )
            if _job_id(answer) is None:
                return "the accepted command names no job (no id in the body)"
        if case.allowed_fields is not None:
            for fields in _field_sets(answer.json()):
                extra = sorted(fields - case.allowed_fields)
                if extra:
                    return f"fields not allowed to this actor in the response: {', '.join(extra)}"
        return ""
    leaked = _leaked(case, answer)
    if expect is Expect.FILTERED:
        if not 200 <= status < 300:
            return f"expected a 2xx list without the object (filtered), got {status}"
        if leaked is not None:
            return "the list carries an object the actor may not see (a canary is in it)"
        return ""
    if expect is Expect.UNAUTHENTICATED:
        if status != 401:
            return f"expected 401 (unauthenticated), got {status}"
        if "www-authenticate" not in answer.headers:
            return "401 without a WWW-Authenticate challenge"
    elif expect is Expect.STEP_UP:
        if status != 401:
            return f"expected 401 (a step-up challenge), got {status}"
        if STEP_UP_CHALLENGE not in answer.headers.get("www-authenticate", ""):
            return f"401 without the step-up challenge ({STEP_UP_CHALLENGE})"
    elif 200 <= status < 300:
        return f"expected a refusal ({expect.value}), got {status}"
    elif expect is Expect.DENY and case.job and status != 403:
        # A command refused past the object check is refused for its permission (403); a
        # 409 (vehicle state, conflict) or 429 (quota) says nothing about authorization.
        return f"expected 403 (the command is not permitted), got {status}{_not_authz(status)}"
    elif expect is Expect.DENY_HIDDEN:
        if status != 404:
            return f"expected 404 (hidden), got {status}: the refusal reveals the object exists"
        if reference is not None:
            if reference.status != 404:
                return f"the unknown-object request answered {reference.status}, not 404"
            if _without_instance(answer.json()) != _without_instance(reference.json()):
                return "the 404 differs from the unknown-object 404: existence is revealed"
    if leaked is not None:
        return "a canary of the object is in the refusal (data disclosed)"
    return ""


class _Session:
    def __init__(self, http: httpx.AsyncClient, base: str, tokens: TokenBook) -> None:
        self._http = http
        self._base = base
        self._tokens = tokens
        self._references: dict[tuple[str, str, str | None, str | None], asyncio.Task[Answer]] = {}
        self.policy_version: str | None = None

    async def send(self, request: Request) -> Answer:
        url = self._base + request.path
        headers = dict(request.headers)
        for name in request.fresh_headers:
            headers[name] = f"probe-{secrets.token_hex(16)}"
        try:
            credential = self._tokens.resolve(request.actor, request.credential, request.path)
        except TokenError as error:
            raise _CaseError(str(error)) from None
        if credential is not None:
            headers.update(credential.headers(request.method, url, self._tokens.clock))
        built = self._http.build_request(
            request.method,
            url,
            headers=headers,
            json=request.body if request.body is not None else None,
        )
        target = quote(request.path, safe=_TARGET_SAFE).encode("ascii")
        if target != built.url.raw_path:
            # httpx normalises dot segments; confusing ids are sent exactly as written.
            built.extensions["target"] = target
        try:
            response = await self._http.send(built)
        except httpx.HTTPError as error:
            raise _CaseError(f"{type(error).__name__} sending the request") from None
        return Answer(response.status_code, response.headers, response.text)

    async def read(self, request: Request) -> Answer:
        """A read-back: an idempotent GET, taken again when the store failed to answer it
        (the evidence must be the object's state, not a busy store). The case's own
        request is never retried: its 5xx is a finding. A list is read to its last page
        (``next_cursor``, at most MAX_PAGES) and judged whole: a list ordered by id gains a
        refusal's record anywhere, so its first page alone would lose an item that did not
        change (a false side effect), and a change past it would go unseen."""
        first = await self._read_page(request)
        items = _page_items(first)
        if items is None:
            return first
        answer = first
        for _ in range(MAX_PAGES):
            cursor = _next_cursor(answer)
            if cursor is None:
                break
            answer = await self._read_page(
                replace(request, path=_with_cursor(request.path, cursor))
            )
            more = _page_items(answer)
            if more is None:
                return answer  # a page that is not a list page: judged as it is
            items.extend(more)
        if answer is first:
            return first
        whole = {**first.json(), "items": items, "next_cursor": None}
        return Answer(first.status, first.headers, json.dumps(whole))

    async def _read_page(self, request: Request) -> Answer:
        answer = await self.send(request)
        for pause in _READ_RETRIES:
            if answer.status < 500:
                break
            await asyncio.sleep(pause)
            answer = await self.send(request)
        return answer

    async def answer(self, request: Request) -> Answer:
        """The case's own answer. Sent again only after a ``store-busy`` 503 (the platform's
        promise: nothing was written, retry after ``Retry-After``), at most BUSY_RETRIES
        times: load on the deployment is not a finding, a store that stays busy is."""
        answer = await self.send(request)
        for _ in range(BUSY_RETRIES):
            if not _store_busy(answer):
                break
            await asyncio.sleep(_retry_after(answer))
            answer = await self.send(request)
        return answer

    async def _walk(self, case: Case, first: Answer) -> Answer:
        """Every page of a list, from ``first`` on, as one answer (the pages' bodies one per
        line), up to the first page that names a canary; a page that is not a 2xx ends the
        walk and is the answer judged."""
        request = case.request
        texts = [first.text]
        answer = first
        for _ in range(MAX_PAGES):
            cursor = _next_cursor(answer)
            if cursor is None or _leaked(case, answer) is not None:
                break
            answer = await self.answer(replace(request, path=_with_cursor(request.path, cursor)))
            if not 200 <= answer.status < 300:
                return answer
            texts.append(answer.text)
        if len(texts) == 1:
            return first
        return Answer(first.status, first.headers, "\n".join(texts))

    def reference(self, request: Request) -> Awaitable[Answer]:
        """The hidden-object reference, fetched once per distinct request."""
        key = (request.method, request.path, request.actor, request.credential)
        task = self._references.get(key)
        if task is None:
            task = asyncio.ensure_future(self.send(request))
            self._references[key] = task
        return task

    async def run_case(self, case: Case, *, read_back: bool = True) -> Result:
        """Send the case and judge it; with ``read_back``, read the object before and after
        a write that must be refused (without: the phase reads back once for many cases)."""
        started = time.perf_counter()
        answer: Answer | None = None
        try:
            checks_writes = (
                read_back and case.read_back is not None and case.expect is not Expect.ALLOW
            )
            before = await self.read(case.read_back) if checks_writes and case.read_back else None
            if case.step_up and case.request.actor is not None and case.request.credential is None:
                # A step-up command: sent with a token from a recent enough sign-in.
                try:
                    await self._tokens.fresh(case.request.actor)
                except TokenError as error:
                    raise _CaseError(str(error)) from None
            started = time.perf_counter()
            answer = await self.answer(case.request)
            if _walks(case):
                answer = await self._walk(case, answer)
            elapsed = (time.perf_counter() - started) * 1000
            reference = None
            if case.expect is Expect.DENY_HIDDEN and case.hidden_reference is not None:
                reference = await self.reference(case.hidden_reference)
            reason = judge(case, answer, reference)
            if not reason and before is not None and case.read_back is not None:
                after = await self.read(case.read_back)
                reason = _side_effect(before, after, case.read_back.refusal_record)
            verdict = Verdict.FAIL if reason else Verdict.PASS
            if case.cancel is not None and 200 <= answer.status < 300:
                undone = await self._cancel(case.cancel, answer)
                if undone and not reason:
                    # Not a finding about the deployment: the probe could not clean up, and
                    # the next command on the vehicle may meet its job in flight.
                    verdict, reason = Verdict.ERROR, undone
        except _CaseError as error:
            return self._result(case, Verdict.ERROR, answer, str(error), started)
        return Result(
            case=case,
            verdict=verdict,
            status=answer.status,
            reason=reason,
            elapsed_ms=elapsed,
            policy_version=answer.headers.get("x-fleetward-policy-version", self.policy_version),
            response_excerpt=excerpt(answer.text),
        )

    async def _cancel(self, cancel: Request, accepted: Answer) -> str:
        """Cancel the job an accepted command created; why it failed ("" when it did not)."""
        job = _job_id(accepted)
        if job is None:
            return "the accepted command names no job to cancel"
        answer = await self.send(
            replace(cancel, path=cancel.path.replace("{id}", quote(job, safe="")))
        )
        if not 200 <= answer.status < 300:
            return f"the probe could not cancel its accepted job {job}: {answer.status}"
        return ""

    def _result(
        self, case: Case, verdict: Verdict, answer: Answer | None, reason: str, started: float
    ) -> Result:
        return Result(
            case=case,
            verdict=verdict,
            status=None if answer is None else answer.status,
            reason=reason,
            elapsed_ms=(time.perf_counter() - started) * 1000,
            policy_version=self.policy_version,
            response_excerpt="" if answer is None else excerpt(answer.text),
        )


def _store_busy(answer: Answer) -> bool:
    if answer.status != 503:
        return False
    body = answer.json()
    return isinstance(body, dict) and body.get("reason") == "store-busy"


def _retry_after(answer: Answer) -> float:
    value = answer.headers.get("retry-after", "")
    seconds = float(value) if value.isdigit() else 1.0
    return min(max(seconds, 0.05), MAX_RETRY_AFTER)


def _walks(case: Case) -> bool:
    """A filtered list asked for pages: walked to its last page."""
    query = urlsplit(case.request.path).query
    return case.expect is Expect.FILTERED and "limit" in parse_qs(query)


def _page_items(answer: Answer) -> list[Any] | None:
    """The items of a 2xx list page (``{"items": [...], ...}``); None for anything else."""
    if not 200 <= answer.status < 300:
        return None
    body = answer.json()
    items = body.get("items") if isinstance(body, dict) else None
    return list(items) if isinstance(items, list) else None


def _next_cursor(answer: Answer) -> str | None:
    if not 200 <= answer.status < 300:
        return None
    body = answer.json()
    cursor = body.get("next_cursor") if isinstance(body, dict) else None
    return cursor if isinstance(cursor, str) and cursor else None


def _with_cursor(path: str, cursor: str) -> str:
    parts = urlsplit(path)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "cursor"]
    query.append(("cursor", cursor))
    return f"{parts.path}?{urlencode(query)}"


def _side_effect(before: Answer, after: Answer, record: tuple[tuple[str, Any], ...] = ()) -> str:
    if before.status >= 500 or after.status >= 500:
        return f"the read-back failed ({before.status} then {after.status})"
    if before.status != after.status or not _unchanged(before.json(), after.json(), record):
        return "the refused write changed the object (read-back differs)"
    return ""


def _unchanged(before: Any, after: Any, record: tuple[tuple[str, Any], ...]) -> bool:
    """The read-back says the same, but for list items holding ``record``'s values that
    the refusals may have added (their own records, e.g. a rejected command job)."""
    if before == after:
        return True
    if not record or not isinstance(before, dict) or not isinstance(after, dict):
        return False
    if {k: v for k, v in before.items() if k != "items"} != {
        k: v for k, v in after.items() if k != "items"
    }:
        return False
    old, new = before.get("items"), after.get("items")
    if not isinstance(old, list) or not isinstance(new, list):
        return False
    added = list(new)
    for item in old:
        if item not in added:
            return False  # an item changed or went away
        added.remove(item)
    return all(
        isinstance(item, dict) and all(item.get(k) == v for k, v in record) for item in added
    )


def _is_write(case: Case) -> bool:
    return case.request.method.upper() not in _SAFE_METHODS


def _is_command(case: Case) -> bool:
    return case.job and _is_write(case) and case.expect is Expect.ALLOW


def phases(cases: list[Case]) -> list[list[int]]:
    """Case indexes in run order: reads, then refused writes, then allowed commands, then
    allowed writes."""
    reads: list[int] = []
    refused: list[int] = []
    commands: list[int] = []
    allowed: list[int] = []
    for index, case in enumerate(cases):
        if not _is_write(case):
            reads.append(index)
        elif _is_command(case):
            commands.append(index)
        elif case.expect is Expect.ALLOW:
            allowed.append(index)
        else:
            refused.append(index)
    return [phase for phase in (reads, refused, commands, allowed) if phase]


async def _policy_version(http: httpx.AsyncClient, base: str) -> str | None:
    try:
        response = await http.get(f"{base}/readyz")
        found = response.json().get("policy_version")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


class _Phase:
    """One phase: a fixed pool of workers over the phase's cases."""

    def __init__(
        self,
        session: _Session,
        cases: list[Case],
        results: list[Result | None],
        progress: ProgressHook | None,
    ) -> None:
        self.session = session
        self.cases = cases
        self.results = results
        self.progress = progress

    async def run(self, indexes: list[int], width: int, *, read_back: bool = True) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for index in indexes:
            queue.put_nowait(index)
        workers = min(width, len(indexes))
        await asyncio.gather(*(self._drain(queue, read_back) for _ in range(workers)))

    async def _drain(self, queue: asyncio.Queue[int], read_back: bool) -> None:
        while not queue.empty():
            index = queue.get_nowait()
            result = await self.session.run_case(self.cases[index], read_back=read_back)
            self.results[index] = result
            if self.progress is not None:
                self.progress(result)

    async def refused_writes(self, indexes: list[int], width: int) -> None:
        """Writes that must be refused, read back once per object for the whole phase.

        Nothing the oracle allows runs in this phase, so an object whose read-back changed
        was changed by one of its refused writes: those are sent again one at a time, each
        with its own read-back, to name the culprit.
        """
        groups: dict[Request, list[int]] = {}
        for index in indexes:
            read = self.cases[index].read_back
            if read is not None:
                # Read-backs are bodiless GETs, so they hash; one snapshot serves them all.
                groups.setdefault(read, []).append(index)
        before = await self._snapshot(list(groups), width)
        await self.run(indexes, width, read_back=False)
        after = await self._snapshot(list(groups), width)
        for read, members in groups.items():
            if _same(before.get(read), after.get(read), read.refusal_record):
                continue
            await self._name_culprits(members)

    async def _snapshot(self, reads: list[Request], width: int) -> dict[Request, Answer]:
        gate = asyncio.Semaphore(width)
        found: dict[Request, Answer] = {}

        async def one(read: Request) -> None:
            async with gate:
                try:
                    found[read] = await self.session.read(read)
                except _CaseError:
                    return  # no snapshot: the group is checked case by case

        await asyncio.gather(*(one(read) for read in reads))
        return found

    async def _name_culprits(self, members: list[int]) -> None:
        culprits = 0
        for index in members:
            first = self.results[index]
            if first is not None and first.verdict is not Verdict.PASS:
                culprits += 1  # already caught (a 2xx): a rerun may meet a used object
                continue
            result = await self.session.run_case(self.cases[index])
            if result.verdict is not Verdict.PASS:
                culprits += 1
            self.results[index] = result
        if culprits:
            return
        for index in members:
            earlier = self.results[index]
            if earlier is not None and earlier.verdict is Verdict.PASS:
                self.results[index] = replace(
                    earlier,
                    verdict=Verdict.FAIL,
                    reason="the object changed while its refused writes ran "
                    "(no single write reproduced it alone)",
                )


def _same(
    before: Answer | None, after: Answer | None, record: tuple[tuple[str, Any], ...] = ()
) -> bool:
    if before is None or after is None or before.status >= 500 or after.status >= 500:
        return False
    return before.status == after.status and _unchanged(before.json(), after.json(), record)


async def run(
    cases: Iterable[Case],
    *,
    target: str,
    tokens: TokenBook,
    concurrency: int = 16,
    timeout: float = 10.0,  # noqa: ASYNC109 - the per-request HTTP timeout (httpx's)
    progress: ProgressHook | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[Result]:
    """Run every case against ``target``; the results are in the order of ``cases``.

    Writes run at most WRITE_CONCURRENCY at a time: a store serialises writes anyway, and
    piling them up only measures its lock queue, not authorization.
    """
    ordered = list(cases)
    base = target.rstrip("/")
    width = max(1, concurrency)
    limits = httpx.Limits(max_connections=width, max_keepalive_connections=width)
    results: list[Result | None] = [None] * len(ordered)
    async with httpx.AsyncClient(
        transport=transport, timeout=timeout, limits=limits, follow_redirects=False
    ) as http:
        session = _Session(http, base, tokens)
        session.policy_version = await _policy_version(http, base)
        phase = _Phase(session, ordered, results, progress)
        for indexes in phases(ordered):
            first = ordered[indexes[0]]
            if not _is_write(first):
                await phase.run(indexes, width)
            elif _is_command(first):
                await phase.run(indexes, 1)
            elif first.expect is Expect.ALLOW:
                await phase.run(indexes, min(width, WRITE_CONCURRENCY))
            else:
                await phase.refused_writes(indexes, min(width, WRITE_CONCURRENCY))
    return [result for result in results if result is not None]
