"""The reader registry: one module per file format in this package, each a `Reader` subclass
that registers its name, extensions and leading bytes.

Adding a format is one new module here: it subclasses `Reader`, decorates the class with
`@register`, and is found at import like the others. The import and the ETL file source both
read through `open_reader`.
"""

from __future__ import annotations

import errno
import importlib
import pkgutil
from pathlib import Path
from typing import TypeVar

from batchyard.errors import SourceError
from batchyard.readers import sniff
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
        head = handle.read(sniff.SAMPLE)
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
    if not _FORMATS[fmt].magic:
        binary = sniff.binary_content(head, text_encoding(head, options))
        if binary is not None:
            raise SourceError(f"{path}: {sniff.not_text_message(fmt, *binary)}")
    return fmt


def text_encoding(head: bytes, options: SourceOptions) -> str:
    """The encoding a text file is read in: UTF-16 or UTF-32 when it starts with their byte
    order mark and no other encoding than the default was asked for, else the one asked for."""
    marked = sniff.bom_encoding(head)
    return marked if marked and options.encoding.lower() in ("utf-8", "utf8") else options.encoding


def open_reader(path: str | Path, options: SourceOptions) -> Reader:
    """The reader for `path`, once the file is known to exist and to be what it says.

    Raises SourceError for a missing file, a directory, or a format mismatch."""
    path = Path(path)
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SourceError(f"{path}: a loop of symbolic links, not a file") from None
        if exc.errno == errno.ENOENT:
            raise SourceError(f"{path}: no such file") from None
        raise SourceError(f"{path}: cannot read it: {exc.strerror}") from None
    if path.is_dir():
        raise SourceError(f"{path}: is a directory, not a file")
    if not path.is_file():
        raise SourceError(f"{path}: not a regular file (a device, socket or pipe)")
    fmt = detect_format(path, options)
    if not _FORMATS[fmt].magic:
        with path.open("rb") as handle:
            encoding = text_encoding(handle.read(4), options)
        options = options.model_copy(update={"encoding": encoding})
    return _FORMATS[fmt](path, options)


def _load_formats() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in ("base", "sniff"):
            importlib.import_module(f"{__name__}.{module.name}")


_load_formats()
