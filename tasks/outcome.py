"""How a flow run ends: Completed with its result, or Failed (Cancelled) with the reason.

A run that did all its bookkeeping but fell short (a batch failed or stopped, a retry that left
records failing, ETL batches that did not load) must not look like a success in the UI, to an
automation or to `prefect deployment run --watch`: its flow returns a Failed (or Cancelled)
state whose message says what happened and how to carry on, and whose result is the
`RunNotCompleted` carrying the run's summary (what the CLI prints).
"""

from __future__ import annotations

from typing import Any

from prefect.states import Cancelled, Failed

from batchyard.errors import RunNotCompleted


def final_state(result: dict, problem: RunNotCompleted | None) -> Any:
    """`result` for a run that completed; otherwise a Failed (or Cancelled) state holding
    `problem` (Prefect logs its message as the run's last line)."""
    if problem is None:
        return result
    make = Cancelled if problem.cancelled else Failed
    return make(message=str(problem), data=problem)
