"""Environment settings (the middle layer between blocks and flow parameters).

Every `BATCHYARD_*` variable is read here and nowhere else, each time `get_settings()` is called,
so a test or a worker can change one without restarting anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BatchyardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHYARD_", extra="ignore")

    chunk_retries: int = Field(2, ge=0, description="Retries of a chunk task after a transient fault.")
    retry_delays: list[float] = Field(
        [1.0, 2.0, 4.0, 8.0, 10.0], description="Seconds between chunk retries (capped at 10 s)."
    )
    auto_chunk_sizes: tuple[int, int, int] = Field(
        (10_000, 50_000, 100_000), description="Minimum, middle and maximum for --chunk-size auto."
    )
    work_slots: int | None = Field(
        None, ge=1, description="Chunks doing CPU work at once in one process (default: cores)."
    )
    sqlite_busy_timeout: float = Field(60.0, description="Seconds a writer waits for SQLite's lock.")
    pg_lock_timeout: float = Field(
        60.0, ge=0, description="Seconds a PostgreSQL statement waits for a lock (0: no limit).")
    pg_statement_timeout: float = Field(
        600.0, ge=0, description="Seconds a PostgreSQL statement may run (0: no limit).")
    http_timeout: float = Field(30.0, gt=0, description="Seconds per HTTP request of an ETL api source.")
    redis_timeout: float = Field(30.0, gt=0, description="Seconds a Redis command may take.")
    chunk_timeout: float = Field(
        900.0, ge=0, description="Seconds a chunk task may take before it fails TIMEOUT_ERROR (0: no limit).")
    etl_extract_timeout: float = Field(
        3600.0, ge=0, description="Seconds an ETL extract task may take (0: no limit).")
    etl_transform_timeout: float = Field(
        900.0, ge=0, description="Seconds an ETL transform task may take (0: no limit).")
    etl_load_timeout: float = Field(
        900.0, ge=0, description="Seconds an ETL load task may take (0: no limit).")
    etl_retry_scale: float = Field(
        1.0, ge=0, description="Factor on the ETL transform and load retry delays (tests shorten them)."
    )
    etl_keep_files: bool = Field(
        False, description="Keep an ETL run's batch files even when every batch loaded."
    )
    pause_at: str | None = Field(
        None, description="NAME:N: pause the N-th time a run reaches pause point NAME (crash tests)."
    )
    pause_file: str | None = Field(
        None, description="The marker file a paused run writes and waits on until it is deleted."
    )
    work_dir: Path = Field(
        Path.home() / ".cache" / "batchyard",
        description="Where sources are spooled into chunk files while a batch runs; shared "
                    "storage at the same path wherever Dask workers run chunk tasks.",
    )


def get_settings() -> BatchyardSettings:
    return BatchyardSettings()


def pause_settings() -> tuple[str | None, str | None]:
    """`pause_at` and `pause_file` alone, without building the settings (0.4 ms): pause points
    sit inside chunk commits, on the writers' critical path."""
    return os.environ.get("BATCHYARD_PAUSE_AT") or None, os.environ.get("BATCHYARD_PAUSE_FILE") or None
