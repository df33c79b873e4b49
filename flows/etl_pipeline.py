"""etl-pipeline: several sources in parallel, transformed and loaded in batches.

check (transform steps against the sources' columns) → extract (one mapped task per source,
each streaming into batch files) → transform each batch → load each batch → report. Tasks pass
references to batch files, so memory holds a few batches whatever the sources' size. As in the
Temporal data pipeline this flow follows, a source that cannot be extracted or a batch that
cannot be transformed fails the whole run before anything is loaded; a batch that still fails
to load after its retries is counted as failed, recorded in the target for a re-run, the other
batches go on, and the run ends Failed once its counts and artifacts are written.

`python flows/etl_pipeline.py [SPEC.yaml]` runs a spec, or by default a local one: the sample
users file (demo/users.csv, written when missing) into a DuckDB file, demo/warehouse.duckdb.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from prefect import flow
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import unmapped

from batchyard.etl.extract import ExtractError
from batchyard.etl.run import Outcome, SourceCounts, TransformError, not_completed, start_run
from batchyard.etl.spec import Source, Target, TransformSpec, WriteDisposition
from batchyard.etl.targets import target_for
from blocks.etl import resolve_target
from tasks.concurrency import submit_bounded
from tasks.etl import (
    check_transforms,
    extract_with_retries,
    finish_run,
    load_with_retries,
    prepare_target,
    transform_with_retries,
)
from tasks.etl_reporting import PhaseProgress, publish_summary, summary
from tasks.outcome import final_state


@flow(name="etl-pipeline", task_runner=ThreadPoolTaskRunner(max_workers=16))
def etl_pipeline(
    pipeline_id: str,
    sources: list[Source],
    target: Target,
    batch_size: int = 10_000,
    write_disposition: WriteDisposition = "append",
    transform: TransformSpec = TransformSpec(),  # noqa: B008 (a pydantic model, never mutated)
    version: str = "1.0",
    max_parallel: int = 4,
):
    """Extract `sources`, transform and load them into `target`; returns the run's counts, or
    a Failed state holding them when some batches did not load."""
    started = time.monotonic()
    check_transforms(sources, transform)
    run = start_run(pipeline_id, sources, target=resolve_target(target), disposition=write_disposition)
    outcome = Outcome({s.id: SourceCounts() for s in sources})
    own = {s.id: s.transform for s in sources}

    progress = PhaseProgress(run, "extract", len(sources), "sources")
    futures = extract_with_retries().map(unmapped(run), sources, unmapped(batch_size))
    wait(futures)
    extracted, errors = [], []
    for source, future in zip(sources, futures, strict=True):
        if future.state.is_completed():
            extracted.append(future.result())
            outcome.sources[source.id].extracted = extracted[-1].rows
            progress.add()
        else:
            error = str(future.state.result(raise_on_failure=False))
            errors.append(error if error.startswith("source ") else f"source {source.id}: {error}")
    if errors:
        shutil.rmtree(run.directory, ignore_errors=True)
        raise ExtractError(f"extract failed, the run stops: {'; '.join(errors)}")

    refs = [ref for result in extracted for ref in result.chunks]
    progress = PhaseProgress(run, "transform", len(refs), "batches")
    transformed, errors = [], []
    for ref, future in submit_bounded(transform_with_retries(), refs, max_parallel, "ref",
                                      stop=lambda: bool(errors), run=run, spec=transform,
                                      version=version, own=own):
        try:
            transformed.append(future.result())
        except Exception as exc:  # retries exhausted: the run stops, nothing is loaded
            errors.append(f"{ref.source_id}#{ref.index}: {type(exc).__name__}: {exc}")
        progress.add()
    if errors:
        shutil.rmtree(run.directory, ignore_errors=True)
        raise TransformError(f"transform failed, the run stops before loading: {'; '.join(errors)}")

    job = prepare_target(run, transformed) if transformed else None
    progress = PhaseProgress(run, "load", len(transformed), "batches")
    for ref, future in submit_bounded(load_with_retries(), transformed, max_parallel, "ref", job=job):
        try:
            outcome.sources[ref.source_id].loaded += future.result()
        except Exception as exc:  # retries exhausted: counted as failed, the others go on
            outcome.failed(ref, f"load: {type(exc).__name__}: {exc}")
        progress.add()

    outcome = finish_run(run, job, extracted, outcome)
    result = summary(run, outcome, time.monotonic() - started, flow_run.get_id())
    publish_summary(result)
    return final_state(result, not_completed(result, target_for(run.target).describe()))


def main(argv: list[str]) -> int:
    """Run a spec (or the local sample pipeline) and say where its records went."""
    from batchyard.demo import write_users
    from batchyard.etl.spec import PipelineSpec, load_spec
    from batchyard.prefect_runtime import run_locally

    if argv:
        spec = load_spec(argv[0])
    else:
        source = Path("demo/users.csv")
        if not source.exists():
            write_users(source, 1_000)
            print(f"wrote a sample of 1,000 users to {source}")
        spec = PipelineSpec(pipeline_id="local-users", write_disposition="replace",
                            sources=[{"type": "file", "id": "users", "path": str(source.resolve())}],
                            target={"type": "warehouse", "path": str(Path("demo/warehouse.duckdb").resolve()),
                                    "table": "users"})
    state, result = run_locally(etl_pipeline, **{n: getattr(spec, n) for n in PipelineSpec.model_fields})
    print(f"pipeline {result['pipeline_id']}: {result['successful_records']:,} of "
          f"{result['total_records']:,} records loaded into {target_for(spec.target).describe()}, "
          f"{result['failed_records']:,} failed")
    return 0 if state.is_completed() else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
