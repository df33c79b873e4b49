"""ETL sources and targets as Prefect blocks, referred to by name in a pipeline spec.

Databases reuse prefect-sqlalchemy's `SqlAlchemyConnector` (`url: block:NAME`, see
`blocks/database.py`). An HTTP API's credential lives in an `HttpApiSource` block (a `SecretStr`,
shown masked in the UI and in logs), and a DuckDB warehouse can be saved as a `DuckDbWarehouse`.
Register them once with `prefect block register -m blocks.etl`.

    HttpApiSource(url="https://api.example.com/v1/orders", auth_header="Authorization",
                  auth_value="Bearer ...").save("orders-api")
    # spec: sources: [{type: api, id: orders, block: orders-api, pagination: {style: link}}]
"""

from __future__ import annotations

import os
from collections.abc import Callable

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from batchyard.errors import ConfigurationError
from batchyard.etl.spec import ApiSource, DatabaseSource, Source, Target
from batchyard.etl.targets import target_for
from blocks.database import BLOCK_PREFIX, database_url


class HttpApiSource(Block):
    """An HTTP JSON API an ETL pipeline extracts from."""

    _block_type_name = "batchyard HTTP API source"
    _description = "Base URL and credential header of an HTTP JSON API read by the etl-pipeline flow."

    url: str = Field(description="URL of the first page.")
    auth_header: str = Field("Authorization", description="Header that carries the credential.")
    auth_value: SecretStr | None = Field(None, description="The header's value, e.g. 'Bearer ...'.")


class DuckDbWarehouse(Block):
    """The DuckDB file an ETL pipeline loads into."""

    _block_type_name = "batchyard DuckDB warehouse"
    _description = "Path of the DuckDB database file the etl-pipeline flow loads into."

    path: str = Field(description="DuckDB database file (created when missing).")


def resolve_source(source: Source) -> tuple[Source, str | None]:
    """The source with its block references replaced by what they hold, and the credential
    header's value, kept apart so it never sits in a model that could be logged."""
    if isinstance(source, DatabaseSource):
        if source.url.startswith(BLOCK_PREFIX):
            return source.model_copy(update={"url": database_url(source.url)}), None
        return source, None
    if not isinstance(source, ApiSource):
        return source, None
    auth = None
    if source.block:
        saved = _load(HttpApiSource, source.block)
        source = source.model_copy(update={"url": source.url or saved.url,
                                           "auth_header": saved.auth_header})
        auth = saved.auth_value.get_secret_value() if saved.auth_value else None
    if source.auth_secret:
        from prefect.blocks.system import Secret

        auth = str(_load(Secret, source.auth_secret).get())
    if source.auth_env:
        auth = os.environ.get(source.auth_env)
        if auth is None:
            raise ConfigurationError(f"source {source.id}: environment variable {source.auth_env} "
                                     "is not set")
    return source, auth


def _warehouse_path(reference: str) -> str:
    return _load(DuckDbWarehouse, reference.removeprefix(BLOCK_PREFIX)).path


_BLOCK_VALUES: dict[str, Callable[[str], str]] = {
    "SqlAlchemyConnector": database_url,
    "DuckDbWarehouse": _warehouse_path,
}
"""Kind of block (as a target's `block_fields` names it) → what `block:NAME` of it stands for."""


def resolve_target(target: Target) -> Target:
    """The target with each `block:NAME` in its fields replaced by what the block holds.

    Which fields may name a block, and of which kind, the target type says itself
    (`EtlTarget.block_fields`); loading the block is done here, where Prefect may be imported.

    Args:
        target: a target spec, as given to the flow.

    Returns:
        `target` itself when no field names a block, else a copy with the blocks' values.

    Raises:
        ConfigurationError: a DuckDbWarehouse block cannot be loaded, or the kind of block a
            field names has no loader here (a SqlAlchemyConnector raises as
            `blocks.database.database_url` does).
    """
    updates = {}
    for name, kind in target_for(target).block_fields.items():
        value = getattr(target, name)
        if not value.startswith(BLOCK_PREFIX):
            continue
        if kind not in _BLOCK_VALUES:
            raise ConfigurationError(f"target field {name}: no loader for {kind} blocks")
        updates[name] = _BLOCK_VALUES[kind](value)
    return target.model_copy(update=updates) if updates else target


def _load(kind, name: str):
    try:
        return kind.load(name)
    except (ValueError, KeyError) as exc:
        raise ConfigurationError(f"cannot load {kind.__name__} block {name!r}: "
                                 f"{str(exc).splitlines()[0]}") from None
