"""Running flows from the CLI, in ephemeral mode or against a server."""

from __future__ import annotations


def run_flow_cleanly(flow, parameters: dict):
    return flow(**parameters, return_state=True)
