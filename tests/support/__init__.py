"""Test support: factories per domain."""
