"""The store: SQLAlchemy 2 (async) on SQLite (embedded default, WAL) or PostgreSQL (asyncpg).

Owns the engine, the declarative base, the unit of work and the Alembic migrations. Nothing
connects at import time; the composition root creates the engine.
"""
