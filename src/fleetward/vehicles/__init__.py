"""Vehicles and every relationship to them: ownership, driver delegation, fleet membership,
groups and operator assignment, dealer and support cases, partner consents.

History is kept: relationships end (``valid_until``/``revoked_at``), they are never deleted.
"""
