"""Telemetry: Prometheus metrics (metrics.py), JSON logs with redaction (logging.py), and the hooks the
runtime calls (hooks.py: no-ops unless the composition root hands in a `Metrics`)."""
