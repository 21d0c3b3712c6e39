"""Device identity: the platform device CA, provisioning with one-time enrolment tokens, the
credential lifecycle (rotate, suspend, resume, revoke, replace the TCU, decommission,
re-enrol), the admission of a presented certificate at the gateway, and cloned-credential
detection with quarantine.

A device credential names exactly one device and one vehicle; it authenticates a vehicle to
the gateway and can never be granted anything a person or an application holds.
"""
