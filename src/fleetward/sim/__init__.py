"""The vehicle simulator behind ``fleetward sim``: simulated vehicles (state and VSS signals),
the faults and behaviours they can be told to commit (sleep, offline, flood, garbage...), their
store-and-forward outbox, provisioning of a simulated fleet, the transports that carry their
sessions (the gateway's WebSocket, or the MQTT broker), and the runner that drives many of
them.

It speaks only the public vehicle protocol (``fleetward.gateway.device_client``,
``fleetward.gateway.mqtt.device`` and ``fleetward.telemetry.envelope``); nothing here reaches
into the server's pipeline.
"""
