"""Device errors. Each owns its problem code; ``reason`` is a stable code from the docstring."""

from __future__ import annotations

from fleetward.core.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated


class DeviceNotFound(NotFound):
    code = "device-not-found"
    title = "Device not found"


class CaseNotFound(NotFound):
    """A dealer case that does not exist or that the caller may not act on (the same answer)."""

    code = "case-not-found"
    title = "Case not found"


class CsrRefused(InvalidInput):
    """reason: malformed, signature, key-type, subject, san, ca-request, extension,
    attribute, key-reused."""

    code = "csr-refused"
    title = "Certificate signing request refused"


class EnrolmentTokenInvalid(Unauthenticated):
    """reason: malformed, unknown, used, cancelled, expired, case-closed."""

    code = "enrolment-token-invalid"
    title = "Enrolment token not valid"


class VehicleHasDevice(Conflict):
    """The vehicle already has a live device identity (only one is ever allowed)."""

    code = "vehicle-has-device"
    title = "Vehicle already has a device"


class TransitionRefused(Conflict):
    """The device's status does not allow the operation; ``reason`` is the current status."""

    code = "device-transition-refused"
    title = "Device transition refused"


class ReplacementRefused(Forbidden):
    """reason: case-not-open, wrong-vehicle, not-assigned, not-technician."""

    code = "tcu-replacement-refused"
    title = "TCU replacement refused"


class NotPlatformAdmin(Forbidden):
    """reason: not-a-person, role."""

    code = "platform-admin-required"
    title = "Platform administrator required"


class InvalidLifetime(InvalidInput):
    code = "invalid-lifetime"
    title = "Invalid lifetime"
