"""Composition root: ``build_app(settings)`` wires the platform, the routers and the checks.

Nothing connects here: the engine connects lazily on first use. The app refuses to start
(at build time and again at start-up) if any route is missing from the catalog.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from fleetward import __version__
from fleetward.abuse.runtime import QuotaRuntime
from fleetward.api import (
    admin,
    alerts,
    appointments,
    bulk_commands,
    cases,
    commands,
    consents,
    dealer,
    devices,
    fleet,
    fleet_groups,
    handovers,
    health,
    history,
    investigate,
    login,
    mobile,
    oauth,
    ota,
    partner,
    problems,
    support,
    tenancy,
    vehicles,
)
from fleetward.api.body_limit import BodyLimitMiddleware
from fleetward.api.middleware import RequestIdentityMiddleware
from fleetward.api.quota_guard import RateLimitHeaders
from fleetward.api.revocation_gate import RevocationGate
from fleetward.api.route_index import install_route_index
from fleetward.audit.operations import BACKGROUND_BATCH, seal_pending
from fleetward.catalog.inventory import inventory
from fleetward.commands.dispatch import Dispatcher
from fleetward.commands.quotas import AbuseCommandQuotas
from fleetward.commands.redis_bus import RedisCommandBus
from fleetward.commands.runtime import CommandRuntime
from fleetward.commands.service import CommandConfig
from fleetward.commands.signing import CommandSigner
from fleetward.core.collector import freeze_start_up_objects
from fleetward.detection.runtime import DetectionRuntime
from fleetward.gateway import websocket as gateway_websocket
from fleetward.gateway.mqtt.config import MqttGatewayConfig
from fleetward.gateway.mqtt.runtime import MqttTransport
from fleetward.gateway.redis_directory import RedisSessionDirectory
from fleetward.gateway.telemetry_link import TelemetryLink
from fleetward.gateway.websocket import Gateway
from fleetward.observability.logging import get_logger
from fleetward.platform import Platform
from fleetward.settings import Settings

_log = get_logger("fleetward.app")

_SURFACE_MODULES = (mobile, fleet, dealer, partner, support, admin)
# Object routes beyond the vehicles themselves (authorization issue), one module per kind.
_OBJECT_MODULES = (
    history,
    appointments,
    handovers,
    consents,
    fleet_groups,
    cases,
    ota,
    tenancy,
    commands,
    bulk_commands,
    alerts,
    investigate,
)


def build_app(settings: Settings, *, platform: Platform | None = None) -> FastAPI:
    the_platform = platform or Platform.build(settings)
    gate = RevocationGate(the_platform)
    telemetry = TelemetryLink(the_platform)
    mqtt: list[MqttTransport] = []  # filled below when a broker is configured
    quota_runtime = QuotaRuntime.build(settings)
    command_runtime: list[CommandRuntime] = []  # filled below once the gateway exists
    detection = DetectionRuntime.build(the_platform, telemetry.pipeline.metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Routes may have been added after build_app: check again before serving anything.
        inventory(app.router.routes)
        install_route_index(app.router.routes)  # again: it indexes the routes there now
        # Revocations outlive restarts; authentication stays closed until they are loaded.
        await gate.try_load()
        watcher = asyncio.create_task(_watch_keys(the_platform))
        telemetry_started = False
        sealer: asyncio.Task[None] | None = None
        if (await the_platform.store_ready())[0]:
            # Vehicles are served only on a migrated store: telemetry needs its tables.
            await telemetry.start()
            telemetry_started = True
            for transport in mqtt:
                await transport.start()
            for runtime in command_runtime:
                await runtime.dispatcher.start()
            # Detection follows the audit log (its cursor table needs the migrated store).
            await detection.start(app.router.routes)
            sealer = asyncio.create_task(_seal_audit_log(the_platform))
        # Refusal floods that stop are summarised too (gateway/refusals.py); the gateway
        # serving is the one on app.state (a test may install its own).
        serving_gateway = gateway_websocket.gateway_of(app)
        refusal_flush = (
            asyncio.create_task(serving_gateway.run_refusal_flush())
            if serving_gateway is not None
            else None
        )
        directory_refresh = (
            asyncio.create_task(serving_gateway.run_directory_refresh())
            if serving_gateway is not None
            else None
        )
        freeze_start_up_objects()
        try:
            yield
        finally:
            watcher.cancel()
            if refusal_flush is not None:
                refusal_flush.cancel()
            if directory_refresh is not None:
                directory_refresh.cancel()
            if sealer is not None:
                sealer.cancel()
            if telemetry_started:
                await detection.stop()
                for runtime in command_runtime:
                    await runtime.dispatcher.stop()
                for transport in mqtt:
                    await transport.stop()
                await telemetry.stop()
            await quota_runtime.close()
            if serving_gateway is not None:
                await serving_gateway.directory.close()
            await the_platform.close()

    app = FastAPI(
        title="Fleetward",
        version=__version__,
        # Framework-provided routes would bypass the catalog; /openapi.json is served by a
        # catalogued route instead, and interactive docs are off.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.platform = the_platform
    app.state.quota_runtime = quota_runtime
    app.state.revocation_gate = gate
    problems.install(app)
    # Outermost last: the request identity wraps everything, then the body cap (before
    # anything reads a body), the RateLimit headers of an allowed request are added to its
    # response inside them.
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_body_bytes)
    app.add_middleware(
        RequestIdentityMiddleware, trusted_proxies=[str(a) for a in settings.trusted_proxies]
    )
    app.include_router(health.router)
    app.include_router(login.router)
    app.include_router(oauth.router)
    for module in _SURFACE_MODULES:
        app.include_router(module.router)
    app.include_router(vehicles.router)
    for objects in _OBJECT_MODULES:
        app.include_router(objects.router)
    app.include_router(devices.router)
    gateway = gateway_websocket.install(
        app, the_platform, handler=telemetry.pipeline, observer=telemetry.observer
    )
    telemetry.attach(gateway.registry)
    if settings.redis_url is not None:
        # Replicas share a Redis: a device's sessions on the others count for the clone
        # rules and the session cap (gateway/directory.py).
        gateway.directory = RedisSessionDirectory.from_url(
            settings.redis_url.get_secret_value(),
            liveness_window=gateway.config.liveness_window,
        )
    mqtt.extend(_mqtt_transport(settings, gateway))
    command_runtime.append(_command_runtime(the_platform, gateway, quota_runtime))
    gateway.commands = command_runtime[0].dispatcher
    app.state.commands = command_runtime[0]
    inventory(app.router.routes)
    install_route_index(app.router.routes)
    app.state.detection = detection
    return app


def _command_runtime(platform: Platform, gateway: Gateway, quotas: QuotaRuntime) -> CommandRuntime:
    """The command service: its signing key (created on first start), the dispatcher that
    delivers through this gateway, and the quotas commands are charged against."""
    signer = CommandSigner.load_or_create(platform.settings, platform.identity.data_key)
    config = CommandConfig()
    settings = platform.settings
    # Replicas share a Redis: jobs queued on one reach a vehicle connected to another at
    # once (commands/bus.py); alone, a process needs no bus.
    bus = (
        RedisCommandBus.from_url(
            settings.redis_url.get_secret_value(), settings.command_bus_channel
        )
        if settings.redis_url is not None
        else None
    )
    return CommandRuntime(
        dispatcher=Dispatcher(platform, gateway.registry, signer, config=config, bus=bus),
        quotas=AbuseCommandQuotas(quotas, platform.clock),
        config=config,
        signer=signer,
    )


def _mqtt_transport(settings: Settings, gateway: Gateway) -> list[MqttTransport]:
    """The MQTT transport when a broker is configured (settings validate the rest)."""
    host = settings.mqtt_broker_host
    ca, cert, key = (
        settings.mqtt_server_ca,
        settings.mqtt_client_certificate,
        settings.mqtt_client_key,
    )
    if host is None or ca is None or cert is None or key is None:
        return []
    config = MqttGatewayConfig(
        host=host,
        port=settings.mqtt_broker_port,
        server_ca=ca,
        certificate=cert,
        key=key,
        client_id=settings.mqtt_client_id,
        crl_file=settings.mqtt_crl_file,
        broker_pid_file=settings.mqtt_broker_pid_file,
    )
    return [MqttTransport(gateway, config)]


KEY_RELOAD_INTERVAL_SECONDS = 15.0


async def _seal_audit_log(platform: Platform) -> None:
    """Extend the audit log's hash chain with what was committed (audit/chain.py): records
    older than the sealer's lag, in order. Replicas may all run it: their batches take turns
    (the sealers' lock, audit/chain.py)."""
    interval = platform.settings.audit_seal_interval_seconds
    while True:
        await asyncio.sleep(interval)
        try:
            await seal_pending(platform, batch=BACKGROUND_BATCH)
        except Exception as exc:  # the next pass seals what this one could not
            _log.warning("audit log not sealed", error_type=type(exc).__name__)


async def _watch_keys(platform: Platform) -> None:
    """Pick up key rotations done on disk by `fleetward keys rotate` or another replica."""
    while True:
        await asyncio.sleep(KEY_RELOAD_INTERVAL_SECONDS)
        try:
            platform.identity.keys_watcher.refresh()
        except Exception as exc:  # keep serving with the keys we have; say why
            _log.error("signing keys not reloaded", error_type=type(exc).__name__)
