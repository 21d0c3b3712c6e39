"""Fleetward: a secure-by-default backend for connected vehicles."""

__version__ = "0.1.0"
