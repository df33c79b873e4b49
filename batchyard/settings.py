"""Environment settings (the middle layer between blocks and flow parameters)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BatchyardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHYARD_", extra="ignore")

    max_parallel: int = Field(10, ge=1, description="Chunk tasks in flight at once.")
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
    work_dir: Path = Field(
        Path.home() / ".cache" / "batchyard",
        description="Where sources are spooled into chunk files while a batch runs; shared "
                    "storage at the same path wherever Dask workers run chunk tasks.",
    )


def get_settings() -> BatchyardSettings:
    return BatchyardSettings()
