"""Use of API versions the catalog has deprecated."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from fleetward.audit.alerts import AlertSeverity
from fleetward.detection.config import DeprecatedApiConfig
from fleetward.detection.finding import BaseRule, Finding
from fleetward.detection.observed import Observed

REQUESTS_REMEMBERED = 10_000


class DeprecatedApiUse(BaseRule):
    """A request to a route whose catalog lifecycle is ``deprecated``. A deprecated version
    often enforces less than the current one, and it is past its sunset soon: whoever still
    calls it is either an integration to migrate or an attacker looking for the weaker
    door. Known from the route name every authenticated request's audit events carry
    (``endpoint``); one request counts once, however many events it recorded."""

    id = "deprecated-api-use"
    severity = AlertSeverity.LOW
    names = frozenset()  # any event recorded while serving a deprecated route

    def __init__(self, config: DeprecatedApiConfig, endpoints: Iterable[str]) -> None:
        self._config = config
        self._endpoints = frozenset(endpoints)
        self._requests: OrderedDict[str, str] = OrderedDict()  # request id -> caller

    def accepts(self, event: Observed) -> bool:
        return event.endpoint is not None and event.endpoint in self._endpoints

    def observe(self, event: Observed) -> Sequence[Finding]:
        if not self.accepts(event) or event.endpoint is None:
            return ()
        caller = event.client_id or event.actor
        if event.request_id is not None:
            # Request ids are the platform's own (api/middleware.py); should two requests
            # ever share one (another process, a replayed record), an event is of a request
            # already counted only when it is that caller's (or names no client: the client
            # is bound to every event of an authenticated request), so an id another caller
            # used hides nothing.
            first = self._requests.get(event.request_id)
            if first is not None and (event.client_id is None or first == caller):
                return ()
            self._requests[event.request_id] = caller
            if len(self._requests) > REQUESTS_REMEMBERED:
                self._requests.popitem(last=False)
        return (
            self.finding(
                event,
                subject_type="client" if event.client_id else event.actor_type,
                subject_id=event.client_id or event.actor_id,
                tenant_id=event.actor_tenant_id,
                summary=f"{caller} called deprecated route {event.endpoint}",
                evidence=[event.id],
                key_subject=f"{event.endpoint}|{caller}",
            ),
        )
