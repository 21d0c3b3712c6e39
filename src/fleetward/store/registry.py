"""Imports every model module so that ``metadata`` describes the whole schema."""

from __future__ import annotations

from fleetward.audit import alerts as _alert_models  # noqa: F401
from fleetward.audit import gaps as _audit_gap_models  # noqa: F401
from fleetward.audit import models as _audit_models  # noqa: F401
from fleetward.commands import models as _command_models  # noqa: F401
from fleetward.detection import cursor as _detection_models  # noqa: F401
from fleetward.devices import models as _device_models  # noqa: F401
from fleetward.identity import credential_models as _credential_models  # noqa: F401
from fleetward.identity import models as _identity_models  # noqa: F401
from fleetward.identity import oauth_models as _oauth_models  # noqa: F401
from fleetward.identity.oauth import models as _oauth_server_models  # noqa: F401
from fleetward.ota import models as _ota_models  # noqa: F401
from fleetward.store.base import Base
from fleetward.telemetry import models as _telemetry_models  # noqa: F401
from fleetward.vehicles import handover_models as _handover_models  # noqa: F401
from fleetward.vehicles import models as _vehicle_models  # noqa: F401
from fleetward.vehicles import records as _record_models  # noqa: F401

metadata = Base.metadata
