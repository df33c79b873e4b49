"""`batchyard etl PIPELINE.yaml`: run the etl-pipeline flow from a YAML or JSON spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from batchyard.cli.common import EXIT_ERROR, EXIT_NOT_COMPLETED, fail, run_flow
from batchyard.errors import BatchyardError


def register(app: typer.Typer) -> None:
    """Add `etl` to `app`."""
    app.command("etl")(etl)


def etl(
    spec_file: Annotated[Path, typer.Argument(help="Pipeline spec (YAML or JSON).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Run an ETL pipeline: extract its sources in parallel, transform and load in batches.

    Exit status: 0 when every record loaded, 3 when some batches failed (recorded in the
    target for a re-run), 1 when the run could not go on (a bad spec, a source that failed to
    extract, a batch that failed to transform)."""
    from batchyard.errors import RunNotCompleted
    from batchyard.etl.spec import PipelineSpec, load_spec

    try:
        spec = load_spec(spec_file)
    except BatchyardError as exc:
        fail(str(exc))
    from flows.etl_pipeline import etl_pipeline

    state = run_flow(etl_pipeline, **{name: getattr(spec, name) for name in PipelineSpec.model_fields})
    result = state.result(raise_on_failure=False) if not state.is_completed() else state.result()
    if isinstance(result, RunNotCompleted):  # some batches did not load: counts, then exit 3
        result = result.summary
    elif not state.is_completed():
        fail(str(result) if isinstance(result, BaseException) else (state.message or state.name), EXIT_ERROR)
    if as_json:
        typer.echo(json.dumps(result, default=str))
    else:
        typer.echo(f"pipeline {result['pipeline_id']}: {result['total_records']:,} records, "
                   f"{result['successful_records']:,} loaded, {result['failed_records']:,} failed "
                   f"in {result['duration_seconds']:.2f} s")
        for source, c in result["sources"].items():
            typer.echo(f"  {source}: {c['extracted']:,} extracted, {c['loaded']:,} loaded, "
                       f"{c['failed']:,} failed")
        for failure in result["failed_batches"]:
            typer.echo(f"  failed batch {failure}")
    if result["failed_records"] or not state.is_completed():
        raise typer.Exit(EXIT_NOT_COMPLETED)
