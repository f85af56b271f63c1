"""Celery workers: a thin adapter from the queue to the engine to the database."""
