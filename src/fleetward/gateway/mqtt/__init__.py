"""The MQTT 5 transport of the vehicle gateway: devices talk to a Mosquitto broker that
authenticates them by their platform certificate and confines each to its own topics; the
gateway consumes those topics with aiomqtt and feeds the same session registry and telemetry
pipeline as the WebSocket transport.

Modules: :mod:`.topics` (the topic tree), :mod:`.broker` (mosquitto.conf and ACL rendering),
:mod:`.pki` (the service CA for the gateway's and the broker's own certificates),
:mod:`.control` (session control messages), :mod:`.config` (:class:`MqttGatewayConfig`),
:mod:`.handshakes` (the handshake over MQTT), :mod:`.sessions` (one MQTT device session),
:mod:`.consumer` (the gateway's client), :mod:`.crl_publisher` (revocations to the broker),
:mod:`.runtime` (all of it for the app's lifespan) and :mod:`.device` (the device side).
``docs/mqtt.md`` is the normative description.
"""
