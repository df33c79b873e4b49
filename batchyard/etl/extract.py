"""Extractors: generators of Arrow record batches, one batch at a time.

Nothing here collects a source: each extractor yields at most `batch_size` records, and
`spool` writes each batch to its own Arrow IPC file at once, so memory holds one batch whatever
the source's size, and tasks pass only the files' references (as the batch import does).
"""

from __future__ import annotations

import datetime as dt
import decimal
import glob
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from pydantic import BaseModel

from batchyard.chunks import SOURCE_ID, ChunkRef, rebatch, write_ipc
from batchyard.engines import check_exists, is_supported, safe_url, session
from batchyard.errors import BatchyardError, ConfigurationError, SourceError
from batchyard.etl.spec import ApiSource, DatabaseSource, FileSource
from batchyard.identifiers import quote
from batchyard.readers import SourceOptions, open_reader
from batchyard.readers.base import records_batch, rows_to_batch
from batchyard.settings import get_settings
from batchyard.sizing import fixed_sizes


class ExtractError(BatchyardError):
    """A source could not be read: the whole run fails, as in the Temporal data pipeline
    this follows."""


class Cursor(BaseModel):
    """The last cursor value reached, kept as text with its type so it survives a round trip."""

    column: str
    kind: str
    value: str

    @classmethod
    def of(cls, column: str, value: Any) -> Cursor | None:
        if value is None:
            return None
        kind = {bool: "int", int: "int", float: "float", dt.datetime: "datetime", dt.date: "date",
                decimal.Decimal: "float"}.get(type(value), "str")
        text = value.isoformat() if kind in ("datetime", "date") else str(value)
        return cls(column=column, kind=kind, value=text)

    def python(self) -> Any:
        parse = {"int": int, "float": float, "datetime": dt.datetime.fromisoformat,
                 "date": dt.date.fromisoformat}.get(self.kind, str)
        return parse(self.value)


class BatchRef(ChunkRef):
    """One spooled batch of one source: what transform and load tasks receive."""

    source_id: str


class Extracted(BaseModel):
    """What an extract task hands on: references, never records."""

    source_id: str
    chunks: list[BatchRef]
    rows: int
    cursor: Cursor | None = None


def _database_sql(source: DatabaseSource, placeholder: str, since: Cursor | None,
                  quote: Callable[[str], str] = quote) -> tuple[str, tuple]:
    body = f"SELECT * FROM {quote(source.table)}" if source.table else \
        f"SELECT * FROM ({source.query.rstrip().rstrip(';')}) AS batchyard_source"
    if not source.cursor_column:
        return body, ()
    column = quote(source.cursor_column)
    where, params = "", ()
    if since is not None:
        where, params = f" WHERE {column} > {placeholder}", (since.python(),)
    return f"SELECT * FROM ({body}) AS q{where} ORDER BY {column}", params


def extract_database(source: DatabaseSource, batch_size: int, since: Cursor | None = None,
                     ) -> Iterator[pa.RecordBatch]:
    """The source's rows after `since`, `batch_size` at a time: through batchyard's own
    sessions for the engines it loads into (a server-side cursor on PostgreSQL and MariaDB; one SQLite
    library per process), through SQLAlchemy for any other database it has a driver for."""
    url = source.url
    try:
        sa.engine.make_url(url)
    except Exception:
        raise ConfigurationError(f"source {source.id}: not a database URL: {safe_url(url)!r}") from None
    if is_supported(url):
        with session(url) as current:
            text, params = _database_sql(source, current.placeholder, since, current.quote)
            columns, batches = current.fetch_batches(text, params, batch_size)
            for rows in batches:
                yield rows_to_batch(columns, rows)
        return
    engine = sa.create_engine(sa.engine.make_url(url), poolclass=sa.pool.NullPool)
    text, params = _database_sql(source, ":p0", since)
    try:
        with engine.connect() as connection:
            result = connection.execution_options(stream_results=True, yield_per=batch_size).execute(
                sa.text(text), {"p0": params[0]} if params else {})
            columns = list(result.keys())
            for partition in result.partitions():
                yield rows_to_batch(columns, partition)
    finally:
        engine.dispose()


def source_columns(source: DatabaseSource | ApiSource | FileSource) -> list[str] | None:
    """The columns a source will produce, read before anything is extracted (a query's
    columns, a file's header), with `_source_id`; None when only the records can tell (an API,
    JSON Lines). Raises ExtractError when the source cannot be read."""
    try:
        if isinstance(source, DatabaseSource):
            columns = _query_columns(source)
        elif isinstance(source, FileSource):
            reader = open_reader(file_paths(source)[0], SourceOptions(format=source.format,
                                                                      delimiter=source.delimiter))
            columns = None if reader.name == "jsonl" else reader.header()
        else:
            columns = None
    except ExtractError:
        raise
    except BatchyardError as exc:
        raise ExtractError(f"source {source.id}: {exc}") from None
    except Exception as exc:
        reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
        raise ExtractError(f"source {source.id}: {type(exc).__name__}: {reason}") from None
    return None if columns is None else [*columns, SOURCE_ID]


def _query_columns(source: DatabaseSource) -> list[str] | None:
    if not is_supported(source.url):
        return None  # read through SQLAlchemy alone; the first batch will tell
    check_exists(source.url)  # a missing SQLite file is not created by looking at it
    body, _ = _database_sql(source, "?", None)
    with session(source.url) as current:
        columns, batches = current.fetch_batches(f"SELECT * FROM ({body}) AS q WHERE 1 = 0", (), 1)
        list(batches)
    return columns


def _dig(body: Any, path: str | None) -> Any:
    for part in (path.split(".") if path else []):
        body = body.get(part) if isinstance(body, dict) else None
    return body


def _next_link(header: str | None) -> str | None:
    """The rel="next" URL of an RFC 8288 Link header."""
    for part in (header or "").split(","):
        url, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
            return url.strip().strip("<>")
    return None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, (parsedate_to_datetime(value) - dt.datetime.now(dt.UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


def get_json(client, url: str, params: dict, source: ApiSource,
             sleep: Callable[[float], None] = time.sleep):
    """One page, retried on 429 and 5xx with backoff, honouring Retry-After."""
    import httpx

    for attempt in range(source.max_retries + 1):
        try:
            response = client.get(url, params=params)
        except httpx.TransportError as exc:
            if attempt == source.max_retries:
                raise ExtractError(f"source {source.id}: {type(exc).__name__} on {url}: {exc}") from None
            sleep(min(source.backoff * 2 ** attempt, 60.0))
            continue
        if response.status_code == 429 or response.status_code >= 500:
            if attempt == source.max_retries:
                break
            wait = _retry_after(response.headers.get("Retry-After"))
            sleep(min(wait if wait is not None else source.backoff * 2 ** attempt, 120.0))
            continue
        if response.status_code >= 400:
            raise ExtractError(f"source {source.id}: HTTP {response.status_code} from {url}")
        try:
            return response, response.json()
        except ValueError:
            raise ExtractError(f"source {source.id}: {url} did not answer JSON") from None
    raise ExtractError(f"source {source.id}: HTTP {response.status_code} from {url} "
                       f"after {source.max_retries} retries")


def extract_api(source: ApiSource, batch_size: int, auth: str | None = None,
                sleep: Callable[[float], None] = time.sleep) -> Iterator[pa.RecordBatch]:
    """Pages are cut into batches as they come; `auth` is the credential header's value, which
    never enters a message."""
    import httpx

    paging = source.pagination
    headers = {source.auth_header: auth} if auth else {}
    url, params = _split_query(source.url)
    params.update(source.params)
    page, offset, pages = paging.first_page, 0, 0
    pending: list[dict] = []
    timeout = source.timeout or get_settings().http_timeout
    with httpx.Client(headers=headers, timeout=timeout, follow_redirects=True) as client:
        while url:
            if paging.style == "page":
                params.update({paging.page_param: page, paging.limit_param: paging.page_size})
            elif paging.style == "offset":
                params.update({paging.offset_param: offset, paging.limit_param: paging.page_size})
            response, body = get_json(client, url, params, source, sleep)
            records = _dig(body, source.records_path)
            if not isinstance(records, list):
                raise ExtractError(f"source {source.id}: no record list at "
                                   f"{source.records_path or 'the top'} of the response")
            pending += [r if isinstance(r, dict) else {"value": r} for r in records]
            while len(pending) >= batch_size:
                yield records_batch(pending[:batch_size])
                pending = pending[batch_size:]
            pages += 1
            if not records or (source.max_pages and pages >= source.max_pages):
                break
            if paging.style == "page":
                page += 1
            elif paging.style == "offset":
                offset += len(records)
                if len(records) < paging.page_size:
                    break
            elif paging.style == "cursor":
                cursor = _dig(body, paging.cursor_path)
                if not cursor:
                    break
                params[paging.cursor_param] = cursor
            elif paging.style == "link":
                url, params = _split_query(_next_link(response.headers.get("Link")))
            else:
                break
    if pending:
        yield records_batch(pending)


def _split_query(url: str | None) -> tuple[str | None, dict[str, Any]]:
    """httpx drops a URL's own query when given params, so the query joins the params."""
    if not url:
        return None, {}
    from urllib.parse import parse_qsl, urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="")), dict(parse_qsl(parts.query, keep_blank_values=True))


def file_paths(source: FileSource) -> list[Path]:
    matches = sorted(glob.glob(os.path.expanduser(source.path)))
    if not matches:
        raise ExtractError(f"source {source.id}: no file matches {source.path}")
    return [Path(m) for m in matches]


def extract_file(source: FileSource, batch_size: int) -> Iterator[pa.RecordBatch]:
    """Every file the source's path or glob matches, in name order, through the same readers
    as the batch import (so the same formats, with their first bytes checked)."""
    options = SourceOptions(format=source.format, delimiter=source.delimiter)
    for path in file_paths(source):
        try:
            yield from open_reader(path, options).arrow(batch_size)
        except SourceError as exc:
            raise ExtractError(f"source {source.id}: {exc}") from None


def spool(source_id: str, batches: Iterator[pa.RecordBatch], batch_size: int, directory: Path,
          cursor_column: str | None = None) -> Extracted:
    """Write each batch, tagged with its source id, to its own IPC file as it arrives."""
    directory.mkdir(parents=True, exist_ok=True)
    chunks: list[BatchRef] = []
    total = 0
    highest = None
    for index, table in enumerate(rebatch(batches, fixed_sizes(batch_size))):
        table = table.append_column(SOURCE_ID, pa.array([source_id] * table.num_rows, pa.string()))
        if cursor_column:
            if cursor_column not in table.column_names:
                raise ExtractError(f"source {source_id}: no cursor column {cursor_column!r} "
                                   f"(columns: {', '.join(table.column_names)})")
            top = pc.max(table[cursor_column]).as_py()
            highest = top if highest is None or (top is not None and top > highest) else highest
        path = directory / f"{source_id}-{index:06d}.arrow"
        write_ipc(table, path)
        chunks.append(BatchRef(source_id=source_id, index=index, path=str(path), first_row=total + 1,
                               n_rows=table.num_rows))
        total += table.num_rows
    return Extracted(source_id=source_id, chunks=chunks, rows=total,
                     cursor=Cursor.of(cursor_column, highest) if cursor_column else None)
