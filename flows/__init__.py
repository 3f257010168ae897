"""Prefect flows and deployments of the pipeline."""
