"""Schema registry: built-in names and user models given as `module:Class`."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from pydantic import BaseModel

from batchyard.errors import ConfigurationError
from batchyard.schemas.base import RecordSchema, SchemaPlan, compile_plan
from batchyard.schemas.orders import Order
from batchyard.schemas.users import User

BUILTIN: dict[str, type[BaseModel]] = {"users": User, "orders": Order}

__all__ = ["BUILTIN", "RecordSchema", "SchemaPlan", "load_schema", "default_table"]


def _import_model(ref: str) -> type[BaseModel]:
    module_name, _, attr = ref.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"schema {ref!r}: cannot import module {module_name!r}: {exc}"
        ) from None
    model = getattr(module, attr, None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ConfigurationError(f"schema {ref!r}: {attr!r} is not a pydantic model in {module_name}")
    return model


def load_schema(name: str) -> SchemaPlan:
    """Resolve a schema name (`users`, `orders`) or a `module:Class` reference to its plan."""
    if name in BUILTIN:
        return compile_plan(BUILTIN[name], name)
    if ":" in name:
        return compile_plan(_import_model(name), name)
    known = ", ".join(sorted(BUILTIN))
    raise ConfigurationError(f"unknown schema {name!r}: use one of {known} or module:Class")


def default_table(plan: SchemaPlan) -> str:
    table = getattr(plan.model, "__batchyard_table__", None)
    return table or plan.model.__name__.lower()
