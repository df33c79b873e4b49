"""Spooling a new batch's source while the command is still loading Prefect.

A command spends its first second or more importing Prefect and creating the flow run, with
one core mostly idle; reading the source into chunk files takes about as long and needs no
Prefect (pyarrow's reader does most of it without the GIL). So `batchyard import` starts the
spool of a new batch in a thread right after its checks (`start`), and the flow's plan step
takes its chunks (`take`) as they are cut instead of reading the file again. Only a batch
with no recorded chunks qualifies (a resumed one must replay its recorded boundaries) and
only fixed chunk sizes (`auto` sizes each chunk from the load at the moment it is cut).
"""

from __future__ import annotations

import atexit
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from batchyard.chunks import ChunkRef
from batchyard.ingest.job import ImportJob
from batchyard.ingest.spool import SourcePlan, iter_spool, remove_spool, spool_dir
from batchyard.readers import SourceOptions
from batchyard.schemas import load_schema
from batchyard.settings import get_settings
from batchyard.sizing import chunk_sizes

_lock = threading.Lock()
_END = object()


@dataclass
class _Spool:
    key: tuple
    cut: queue.Queue = field(default_factory=queue.Queue)  # chunk refs, then _END or an error
    result: SourcePlan = field(default_factory=lambda: SourcePlan([], [], 0))
    done: threading.Event = field(default_factory=threading.Event)
    halted: threading.Event = field(default_factory=threading.Event)

    def chunks(self, into: SourcePlan) -> Iterator[ChunkRef]:
        """The chunks as they are cut; `into` takes the spool's totals and warnings at the end.
        Raises what the spool raised (a SourceError), after the chunks cut before it."""
        try:
            while (item := self.cut.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:  # a taker that stops early stops the spool: nothing writes into it after
            self.halted.set()
            self.done.wait()
        for name in ("columns", "chunks", "total", "extra_columns", "warnings"):
            setattr(into, name, getattr(self.result, name))


_started: dict[str, _Spool] = {}


def _key(job: ImportJob, options: SourceOptions, chunk_size: int) -> tuple:
    return job.source, job.schema_name, options.model_dump_json(), chunk_size


def start(job: ImportJob, options: SourceOptions, chunk_size: int) -> None:
    """Begin spooling `job`'s source into its spool directory in a thread of this process."""
    plan = load_schema(job.schema_name)
    sizes = chunk_sizes(chunk_size, get_settings().auto_chunk_sizes)
    spool = _Spool(_key(job, options, chunk_size))

    def run() -> None:
        try:
            for ref in iter_spool(job.source, options, plan, spool_dir(job.batch_id), sizes,
                                  spool.result):
                spool.cut.put(ref)
                if spool.halted.is_set():
                    return
            spool.cut.put(_END)
        except BaseException as exc:  # handed to whoever takes it, as the spool would raise it
            spool.cut.put(exc)
        finally:
            spool.done.set()

    with _lock:
        if job.batch_id in _started:
            return
        _started[job.batch_id] = spool
    threading.Thread(target=run, name=f"early-spool-{job.batch_id}", daemon=True).start()
    atexit.register(discard, job.batch_id)


def take(job: ImportJob, options: SourceOptions, chunk_size, into: SourcePlan,
         ) -> Iterator[ChunkRef] | None:
    """The chunks of this batch's early spool, as they are cut, if it was started with the
    same source, schema, options and chunk size; else None (after waiting for a mismatched
    one to stop writing into the spool directory). `into` is filled in as `iter_spool` fills
    its result, once the chunks are all taken."""
    with _lock:
        found = _started.pop(job.batch_id, None)
    if found is None:
        return None
    if chunk_size == "auto" or found.key != _key(job, options, chunk_size):
        found.done.wait()
        return None
    return found.chunks(into)


def discard(batch_id: str) -> None:
    """An early spool nobody took (the command failed before its flow ran): wait for it and
    remove its chunk files."""
    with _lock:
        found = _started.pop(batch_id, None)
    if found is not None:
        found.done.wait()
        remove_spool(batch_id)
