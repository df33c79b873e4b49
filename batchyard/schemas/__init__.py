"""Schema registry: built-in names, user models given as `module:Class`, and model files given
as `PATH.py:Class` (an inferred contract, a reviewed module not on the import path)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import threading
from pathlib import Path

from pydantic import BaseModel

from batchyard.errors import ConfigurationError
from batchyard.schemas.base import RecordSchema, SchemaPlan, compile_plan
from batchyard.schemas.orders import Order
from batchyard.schemas.users import User

BUILTIN: dict[str, type[BaseModel]] = {"users": User, "orders": Order}

__all__ = ["BUILTIN", "RecordSchema", "SchemaPlan", "load_schema", "default_table", "is_file_ref"]

_files_lock = threading.Lock()
_files: dict[tuple[str, int, int], object] = {}


def is_file_ref(ref: str) -> bool:
    """Whether `ref` names a model in a file (`models/orders.py:Orders`)."""
    path, _, attr = ref.rpartition(":")
    return bool(attr) and path.endswith(".py")


def _file_module(path: Path):
    """Execute a model file once per version of it (its path, size and modification time), as a
    module of its own in `sys.modules`, so pydantic resolves its annotations."""
    try:
        stat = path.stat()
    except OSError:
        raise ConfigurationError(f"schema file {path}: no such file") from None
    cache_key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _files_lock:
        if cache_key in _files:
            return _files[cache_key]
        digest = hashlib.sha1(repr(cache_key).encode()).hexdigest()[:12]
        name = f"batchyard_schema_{path.stem.replace('-', '_')}_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ConfigurationError(f"schema file {path}: {type(exc).__name__}: {exc}") from None
        _files[cache_key] = module
        return module


def _file_model(ref: str) -> type[BaseModel]:
    path_text, _, attr = ref.rpartition(":")
    module = _file_module(Path(path_text).expanduser().resolve())
    model = getattr(module, attr, None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ConfigurationError(f"schema {ref!r}: {attr!r} is not a pydantic model in {path_text}")
    return model


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
    """Resolve a schema name (`users`, `orders`), a `module:Class` or a `PATH.py:Class`
    reference to its plan."""
    if name in BUILTIN:
        return compile_plan(BUILTIN[name], name)
    if is_file_ref(name):
        return compile_plan(_file_model(name), name)
    if ":" in name:
        return compile_plan(_import_model(name), name)
    known = ", ".join(sorted(BUILTIN))
    raise ConfigurationError(f"unknown schema {name!r}: use one of {known}, module:Class or "
                             "PATH.py:Class")


def default_table(plan: SchemaPlan) -> str:
    table = getattr(plan.model, "__batchyard_table__", None)
    return table or plan.model.__name__.lower()
