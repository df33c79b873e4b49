"""Database engines: one module per engine in this package, each registering an `Engine` that
opens `Session`s (see `base`), and the functions everything else calls with a URL.

Adding an engine is one new module here: an `Engine` with its `Session`, decorated with
`@register`; the parametrised tests in tests/batchyard/engines then run it through the same
suite as the others.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import re
from collections.abc import Iterator
from typing import TypeVar

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from batchyard.engines.base import Engine, Rows, Session
from batchyard.errors import ConfigurationError

__all__ = ["Engine", "Rows", "Session", "bulk_form", "check_connection", "check_exists", "checkpoint",
           "engine_names", "is_supported", "normalise_url", "password_variable", "register", "safe_url",
           "session", "shown_url"]

_ENGINES: dict[str, Engine] = {}
E = TypeVar("E")


def register(engine: type[E]) -> type[E]:
    """Make `engine` (a class) the engine of its backend (a class decorator)."""
    instance = engine()
    for name in (instance.backend, *instance.aliases):
        _ENGINES[name] = instance
    return engine


def engine_names() -> list[str]:
    """The backends batchyard loads into, as URL schemes."""
    return sorted({e.backend for e in _ENGINES.values()})


def is_supported(url: str) -> bool:
    """Whether `url` names an engine batchyard has (whatever else SQLAlchemy could reach)."""
    try:
        return make_url(url).get_backend_name() in _ENGINES
    except Exception:
        return False


def safe_url(url: str | sa.URL) -> str:
    """The URL with its password masked, for logs, errors, the ledger and artifacts."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"


def shown_url(text: str) -> str:
    """A `--db` value as the user typed it, for an error message, with any password masked
    (also when the text is not a URL SQLAlchemy can parse)."""
    parsed = safe_url(text)
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", text) if parsed == "<unparseable url>" else parsed


def _parse(url: str) -> tuple[Engine, sa.URL]:
    try:
        parsed = make_url(url)
    except Exception:
        schemes = " or ".join(f"{name}://..." for name in engine_names())
        raise ConfigurationError(f"not a database URL: {shown_url(url)!r} (use {schemes}, e.g. "
                                 "sqlite:///path/to/file.db)") from None
    engine = _ENGINES.get(parsed.get_backend_name())
    if engine is None:
        schemes = " or ".join(f"{name}://" for name in engine_names())
        raise ConfigurationError(
            f"unsupported database {parsed.get_backend_name()!r} in {safe_url(parsed)}: use {schemes}"
        )
    return engine, engine.normalise(parsed)


def password_variable(url: str) -> str | None:
    """The environment variable `url`'s engine reads a password from (None: it has none, or
    the URL names no engine batchyard has)."""
    try:
        engine = _ENGINES.get(make_url(url).get_backend_name())
    except Exception:
        return None
    return engine.password_variable if engine else None


def normalise_url(url: str) -> sa.URL:
    """Parse a database URL and give it the driver batchyard uses.

    Raises ConfigurationError for a malformed URL or an engine batchyard does not support."""
    return _parse(url)[1]


@contextlib.contextmanager
def session(db: str, write: bool = False) -> Iterator[Session]:
    """A session on `db`; with `write`, one transaction committed at the end of the block."""
    engine, url = _parse(db)
    with engine.session(db, url, write) as current:
        yield current


def bulk_form(db: str, data: pa.Table) -> pa.Table:
    """`data` with its columns as the engine's bulk load takes them (SQLite: dates as text),
    made before a session so that a writer's turn is spent writing. Loading either form gives
    the same rows."""
    engine, _ = _parse(db)
    convert = getattr(engine, "bulk_form", None)
    return convert(data) if convert else data


def checkpoint(db: str) -> None:
    """The engine's housekeeping after a chunk's commit (SQLite: a passive WAL checkpoint)."""
    engine, url = _parse(db)
    engine.checkpoint(db, url)


def check_exists(db: str) -> None:
    """Refuse a database that is not there, creating nothing (a SQLite file is created by the
    first connection to it): what read-only commands check before they connect.

    Raises ConfigurationError: `no such database: URL`, or as `check_connection` does."""
    engine, url = _parse(db)
    exists = getattr(engine, "exists", None)
    if exists is not None and not exists(url):
        raise ConfigurationError(f"no such database: {safe_url(url)}")
    check_connection(db)


def check_connection(db: str) -> None:
    """Connect once, so an unreachable database is a one-line error before any work starts.

    Raises ConfigurationError naming the database (its password masked) and the reason."""
    try:
        with session(db) as current:
            current.sql("SELECT 1")
    except ConfigurationError:
        raise
    except Exception as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise ConfigurationError(f"cannot connect to {safe_url(normalise_url(db))}: {reason}") from None


_NOT_ENGINES = {"base", "pgcopy"}


def _load_engines() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _NOT_ENGINES:
            importlib.import_module(f"{__name__}.{module.name}")


_load_engines()
