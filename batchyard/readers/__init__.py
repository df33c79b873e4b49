"""The reader registry: one module per file format in this package, each a `Reader` subclass
that registers its name, extensions and leading bytes.

Adding a format is one new module here: it subclasses `Reader`, decorates the class with
`@register`, and is found at import like the others. The import and the ETL file source both
read through `open_reader`.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TypeVar

from batchyard.errors import SourceError
from batchyard.readers.base import Reader, SourceOptions

__all__ = ["Reader", "SourceOptions", "detect_format", "format_names", "open_reader", "register"]

_FORMATS: dict[str, type[Reader]] = {}
R = TypeVar("R", bound=type[Reader])


def register(reader: R) -> R:
    """Make `reader` the reader of its format (a class decorator)."""
    _FORMATS[reader.name] = reader
    return reader


def format_names() -> list[str]:
    """The names `--format` takes, in registration order."""
    return list(_FORMATS)


def _by_extension(suffix: str) -> str | None:
    return next((name for name, reader in _FORMATS.items() if suffix in reader.extensions), None)


def detect_format(path: Path, options: SourceOptions) -> str:
    """The declared format, else the one its extension names, checked against the file's first
    bytes: a binary format must start with its own, a text format with no binary format's.

    Raises SourceError (one line) for an unknown extension, an empty file, or a mismatch."""
    fmt = options.format or _by_extension(path.suffix.lower())
    if fmt is None:
        raise SourceError(f"{path}: unknown file type {path.suffix!r}; pass --format")
    with path.open("rb") as handle:
        head = handle.read(16)
    if not head:
        raise SourceError(f"{path}: the file is empty")
    for reader in _FORMATS.values():
        for leading, hint in reader.look_alikes.items():
            if head.startswith(leading):
                raise SourceError(f"{path}: {hint}")
    actual = next((name for name, reader in _FORMATS.items()
                   if any(head.startswith(m) for m in reader.magic)), None)
    if _FORMATS[fmt].magic and actual != fmt:
        raise SourceError(f"{path}: not a {fmt} file (its first bytes are {head[:4]!r})")
    if not _FORMATS[fmt].magic and actual is not None:
        raise SourceError(f"{path}: declared {fmt} but the file is {actual} (binary data)")
    return fmt


def open_reader(path: str | Path, options: SourceOptions) -> Reader:
    """The reader for `path`, once the file is known to exist and to be what it says.

    Raises SourceError for a missing file, a directory, or a format mismatch."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    if path.is_dir():
        raise SourceError(f"{path}: is a directory, not a file")
    return _FORMATS[detect_format(path, options)](path, options)


def _load_formats() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")


_load_formats()
