"""Progress and result artifacts of an ETL run (what users watch in the Prefect UI)."""

from __future__ import annotations

import re

from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.logging import get_run_logger

from batchyard.etl.run import EtlRun, Outcome


def artifact_key(pipeline_id: str, suffix: str) -> str:
    """Artifact keys allow lower-case letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"etl-{pipeline_id}-{suffix}".lower()).strip("-")


class PhaseProgress:
    """One progress artifact per phase (extract, transform, load), updated as work finishes."""

    def __init__(self, run: EtlRun, phase: str, total: int, unit: str):
        self.run, self.phase, self.total, self.unit = run, phase, total, unit
        self.done = 0
        self.logger = get_run_logger()
        self.artifact_id = create_progress_artifact(
            progress=self.percent, key=artifact_key(run.pipeline_id, phase), description=self.description)

    @property
    def percent(self) -> float:
        return round(100.0 * self.done / self.total, 2) if self.total else 100.0

    @property
    def description(self) -> str:
        return f"{self.run.pipeline_id} {self.phase}: {self.done:,} of {self.total:,} {self.unit}"

    def add(self, count: int = 1) -> None:
        self.done += count
        update_progress_artifact(self.artifact_id, progress=self.percent, description=self.description)
        self.logger.info("%s", self.description)


def summary(run: EtlRun, outcome: Outcome, duration: float, flow_run_id: str | None) -> dict:
    """The flow's result: the output of the Temporal data pipeline this flow follows, plus
    counts per source."""
    return {
        "pipeline_id": run.pipeline_id,
        "run_id": run.run_id,
        "total_records": outcome.total,
        "successful_records": outcome.successful,
        "failed_records": outcome.failed_rows,
        "duration_seconds": round(duration, 3),
        "sources": {s: {"extracted": c.extracted, "loaded": c.loaded, "failed": c.failed}
                    for s, c in outcome.sources.items()},
        "failed_batches": [f"{f.source_id}#{f.batch_index}: {f.error}" for f in outcome.failed_batches],
        "replaced": outcome.visible if run.disposition == "replace" else None,
        "flow_run_id": flow_run_id,
    }


def publish_summary(result: dict) -> None:
    rows = [{"source": s, **c} for s, c in result["sources"].items()]
    rows.append({"source": "(all)", "extracted": result["total_records"],
                 "loaded": result["successful_records"], "failed": result["failed_records"]})
    create_table_artifact(
        table=rows, key=artifact_key(result["pipeline_id"], "counts"),
        description=(f"Pipeline {result['pipeline_id']}: {result['total_records']:,} records, "
                     f"{result['successful_records']:,} loaded, {result['failed_records']:,} failed "
                     f"in {result['duration_seconds']} s"),
    )
    logger = get_run_logger()
    for failure in result["failed_batches"]:
        logger.error("batch failed after its retries: %s", failure)
