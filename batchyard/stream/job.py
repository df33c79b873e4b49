"""The parameters of a streaming-window job, validated before anything connects."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pydantic import BaseModel, Field, field_validator


class StreamJob(BaseModel):
    """One stream job: its name keys the watermark, the consumer group and the stop signal, so
    two deployments of the same job share their progress."""

    name: str = Field("events", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    source_url: str = "sqlite:///stream.db"  # redis://host:port/db, sqlite:///..., postgresql://...
    source: str = "events"  # the Redis stream key or the events table
    target_url: str = "sqlite:///stream.db"
    target: str = "stream_results"  # the Redis stream key or the results table
    window_seconds: int = Field(60, gt=0, le=7 * 24 * 3600)
    allowed_lateness_seconds: int = Field(0, ge=0)
    max_windows: int = Field(1000, ge=1)  # then the run ends; the next run carries on
    loop: bool = False  # wait for windows to come due instead of ending when none is
    function: str | None = None  # module:function applied to each window's rows
    # where a job's first run starts: the window of its source's earliest event, the window
    # its scheduled start owes (latest), or the window of a timestamp (ISO 8601 or epoch ms)
    start_from: str = "earliest"

    @field_validator("start_from")
    @classmethod
    def _start(cls, value: str) -> str:
        start_ms(value)
        return value

    @field_validator("source", "target")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_:.-]{0,127}", value):
            raise ValueError(f"not a stream or table name: {value!r}")
        return value

    @field_validator("function")
    @classmethod
    def _module_function(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.]+:\w+", value):
            raise ValueError(f"function must be module:function, got {value!r}")
        return value

    @property
    def size_ms(self) -> int:
        return self.window_seconds * 1000

    @property
    def lateness_ms(self) -> int:
        return self.allowed_lateness_seconds * 1000

    @property
    def stop_variable(self) -> str:
        return stop_variable(self.name)


def start_ms(start_from: str) -> int | None:
    """The epoch milliseconds of a `start_from` timestamp; None for `earliest` and `latest`.

    Raises ValueError for anything else."""
    if start_from in ("earliest", "latest"):
        return None
    if start_from.isdigit():
        return int(start_from)
    try:
        moment = datetime.fromisoformat(start_from.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"start_from must be earliest, latest, an ISO 8601 timestamp or epoch "
                         f"milliseconds, not {start_from!r}") from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def stop_variable(name: str) -> str:
    """Prefect Variable names take lower-case letters, digits and underscores."""
    return "batchyard_stream_stop_" + re.sub(r"[^a-z0-9_]", "_", name.lower())
