"""A token family used from somewhere it was never used before."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from fleetward.audit.alerts import AlertSeverity
from fleetward.detection.config import NewInfrastructureConfig
from fleetward.detection.finding import BaseRule, Finding
from fleetward.detection.observed import Observed


@dataclass(slots=True)
class _Family:
    first_event: str
    ranges: set[str] = field(default_factory=set)
    clients: set[str] = field(default_factory=set)


class TokenNewInfrastructure(BaseRule):
    """A token family (one sign-in and its refreshed tokens) seen from a network range
    (``/24`` IPv4, ``/48`` IPv6 by default) or a client it was never used from before. A
    refresh token or access token lifted from a phone and replayed from an attacker's host
    shows here first; a family moving to another client id should never happen at all.

    The first event of a family sets its baseline and never alerts. Families are remembered
    in memory (bounded, least recently used dropped), rebuilt from the audit log at start."""

    id = "token-new-infrastructure"
    severity = AlertSeverity.HIGH
    names = frozenset()  # any event carrying a token family and an address

    def __init__(self, config: NewInfrastructureConfig) -> None:
        self._config = config
        self._families: OrderedDict[str, _Family] = OrderedDict()

    def accepts(self, event: Observed) -> bool:
        return event.token_family is not None and not event.by_system

    def observe(self, event: Observed) -> Sequence[Finding]:
        family_id = event.token_family
        if family_id is None or event.by_system:
            return ()
        network = self._range(event.source_ip)
        family = self._families.get(family_id)
        if family is None:
            family = self._families[family_id] = _Family(first_event=event.id)
            if len(self._families) > self._config.families_remembered:
                self._families.popitem(last=False)
            if network:
                family.ranges.add(network)
            if event.client_id:
                family.clients.add(event.client_id)
            return ()
        self._families.move_to_end(family_id)
        news: list[str] = []
        if network and network not in family.ranges:
            if family.ranges:
                news.append(f"network {network}")
            family.ranges.add(network)
        if event.client_id and event.client_id not in family.clients:
            if family.clients:
                news.append(f"client {event.client_id}")
            family.clients.add(event.client_id)
        if not news:
            return ()
        summary = f"token family {family_id} of {event.actor} used from new {', '.join(news)}"
        return (
            self.finding(
                event,
                subject_type="token_family",
                subject_id=family_id,
                tenant_id=event.actor_tenant_id,
                summary=summary,
                evidence=[family.first_event, event.id],
            ),
        )

    def _range(self, address: str | None) -> str | None:
        if not address:
            return None
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        bits = self._config.ipv4_prefix if ip.version == 4 else self._config.ipv6_prefix
        return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))
