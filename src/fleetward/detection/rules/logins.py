"""Rules on sign-in: stuffing a password list through one client application."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from fleetward.audit.alerts import AlertSeverity
from fleetward.audit.events import EventName
from fleetward.detection.config import CredentialStuffingConfig
from fleetward.detection.finding import BaseRule, Finding
from fleetward.detection.observed import Observed
from fleetward.detection.windows import Window, describe, distinct

# The subject of failures of a login started without a (registered) client.
NO_CLIENT: Final = "(none)"


class CredentialStuffing(BaseRule):
    """Failed sign-ins for many distinct accounts through one client application in a
    window: a leaked password list tried a few times per account from many networks, each
    below the per-account and per-network limits. Nothing blocks a client as a whole (that
    would refuse everyone signing in through the app: identity/login/limits.py), so this is
    where stuffing through one app shows, with the failures as evidence. Accounts are the
    failures' targets (a person, or the hash of a name no account has)."""

    id = "credential-stuffing"
    severity = AlertSeverity.HIGH
    names = frozenset({EventName.LOGIN_FAILED.value})

    def __init__(self, config: CredentialStuffingConfig) -> None:
        self._config = config
        # Distinct accounts count: repeats on one account cannot push the others out.
        self._window = Window(config.window, unique_values=True)

    def observe(self, event: Observed) -> Sequence[Finding]:
        client = event.details.get("client")
        subject = client if isinstance(client, str) and client else NO_CLIENT
        entries = self._window.add(subject, event.at, event.id, event.object_id)
        accounts = len(distinct(entries))
        if accounts < self._config.distinct_accounts:
            return ()
        return (
            self.finding(
                event,
                subject_type="client",
                subject_id=subject,
                tenant_id=None,
                summary=(
                    f"failed sign-ins for {accounts} distinct accounts through client "
                    f"{subject} in {describe(self._config.window)}"
                ),
                evidence=[e.event_id for e in entries],
            ),
        )
