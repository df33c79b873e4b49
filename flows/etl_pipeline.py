"""etl-pipeline: several sources in parallel, transformed and loaded in batches.

extract (one mapped task per source, each streaming into batch files) → transform each batch →
load each batch → report. Tasks pass references to batch files, so memory holds a few batches
whatever the sources' size. As in the Temporal data pipeline this flow follows, a source that
cannot be extracted fails the whole run; a batch that still fails to load after its retries is
counted as failed, recorded in the target for a re-run, and the other batches go on.
"""

from __future__ import annotations

import shutil
import time

from prefect import flow
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import unmapped

from batchyard.etl.extract import ExtractError
from batchyard.etl.run import Outcome, SourceCounts, start_run
from batchyard.etl.spec import Source, Target, TransformSpec, WriteDisposition
from blocks.etl import resolve_target
from tasks.concurrency import submit_bounded
from tasks.etl import extract_source, finish_run, load_with_retries, prepare_target, transform_with_retries
from tasks.etl_reporting import PhaseProgress, publish_summary, summary


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
) -> dict:
    """Extract `sources`, transform and load them into `target`; returns the run's counts."""
    started = time.monotonic()
    run = start_run(pipeline_id, sources, target=resolve_target(target), disposition=write_disposition)
    outcome = Outcome({s.id: SourceCounts() for s in sources})

    progress = PhaseProgress(run, "extract", len(sources), "sources")
    futures = extract_source.map(unmapped(run), sources, unmapped(batch_size))
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
    transformed = []
    for ref, future in submit_bounded(transform_with_retries(), refs, max_parallel, "ref", run=run,
                                      spec=transform, version=version):
        try:
            transformed.append(future.result())
        except Exception as exc:  # retries exhausted: counted as failed, the others go on
            outcome.failed(ref, f"transform: {type(exc).__name__}: {exc}")
        progress.add()

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
    return result
