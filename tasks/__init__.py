"""Prefect tasks: each runs one DVC stage and publishes what it produced as artifacts."""
