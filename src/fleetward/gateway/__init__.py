"""The vehicle gateway: authenticated device sessions over WebSocket (embedded) and MQTT 5
(at scale). Identity comes only from the authenticated session, never from a payload field.
"""
