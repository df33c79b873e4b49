"""Prefect blocks: saved connections and secrets, referred to by name."""
