"""The lockout policy as data: which counters exist, their limits and the backoff.

Every counter key is ``<factor>:<dimension>:<value>`` and never names a route, so the same
counters apply whichever endpoint or API version checks a password or a code.

Policy:

* Each key allows ``limit`` failures per window (one hour). Reaching the limit blocks the
  key for 1 minute, and every further failure while the streak lasts doubles the block, up
  to 15 minutes. The streak ends after an hour without failures.
* A block is bounded and expires on its own: an attacker can delay a victim's login by at
  most 15 minutes per attempt they keep making, never lock the account permanently. The
  trade-off: during a block even the right password (and MFA) is refused, because answering
  it differently would turn the lockout into a password oracle.
* Accounts are keyed by a hash of the submitted username, so unknown usernames are counted
  and locked exactly like real ones (no enumeration through lockout behaviour).
* IPv6 addresses are counted per /64: one subscriber usually holds a whole /64.
* Nothing is counted per client application: a block there would refuse every person signing
  in through that app (anyone with a few dozen addresses could keep a whole mobile app's
  logins refused, and at scale ordinary typos alone would), and every attempt of the app
  would update one row. Stuffing through one app is an alert instead: the
  ``credential-stuffing`` detection rule, over the ``user:login:failed`` events, which name
  the client.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from fleetward.core.context import current_request

WINDOW = timedelta(hours=1)
FIRST_BLOCK = timedelta(minutes=1)
MAX_BLOCK = timedelta(minutes=15)
# Distinct accounts failing from one network within the window before the network is blocked.
SPRAY_ACCOUNTS = 10
# A recovery-code login is allowed at most once per period and account.
RECOVERY_COOLDOWN = timedelta(hours=24)


class Factor(StrEnum):
    PASSWORD = "password"  # noqa: S105 - a counter namespace, not a secret
    TOTP = "totp"
    RECOVERY = "recovery"
    WEBAUTHN = "webauthn"
    # A user code typed on the device page (RFC 8628 section 5.1): a wrong one is a guess.
    USER_CODE = "user_code"


class Dimension(StrEnum):
    ACCOUNT = "account"
    IP = "ip"


# Per-account limits are low (a person mistypes a few times); per-network limits allow a
# shared NAT some mistakes.
LIMITS: dict[tuple[Factor, Dimension], int] = {
    (Factor.PASSWORD, Dimension.ACCOUNT): 5,
    (Factor.PASSWORD, Dimension.IP): 30,
    (Factor.TOTP, Dimension.ACCOUNT): 5,
    (Factor.TOTP, Dimension.IP): 30,
    (Factor.RECOVERY, Dimension.ACCOUNT): 3,
    (Factor.RECOVERY, Dimension.IP): 10,
    (Factor.WEBAUTHN, Dimension.ACCOUNT): 10,
    (Factor.WEBAUTHN, Dimension.IP): 30,
    # Codes are ~34 bits and live 10 minutes; a person types one or two wrong per device.
    (Factor.USER_CODE, Dimension.ACCOUNT): 10,
    (Factor.USER_CODE, Dimension.IP): 30,
}


@dataclass(frozen=True, slots=True, order=True)
class ThrottleKey:
    factor: Factor
    dimension: Dimension
    value: str

    @property
    def key(self) -> str:
        return f"{self.factor.value}:{self.dimension.value}:{self.value}"

    @property
    def limit(self) -> int:
        return LIMITS[(self.factor, self.dimension)]


def backoff(failures: int, limit: int) -> timedelta:
    """How long a key stays blocked after its ``failures``-th failure (failures >= limit)."""
    doublings = min(max(failures - limit, 0), 10)  # capped: no huge exponents
    block: timedelta = FIRST_BLOCK * (1 << doublings)
    return min(block, MAX_BLOCK)


def network_of(address: str | None) -> str:
    """The counted network of a client address: IPv4 as is, IPv6 as its /64."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        # No usable address (a test transport, a unix socket): one shared bucket, which
        # fails closed (everyone without an address shares one limit).
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def client_network(peer: str | None) -> str:
    """The counted network of the current request's client: the address the request-identity
    middleware resolved through the configured trusted proxies, not the TCP peer (behind a
    reverse proxy every peer is the proxy, and one client's failures would spend the budget
    of everyone). ``peer`` only where no middleware ran."""
    context = current_request()
    return network_of(context.source_ip if context is not None else peer)


def normalise_username(username: str) -> str:
    # Usernames are lower-case ASCII (directory rule), so case variants name one account.
    return username.strip().lower()


def account_of(username: str) -> str:
    """The counter value for a submitted username: a hash, so no username is stored."""
    return hashlib.sha256(normalise_username(username).encode("utf-8")).hexdigest()[:32]


def keys_for(factor: Factor, *, account: str, network: str) -> tuple[ThrottleKey, ...]:
    keys = [
        ThrottleKey(factor, Dimension.ACCOUNT, account),
        ThrottleKey(factor, Dimension.IP, network),
    ]
    # Sorted, so concurrent requests lock rows in the same order (no deadlocks).
    return tuple(sorted(keys, key=lambda k: k.key))
