"""Interactive authentication for people: the login pages' logic.

Owns password login, second factors (TOTP, WebAuthn, recovery codes), the pending state
between the password and the second factor, CSRF for the pages, and the failure counters
that stop brute force and credential stuffing. Sessions themselves belong to
``fleetward.identity.sessions``; the HTTP routes live in ``fleetward.api.login``.
"""
