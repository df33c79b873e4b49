"""The parameters of an ETL pipeline, as pydantic models.

They are the flow's parameters (so Prefect's UI renders a form), the content of a
`batchyard etl PIPELINE.yaml` spec, and deployment parameters, all three the same shape. No model
holds a secret value: credentials are named (an environment variable, a Prefect block), and
resolved only where they are used, so a spec can be logged, stored and shown as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from batchyard.errors import ConfigurationError
from batchyard.identifiers import check_identifier

WriteDisposition = Literal["append", "replace", "merge"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TransformSpec(_Model):
    """Pure, batch-wise changes to every record before loading: a pipeline's (for every source)
    or one source's own (applied first)."""

    rename: dict[str, str] = Field(default_factory=dict, description="Old column name → new name.")
    drop: list[str] = Field(default_factory=list, description="Columns not loaded.")
    strip_strings: bool = Field(True, description="Trim spaces around text values.")
    function: str | None = Field(
        None, description="module:function taking and returning a pyarrow Table, run last."
    )


class _Source(_Model):
    id: str = Field(description="Source id, carried by every record as _source_id.")
    transform: TransformSpec | None = Field(
        None, description="This source's own transform steps, applied before the pipeline's.")


class DatabaseSource(_Source):
    """Rows of a table or a query of any SQLAlchemy database, read in batches."""

    type: Literal["database"] = "database"
    url: str = Field(description="SQLAlchemy URL, or block:NAME for a saved SqlAlchemyConnector.")
    table: str | None = Field(None, description="Table to read (or give a query).")
    query: str | None = Field(None, description="SELECT to read instead of a table.")
    cursor_column: str | None = Field(
        None, description="Incremental cursor (e.g. updated_at or id): only newer rows are read."
    )

    @model_validator(mode="after")
    def _table_or_query(self) -> DatabaseSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of table and query")
        if self.table:
            check_identifier(self.table)
        if self.cursor_column:
            check_identifier(self.cursor_column, "cursor column")
        return self


class Pagination(_Model):
    """How the API splits its records into pages."""

    style: Literal["none", "page", "offset", "cursor", "link"] = Field(
        "none", description="page number, offset/limit, a cursor in the body, or the Link header."
    )
    page_param: str = Field("page", description="Query parameter of the page number (page).")
    first_page: int = Field(1, description="Number of the first page (page).")
    offset_param: str = Field("offset", description="Query parameter of the offset (offset).")
    limit_param: str = Field("limit", description="Query parameter of the page size (offset, page).")
    page_size: int = Field(100, ge=1, description="Records asked for per page.")
    cursor_param: str = Field("cursor", description="Query parameter that carries the cursor (cursor).")
    cursor_path: str = Field("next_cursor", description="Dotted path of the next cursor in the body.")


class ApiSource(_Source):
    """An HTTP JSON API read page by page."""

    type: Literal["api"] = "api"
    url: str | None = Field(None, description="First page URL (or from the block).")
    block: str | None = Field(None, description="Name of a saved HttpApiSource block.")
    records_path: str | None = Field(
        None, description="Dotted path of the record list in the body; default: the body is the list."
    )
    params: dict[str, str] = Field(default_factory=dict, description="Extra query parameters.")
    pagination: Pagination = Field(default_factory=Pagination)
    auth_header: str = Field("Authorization", description="Header that carries the credential.")
    auth_env: str | None = Field(None, description="Environment variable holding the header value.")
    auth_secret: str | None = Field(None, description="Name of a Prefect Secret block with the value.")
    timeout: float | None = Field(
        None, gt=0, description="Seconds per request; default: BATCHYARD_HTTP_TIMEOUT (30 s).")
    max_retries: int = Field(5, ge=0, description="Retries of a request answered 429 or 5xx.")
    backoff: float = Field(1.0, ge=0, description="First backoff in seconds when no Retry-After.")
    max_pages: int | None = Field(None, ge=1, description="Stop after this many pages.")

    @model_validator(mode="after")
    def _url_or_block(self) -> ApiSource:
        if not self.url and not self.block:
            raise ValueError("give url or block")
        return self


class FileSource(_Source):
    """CSV, JSON Lines or Parquet files: one path or a glob."""

    type: Literal["file"] = "file"
    path: str = Field(description="A file, or a glob such as data/*.parquet.")
    format: Literal["csv", "jsonl", "parquet", "xlsx"] | None = Field(
        None, description="Default: from the extension."
    )
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV delimiter.")


Source = Annotated[DatabaseSource | ApiSource | FileSource, Field(discriminator="type")]


class _TableTarget(_Model):
    can_merge: ClassVar[bool] = True
    table: str = Field(description="Target table, created from the data when missing.")
    primary_key: list[str] = Field(default_factory=list, description="Key columns (needed by merge).")


class DatabaseTarget(_TableTarget):
    """A table of a SQL database: SQLite (the default) or PostgreSQL."""

    type: Literal["database"] = "database"
    url: str = Field("sqlite:///batchyard.db", description="SQLAlchemy URL or block:NAME.")


class WarehouseTarget(_TableTarget):
    """A table of a DuckDB file, the embedded warehouse."""

    type: Literal["warehouse"] = "warehouse"
    path: str = Field("warehouse.duckdb", description="DuckDB database file.")


class FileTarget(_Model):
    """A directory of Parquet or CSV files, partitioned by a column if asked."""

    can_merge: ClassVar[bool] = False
    type: Literal["file"] = "file"
    path: str = Field(description="Output directory.")
    format: Literal["parquet", "csv"] = "parquet"
    partition_by: str | None = Field(None, description="Column whose values name sub-directories.")
    primary_key: list[str] = Field(default_factory=list, description="Not used: files cannot merge.")


Target = Annotated[DatabaseTarget | WarehouseTarget | FileTarget, Field(discriminator="type")]
"""A target spec; each type has its implementation in `batchyard.etl.targets`. A model's
`can_merge` says whether its type can upsert (`write_disposition: merge`)."""


class PipelineSpec(_Model):
    """A whole pipeline, as written in PIPELINE.yaml."""

    pipeline_id: str = Field(description="Names the run, its state and its artifacts.")
    sources: list[Source] = Field(min_length=1)
    target: Target
    batch_size: int = Field(10_000, ge=1, description="Records per transform and load batch.")
    write_disposition: WriteDisposition = "append"
    transform: TransformSpec = Field(default_factory=TransformSpec)
    version: str = Field("1.0", description="Pipeline version written with every record.")
    max_parallel: int = Field(4, ge=1, description="Batches in flight at once.")

    @model_validator(mode="after")
    def _consistent(self) -> PipelineSpec:
        check_pipeline(self.pipeline_id, self.sources, self.target, self.write_disposition)
        return self


def check_pipeline(pipeline_id: str, sources: list, target, disposition: str) -> None:
    """What pydantic cannot see field by field: unique ids, a key for merge."""
    if not pipeline_id.strip():
        raise ConfigurationError("pipeline_id must not be empty")
    ids = [s.id for s in sources]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ConfigurationError(f"source id(s) used twice: {', '.join(twice)}")
    if disposition == "merge" and not target.primary_key:
        raise ConfigurationError("write_disposition merge needs target.primary_key")
    if disposition == "merge" and not target.can_merge:
        raise ConfigurationError(f"a {target.type} target cannot merge: use append or replace")
    for name in target.primary_key:
        check_identifier(name, "primary key column")
    if getattr(target, "table", None):
        check_identifier(target.table)


def load_spec(path: str | Path) -> PipelineSpec:
    """Read a YAML or JSON pipeline spec; any problem is one line naming the file."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"{path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{path}: not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigurationError(f"{path}: {where}: {first['msg']}") from None
