"""The command service as the app holds it: the dispatcher, the quotas, the settings.

Built by the composition root (``build_app``) once the gateway exists; routes reach it with
:func:`commands_of`. Started and stopped by the app's lifespan.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from fleetward.commands.dispatch import Dispatcher
from fleetward.commands.service import CommandConfig, CommandQuotas
from fleetward.commands.signing import CommandSigner


@dataclass(frozen=True, slots=True)
class CommandRuntime:
    dispatcher: Dispatcher
    quotas: CommandQuotas
    config: CommandConfig
    # The key vehicles verify envelopes with (its public half is handed out at enrolment).
    signer: CommandSigner


class CommandsNotInstalled(RuntimeError):
    """A command route on an app without the command service: a wiring error."""


def commands_of(app: FastAPI) -> CommandRuntime:
    runtime = getattr(app.state, "commands", None)
    if not isinstance(runtime, CommandRuntime):
        raise CommandsNotInstalled("the command service is not installed")
    return runtime
