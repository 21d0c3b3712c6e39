"""Authentication context classes (``acr``) and methods (``amr``, RFC 8176).

Ordered by strength: a route that demands ``MFA`` accepts ``MFA`` or ``PHISHING_RESISTANT``.
"""

from __future__ import annotations

from enum import StrEnum


class Acr(StrEnum):
    PASSWORD = "urn:fleetward:acr:pwd"  # noqa: S105 - a method name, not a secret
    MFA = "urn:fleetward:acr:mfa"
    PHISHING_RESISTANT = "urn:fleetward:acr:phr"

    @property
    def strength(self) -> int:
        return _STRENGTH[self]

    def satisfies(self, required: Acr) -> bool:
        return self.strength >= required.strength


_STRENGTH = {Acr.PASSWORD: 1, Acr.MFA: 2, Acr.PHISHING_RESISTANT: 3}


class Amr(StrEnum):
    PASSWORD = "pwd"  # noqa: S105 - a method name, not a secret
    OTP = "otp"
    HARDWARE_KEY = "hwk"
    RECOVERY_CODE = "rec"  # not in RFC 8176; recovery is never a phishing-resistant factor
    PRIVATE_KEY_JWT = "pop"  # workloads proving possession of their key
