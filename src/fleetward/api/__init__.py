"""HTTP surfaces: one router module per audience, plus infrastructure routes.

Every route is catalogued (``fleetward.catalog``); errors are RFC 9457 problems.
"""
