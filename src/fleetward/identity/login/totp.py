"""TOTP factors (RFC 6238: 30 s steps, 6 digits, one step of clock drift either way).

Seeds are encrypted with the platform data key, bound to their owner (purpose
``totp:<user id>``), so a seed copied into another user's row does not decrypt. A code is
accepted once: the step it belongs to must be newer than the last accepted step, and that
is checked and recorded in one conditional UPDATE, so two replicas cannot both accept it.
"""

from __future__ import annotations

import hmac
import re
from enum import StrEnum

import pyotp
from sqlalchemy import delete, or_, select, update

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.datakey import DataKey
from fleetward.core.ids import new_id
from fleetward.identity.credential_models import TotpFactor
from fleetward.identity.models import User
from fleetward.services import ServiceContext

STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1
# ASCII digits only: str.isdigit() would accept other scripts' digits.
_CODE = re.compile(r"^[0-9]{6}$")


class TotpVerdict(StrEnum):
    ACCEPTED = "accepted"
    BAD_CODE = "bad-totp"
    REPLAYED = "totp-replayed"
    NOT_ENROLLED = "factor-not-available"


def _purpose(user_id: str) -> str:
    return f"totp:{user_id}"


def normalise_code(code: str) -> str:
    return code.replace(" ", "").strip()


class TotpFactors:
    def __init__(self, ctx: ServiceContext, data_key: DataKey) -> None:
        self._ctx = ctx
        self._key = data_key

    async def enrol(self, user: User, *, actor: Actor, secret: str | None = None) -> str:
        """A confirmed TOTP factor for ``user``, replacing any earlier one; returns the
        base32 seed (show it once, store it nowhere)."""
        seed = secret or pyotp.random_base32(length=32)  # 160 bits, RFC 4226's recommendation
        now = self._ctx.clock.now()
        await self._ctx.session.execute(delete(TotpFactor).where(TotpFactor.user_id == user.id))
        factor = TotpFactor(
            id=new_id("totp"),
            user_id=user.id,
            encrypted_secret=self._key.encrypt(seed.encode("ascii"), purpose=_purpose(user.id)),
            last_used_step=None,
            confirmed_at=now,
            created_at=now,
        )
        self._ctx.session.add(factor)
        self._ctx.audit.record(
            self._ctx.session,
            EventName.MFA_ENROLLED,
            actor=actor,
            target=Target("user", user.id, user.home_tenant_id),
            details={"method": "totp"},
        )
        await self._ctx.session.flush()
        return seed

    async def enrolled(self, user_id: str) -> bool:
        return await self._factor(user_id) is not None

    async def verify(self, user_id: str, code: str) -> TotpVerdict:
        factor = await self._factor(user_id)
        if factor is None:
            return TotpVerdict.NOT_ENROLLED
        candidate = normalise_code(code)
        if not _CODE.fullmatch(candidate):
            return TotpVerdict.BAD_CODE
        seed = self._key.decrypt(factor.encrypted_secret, purpose=_purpose(user_id))
        totp = pyotp.TOTP(seed.decode("ascii"), digits=DIGITS, interval=STEP_SECONDS)
        current = int(self._ctx.clock.now().timestamp()) // STEP_SECONDS
        matched = None
        for step in range(current + DRIFT_STEPS, current - DRIFT_STEPS - 1, -1):
            if hmac.compare_digest(totp.generate_otp(step), candidate):
                matched = step
                break
        if matched is None:
            return TotpVerdict.BAD_CODE
        # Accept only a step newer than the last accepted one, atomically.
        result = await self._ctx.session.execute(
            update(TotpFactor)
            .where(
                TotpFactor.id == factor.id,
                or_(TotpFactor.last_used_step.is_(None), TotpFactor.last_used_step < matched),
            )
            .values(last_used_step=matched)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            return TotpVerdict.REPLAYED
        return TotpVerdict.ACCEPTED

    async def _factor(self, user_id: str) -> TotpFactor | None:
        return await self._ctx.session.scalar(
            select(TotpFactor).where(
                TotpFactor.user_id == user_id, TotpFactor.confirmed_at.is_not(None)
            )
        )
