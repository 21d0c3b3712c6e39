"""Thin Typer commands; each loads settings, builds what it needs and calls services."""
