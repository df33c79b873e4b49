"""Tumbling-window stream processing, without Prefect: windows, sources, aggregation, sinks."""
