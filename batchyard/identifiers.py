"""Checks for table and column names that come from users, so no SQL is built from raw input."""

from __future__ import annotations

import re

from batchyard.errors import ConfigurationError

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_identifier(name: str, what: str = "table name") -> str:
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ConfigurationError(
            f"invalid {what} {name!r}: use letters, digits and underscores, starting with a letter"
        )
    return name


def quote(name: str) -> str:
    """Double-quote an identifier already checked by `check_identifier` (SQLite and PostgreSQL)."""
    return '"' + check_identifier(name, "identifier").replace('"', '""') + '"'


def backtick(name: str) -> str:
    """Quote a checked identifier with backticks, as MariaDB and MySQL do without ANSI_QUOTES."""
    return "`" + check_identifier(name, "identifier") + "`"
