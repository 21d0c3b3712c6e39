"""Recovery codes: ten single-use codes that stand in for the second factor.

Storage: HMAC-SHA256 under a key derived from the platform data key, over ``user id:code``,
rather than argon2. Each code carries 80 random bits, so even a fast hash leaves an offline
search at 2^80 work per code: argon2's slowness would add nothing there, yet it would make
every recovery attempt cost ten argon2 runs (a cheap CPU-exhaustion lever). The HMAC key
means a database dump alone cannot test guesses, and the user id in the MAC means a row
copied to another account does not match there.

Use is rare and loud: at most one recovery login per account per 24 hours (claimed
atomically in the throttle table, so two replicas cannot both grant one), each use is
audited with the number of codes left, and the resulting session is ``Acr.MFA`` with amr
``[pwd, rec]`` — never phishing-resistant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from enum import StrEnum

from sqlalchemy import delete, func, select, update

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.ids import new_id
from fleetward.identity.credential_models import RecoveryCode
from fleetward.identity.login.limits import RECOVERY_COOLDOWN
from fleetward.identity.login.throttle import Throttle
from fleetward.identity.models import User
from fleetward.services import ServiceContext

CODES_PER_BATCH = 10
_CODE = re.compile(r"^[a-z2-7]{16}$")


class RecoveryVerdict(StrEnum):
    ACCEPTED = "accepted"
    BAD_CODE = "bad-recovery-code"
    COOLDOWN = "recovery-cooldown"


def cooldown_key(user_id: str) -> str:
    return f"recovery:cooldown:{user_id}"


def _new_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()  # 80 bits
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


def normalise(code: str) -> str:
    return code.strip().lower().replace("-", "").replace(" ", "")


class RecoveryCodes:
    def __init__(self, ctx: ServiceContext, pepper: bytes) -> None:
        self._ctx = ctx
        self._pepper = pepper

    def _digest(self, user_id: str, normalised: str) -> str:
        message = f"{user_id}:{normalised}".encode("ascii")
        return hmac.new(self._pepper, message, hashlib.sha256).hexdigest()

    async def regenerate(self, user: User, *, actor: Actor) -> list[str]:
        """A new batch; unused old codes stop working. Returns the codes (show them once)."""
        session = self._ctx.session
        # One regeneration per person at a time: the person's row is locked until this
        # transaction ends (PostgreSQL; on SQLite the first write takes the store's write
        # lock). Otherwise two at once each withdraw only what they can see, neither sees the
        # other's uncommitted batch, and both batches stay valid. A second regeneration waits
        # here and then withdraws the first one's codes. (NO KEY: rows that merely refer to
        # the person, such as sessions, are not held up.)
        await session.execute(
            select(User.id).where(User.id == user.id).with_for_update(key_share=True)
        )
        # Used codes stay as history; unused ones are withdrawn.
        await session.execute(
            delete(RecoveryCode).where(
                RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
            )
        )
        now = self._ctx.clock.now()
        codes = [_new_code() for _ in range(CODES_PER_BATCH)]
        for code in codes:
            session.add(
                RecoveryCode(
                    id=new_id("rec"),
                    user_id=user.id,
                    code_hash=self._digest(user.id, normalise(code)),
                    created_at=now,
                    used_at=None,
                )
            )
        self._ctx.audit.record(
            session,
            EventName.RECOVERY_CODES_REGENERATED,
            actor=actor,
            target=Target("user", user.id, user.home_tenant_id),
            details={"count": CODES_PER_BATCH},
        )
        await session.flush()
        return codes

    async def remaining(self, user_id: str) -> int:
        found = await self._ctx.session.scalar(
            select(func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
        )
        return int(found or 0)

    async def use(self, user: User, code: str) -> RecoveryVerdict:
        """Spend one code in place of the second factor (the password was already right)."""
        candidate = normalise(code)
        if not _CODE.fullmatch(candidate):
            return RecoveryVerdict.BAD_CODE
        now = self._ctx.clock.now()
        result = await self._ctx.session.execute(
            update(RecoveryCode)
            .where(
                RecoveryCode.user_id == user.id,
                RecoveryCode.code_hash == self._digest(user.id, candidate),
                RecoveryCode.used_at.is_(None),
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            return RecoveryVerdict.BAD_CODE
        # The cool-down is claimed after the code matched, in the same transaction: if it
        # is taken the caller rolls back, and the code stays unspent.
        if not await Throttle(self._ctx).claim_once(cooldown_key(user.id), RECOVERY_COOLDOWN):
            return RecoveryVerdict.COOLDOWN
        self._ctx.audit.record(
            self._ctx.session,
            EventName.RECOVERY_CODE_USED,
            actor=Actor.user(user.id, user.home_tenant_id),
            target=Target("user", user.id, user.home_tenant_id),
            details={"remaining": await self.remaining(user.id)},
        )
        return RecoveryVerdict.ACCEPTED
