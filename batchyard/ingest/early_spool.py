"""Spooling a new batch's source while the command is still loading Prefect.

A command spends its first second or more importing Prefect and creating the flow run, with
one core mostly idle; reading the source into chunk files takes about as long and needs no
Prefect (pyarrow's reader does most of it without the GIL). So `batchyard import` starts the
spool of a new batch in a thread right after its checks (`start`), and the flow's plan step
takes the result (`take`) instead of reading the file again. Only a batch with no recorded
chunks qualifies (a resumed one must replay its recorded boundaries) and only fixed chunk
sizes (`auto` sizes each chunk from the load at the moment it is cut).
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from concurrent.futures import Future

from batchyard.ingest.job import ImportJob
from batchyard.ingest.spool import SourcePlan, remove_spool, spool_dir, spool_source
from batchyard.readers import SourceOptions
from batchyard.schemas import load_schema
from batchyard.settings import get_settings
from batchyard.sizing import chunk_sizes

_lock = threading.Lock()
_started: dict[str, tuple[Future, tuple]] = {}


def _key(job: ImportJob, options: SourceOptions, chunk_size: int) -> tuple:
    return job.source, job.schema_name, options.model_dump_json(), chunk_size


def start(job: ImportJob, options: SourceOptions, chunk_size: int) -> None:
    """Begin spooling `job`'s source into its spool directory in a thread of this process."""
    plan = load_schema(job.schema_name)
    sizes = chunk_sizes(chunk_size, get_settings().auto_chunk_sizes)
    future: Future = Future()

    def spool() -> None:
        try:
            future.set_result(spool_source(job.source, options, plan, spool_dir(job.batch_id), sizes))
        except BaseException as exc:  # handed to whoever takes it, as the spool would raise it
            future.set_exception(exc)

    with _lock:
        if job.batch_id in _started:
            return
        _started[job.batch_id] = (future, _key(job, options, chunk_size))
    threading.Thread(target=spool, name=f"early-spool-{job.batch_id}", daemon=True).start()
    atexit.register(discard, job.batch_id)


def take(job: ImportJob, options: SourceOptions, chunk_size) -> SourcePlan | None:
    """The early spool of this batch, once finished, if it was started with the same source,
    schema, options and chunk size; else None (after waiting for a mismatched one to stop
    writing into the spool directory). Raises what the spool raised (a SourceError)."""
    with _lock:
        found = _started.pop(job.batch_id, None)
    if found is None:
        return None
    future, key = found
    if chunk_size == "auto" or key != _key(job, options, chunk_size):
        with contextlib.suppress(BaseException):
            future.result()
        return None
    return future.result()


def discard(batch_id: str) -> None:
    """An early spool nobody took (the command failed before its flow ran): wait for it and
    remove its chunk files."""
    with _lock:
        found = _started.pop(batch_id, None)
    if found is not None:
        with contextlib.suppress(BaseException):
            found[0].result()
        remove_spool(batch_id)
