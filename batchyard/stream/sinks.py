"""Where a window's results go, with the job's watermark, in one atomic and repeatable write.

The results, the window's counts and the advanced watermark commit together (one SQL
transaction, or one Redis script), and a window already behind the watermark is not written
again; results are upserted by (job, window, key). A crash before the commit leaves nothing, a
crash after it leaves a window the next run skips: no window is ever counted twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import sqlalchemy as sa

from batchyard.settings import get_settings
from batchyard.stream.window import Window

STANDARD = ("key", "count", "sum", "min", "max")


@dataclass(frozen=True)
class JobState:
    watermark: int
    position: str
    windows: int


@dataclass(frozen=True)
class WindowStats:
    events_in: int
    late: int
    invalid: int


class Sink(Protocol):
    def state(self, job: str) -> JobState | None: ...

    def commit(self, job: str, window: Window, rows: list[dict], stats: WindowStats,
               position: str) -> bool: ...

    def close(self) -> None: ...


def split_row(row: dict) -> dict:
    """The standard columns, and everything a user function added as JSON in `extra`."""
    extra = {k: v for k, v in row.items() if k not in STANDARD}
    return {"key": str(row["key"]), "count": row.get("count"), "sum": row.get("sum"),
            "min": row.get("min"), "max": row.get("max"),
            "extra": json.dumps(extra, sort_keys=True, default=str) if extra else None}


def result_tables(table: str) -> tuple[sa.MetaData, sa.Table, sa.Table, sa.Table]:
    metadata = sa.MetaData()
    results = sa.Table(
        table, metadata,
        sa.Column("job", sa.String(200), primary_key=True),
        sa.Column("window_start", sa.BigInteger, primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("window_end", sa.BigInteger, nullable=False),
        sa.Column("count", sa.BigInteger),
        sa.Column("sum", sa.Float),
        sa.Column("min", sa.Float),
        sa.Column("max", sa.Float),
        sa.Column("extra", sa.Text),
    )
    windows = sa.Table(
        "batchyard_stream_windows", metadata,
        sa.Column("job", sa.String(200), primary_key=True),
        sa.Column("window_start", sa.BigInteger, primary_key=True),
        *[sa.Column(name, sa.BigInteger, nullable=False)
          for name in ("window_end", "events_in", "events_out", "late", "invalid")],
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False),
    )
    state = sa.Table(
        "batchyard_stream_state", metadata,
        sa.Column("job", sa.String(200), primary_key=True),
        sa.Column("watermark", sa.BigInteger, nullable=False),
        sa.Column("position", sa.String(64), nullable=False),
        sa.Column("windows", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    return metadata, results, windows, state


class SqlTableSink:
    """Results in a table of `db` (SQLite or PostgreSQL), state beside them."""

    def __init__(self, db: str, table: str):
        from batchyard.engines import session

        self.db, self.session = db, session
        self.metadata, self.results, self.windows, self.state_table = result_tables(table)
        with session(db, write=True) as current:
            current.create(self.metadata)

    def state(self, job: str) -> JobState | None:
        t = self.state_table
        with self.session(self.db) as current:
            rows = current.execute(
                sa.select(t.c.watermark, t.c.position, t.c.windows).where(t.c.job == job)).rows
        return JobState(int(rows[0][0]), rows[0][1], int(rows[0][2])) if rows else None

    def commit(self, job: str, window: Window, rows: list[dict], stats: WindowStats,
               position: str) -> bool:
        t = self.state_table
        now = datetime.now(UTC)
        with self.session(self.db, write=True) as current:
            found = current.execute(
                sa.select(t.c.watermark, t.c.windows).where(t.c.job == job)).rows
            if found and found[0][0] >= window.end:
                return False
            if rows:
                current.upsert(self.results, [
                    {"job": job, "window_start": window.start, "window_end": window.end,
                     **split_row(r)} for r in rows], ["job", "window_start", "key"])
            current.upsert(self.windows, [{
                "job": job, "window_start": window.start, "window_end": window.end,
                "events_in": stats.events_in, "events_out": len(rows), "late": stats.late,
                "invalid": stats.invalid, "committed_at": now}], ["job", "window_start"])
            current.upsert(t, [{
                "job": job, "watermark": window.end, "position": position,
                "windows": (found[0][1] if found else 0) + 1, "updated_at": now}], ["job"])
        return True

    def close(self) -> None:
        pass


_COMMIT = """
local watermark = tonumber(redis.call('HGET', KEYS[1], 'watermark') or '-1')
if watermark >= tonumber(ARGV[2]) then return 0 end
local rows = cjson.decode(ARGV[4])
for _, row in ipairs(rows) do
  local fields = {}
  for k, v in pairs(row) do
    table.insert(fields, k)
    table.insert(fields, tostring(v))
  end
  redis.call('XADD', KEYS[4], '*', unpack(fields))
  redis.call('HSET', KEYS[3], ARGV[1] .. ':' .. row['key'], cjson.encode(row))
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
redis.call('HSET', KEYS[1], 'watermark', ARGV[2], 'position', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'windows', 1)
return 1
"""


class RedisStreamSink:
    """Results appended to a Redis stream, one entry per key and window; a hash keyed by
    `window_start:key` holds the upserted rows and gives the repeat check its answer."""

    def __init__(self, url: str, stream: str):
        import redis

        timeout = get_settings().redis_timeout
        self.client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=timeout,
                                           socket_connect_timeout=timeout)
        self.stream = stream
        self.script = self.client.register_script(_COMMIT)

    def _keys(self, job: str) -> list[str]:
        base = f"batchyard:stream:{job}"
        return [f"{base}:state", f"{base}:windows", f"{base}:results", self.stream]

    def state(self, job: str) -> JobState | None:
        found = self.client.hgetall(self._keys(job)[0])
        if not found:
            return None
        return JobState(int(found["watermark"]), found["position"], int(found.get("windows", 0)))

    def commit(self, job: str, window: Window, rows: list[dict], stats: WindowStats,
               position: str) -> bool:
        # strings only: Lua would print epoch milliseconds as 1.76e+12
        entries = [{k: str(v) for k, v in {"job": job, "window_start": window.start,
                                           "window_end": window.end, **split_row(r)}.items()
                    if v is not None} for r in rows]
        log = json.dumps({"window_end": window.end, "events_in": stats.events_in,
                          "events_out": len(rows), "late": stats.late, "invalid": stats.invalid,
                          "committed_at": datetime.now(UTC).isoformat()})
        done = self.script(keys=self._keys(job), args=[
            window.start, window.end, position, json.dumps(entries), log])
        return bool(done)

    def close(self) -> None:
        self.client.close()


def open_sink(url: str, name: str) -> Sink:
    from batchyard.stream.sources import is_redis

    if is_redis(url):
        return RedisStreamSink(url, name)
    return SqlTableSink(url, name)
