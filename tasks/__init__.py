"""Thin Prefect tasks around the plain functions in `batchyard`."""
