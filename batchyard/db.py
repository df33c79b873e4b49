"""Engines for target databases: SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

import functools

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from batchyard.errors import ConfigurationError
from batchyard.settings import get_settings


def normalise_url(url: str) -> sa.URL:
    """Parse a database URL; a bare `postgresql://` uses psycopg 3, which batchyard ships."""
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigurationError(f"not a database URL: {safe_url(url)!r}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def safe_url(url: str | sa.URL) -> str:
    """The URL with its password masked, for logs, errors, the ledger and artifacts."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"


def _sqlite_setup(engine: sa.Engine, busy_timeout: float) -> None:
    """WAL and immediate transactions, so parallel chunk commits queue instead of deadlocking."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


@functools.lru_cache(maxsize=16)
def get_engine(url: str) -> sa.Engine:
    parsed = normalise_url(url)
    settings = get_settings()
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"timeout": settings.sqlite_busy_timeout,
                                                        "check_same_thread": False})
        _sqlite_setup(engine, settings.sqlite_busy_timeout)
    elif parsed.get_backend_name() == "postgresql":
        engine = sa.create_engine(parsed, pool_size=12, max_overflow=4, pool_pre_ping=True)
    else:
        raise ConfigurationError(
            f"unsupported database {parsed.get_backend_name()!r} in {safe_url(parsed)}: "
            "use sqlite:/// or postgresql://"
        )
    return engine


def check_connection(url: str) -> sa.Engine:
    """Connect once, so an unreachable database is a one-line error before any work starts."""
    engine = get_engine(url)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise ConfigurationError(
            f"cannot connect to {safe_url(normalise_url(url))}: {reason}"
        ) from None
    return engine


def is_sqlite(engine: sa.Engine) -> bool:
    return engine.dialect.name == "sqlite"
