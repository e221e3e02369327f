"""The project's benchmark: fan-out, long-polling, capacity and ingest against a real gunicorn (docs/PERFORMANCE.md)."""
