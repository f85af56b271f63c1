"""The Alembic migration chain, shared by PostgreSQL and SQLite (`dfp db upgrade`)."""
