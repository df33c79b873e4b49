"""Prefect flows: one per file, each also a deployment in prefect.yaml."""
