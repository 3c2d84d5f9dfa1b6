"""Celery worker: loads the active model once per process and turns jobs into records."""
