"""Persistence: SQLAlchemy models, the database handle and the unit of work."""
