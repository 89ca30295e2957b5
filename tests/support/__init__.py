"""Test harness: real Redis, a real results database and real Celery worker processes."""
