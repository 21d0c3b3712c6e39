"""The demo world: tenants, people, vehicles and relationships that exercise every policy row.

Seeded by ``make run`` (``fleetward demo``) and reused by tests. Passwords are generated at
seed time and written only to ``demo-credentials.json`` (mode 0600) in the data directory.
"""
