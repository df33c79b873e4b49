"""Environment settings (the middle layer between blocks and flow parameters).

Every `BATCHYARD_*` variable is read here and nowhere else, each time `get_settings()` (or one of
the light readers below) is called, so a test or a worker can change one without restarting
anything. pydantic is imported on the first `get_settings()`: the CLI reads the local-server
settings before anything heavy is imported, to start or find the server at once.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from batchyard.errors import ConfigurationError

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings as BatchyardSettings


def get_settings() -> BatchyardSettings:
    return _settings_class()()


@functools.cache
def _settings_class() -> type:
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
            900.0, ge=0,
            description="Seconds a chunk task may take before it fails TIMEOUT_ERROR (0: no limit).")
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
        max_record_bytes: int = Field(
            64 << 20, ge=1024,
            description="Longest JSON Lines line read; a longer one refuses the file (not memory).")
        xlsx_max_bytes: int = Field(
            2 << 30, ge=1 << 20,
            description="Largest uncompressed size of an .xlsx file's parts (a ZIP bomb is refused).")
        pause_at: str | None = Field(
            None, description="NAME:N: pause the N-th time a run reaches pause point NAME (crash tests)."
        )
        pause_file: str | None = Field(
            None, description="The marker file a paused run writes and waits on until it is deleted."
        )
        drift_threshold: float = Field(
            0.01, ge=0, le=1,
            description="Share of sampled records whose values break a table's contract above "
                        "which `--schema infer` stops the import as drift (fewer are rejects).")
        work_dir: Path = Field(
            Path.home() / ".cache" / "batchyard",
            description="Where sources are spooled into chunk files while a batch runs; shared "
                        "storage at the same path wherever Dask workers run chunk tasks.",
        )

    return BatchyardSettings


def chunk_retry_delays(settings: BatchyardSettings) -> tuple[float, ...]:
    """`BATCHYARD_RETRY_DELAYS` capped at 10 s: the waits between a chunk's attempts, and
    between those of any ledger write that must not simply fail its task."""
    return tuple(min(d, 10.0) for d in settings.retry_delays)


def pause_settings() -> tuple[str | None, str | None]:
    """`pause_at` and `pause_file` alone, without building the settings (0.4 ms): pause points
    sit inside chunk commits, on the writers' critical path."""
    return os.environ.get("BATCHYARD_PAUSE_AT") or None, os.environ.get("BATCHYARD_PAUSE_FILE") or None


LOCAL_SERVER_MODES = ("start", "use", "off")


class LocalServerSettings(NamedTuple):
    """The local Prefect server batchyard manages (batchyard/local_server.py).

    mode (`BATCHYARD_LOCAL_SERVER`): `start` (default): flow commands use the local server
        and start it when it is not running; `use`: only when it is running; `off`: never
        (a temporary server per command, Prefect's ephemeral mode).
    port (`BATCHYARD_SERVER_PORT`, 4200): where it listens on 127.0.0.1 (a free port when
        this one is taken).
    idle_timeout (`BATCHYARD_SERVER_IDLE_TIMEOUT`, 3600): seconds without a batchyard command
        using it after which it stops by itself.
    start_timeout (`BATCHYARD_SERVER_START_TIMEOUT`, 120): seconds a command waits for it to
        answer after starting it."""

    mode: str
    port: int
    idle_timeout: float
    start_timeout: float


def local_server_settings() -> LocalServerSettings:
    """Read the local-server settings (no pydantic: the CLI reads them first thing).

    Raises:
        ConfigurationError: a value that is not one of its kind, naming the variable."""
    mode = os.environ.get("BATCHYARD_LOCAL_SERVER", "start").strip().lower() or "start"
    if mode not in LOCAL_SERVER_MODES:
        raise ConfigurationError(f"BATCHYARD_LOCAL_SERVER must be one of {', '.join(LOCAL_SERVER_MODES)}, "
                                 f"not {mode!r}")
    port = _number("BATCHYARD_SERVER_PORT", 4200, int)
    if not 0 < port < 65536:
        raise ConfigurationError(f"BATCHYARD_SERVER_PORT must be a port number, not {port}")
    return LocalServerSettings(mode, port, _number("BATCHYARD_SERVER_IDLE_TIMEOUT", 3600.0, float),
                               _number("BATCHYARD_SERVER_START_TIMEOUT", 120.0, float))


def _number(name: str, default, kind):
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {text!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be positive, not {text!r}")
    return value
