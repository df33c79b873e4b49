"""Where events come from: Redis Streams or an SQL events table, behind one small interface.

A source hands over the events of one window plus the late ones (event time before the window,
arrived after their own window was committed), and remembers nothing itself: the position it
read up to is committed with the window's results, and acknowledged only after that commit, so a
crash anywhere re-reads events instead of losing them. A Kafka source would implement the same
three methods (`fetch`, `ack`, `close`) with offsets as positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa

from batchyard.settings import get_settings
from batchyard.stream.aggregate import Event
from batchyard.stream.window import Window

Position = tuple[int, int]
ORIGIN: Position = (0, 0)


def parse_position(text: str | None) -> Position:
    if not text:
        return ORIGIN
    major, _, minor = text.partition("-")
    return int(major), int(minor or 0)


def format_position(position: Position) -> str:
    return f"{position[0]}-{position[1]}"


@dataclass
class Fetched:
    """One window's read: `position` is the highest position seen, to be committed with the
    results; `handles` are what `ack` releases once they are."""

    events: list[Event] = field(default_factory=list)
    late: list[Event] = field(default_factory=list)
    invalid: int = 0
    position: Position = ORIGIN
    handles: list[Any] = field(default_factory=list)


class Source(Protocol):
    def fetch(self, window: Window, seen: Position) -> Fetched: ...

    def earliest(self) -> int | None:
        """The event time (epoch ms) of the source's first event; None when it has none."""

    def ack(self, fetched: Fetched) -> None: ...

    def close(self) -> None: ...


def classify(fetched: Fetched, event: Event, window: Window, seen: Position) -> bool:
    """File `event` under the window or the late events; False when it belongs to a later window
    (a source must then keep it for that window)."""
    if event.ts >= window.end:
        return False
    if event.ts >= window.start:
        fetched.events.append(event)
    elif event.position > seen:
        fetched.late.append(event)
    return True


def parse_event(position: Position, fields: dict[str, Any]) -> Event | None:
    """An event from a Redis entry's fields (`key`, `value`, optional `ts` in epoch ms, which
    defaults to the entry id's time); None when malformed, so one bad entry cannot block a job."""
    try:
        key = fields["key"]
        value = float(fields.get("value", 1))
        ts = int(fields["ts"]) if fields.get("ts") not in (None, "") else position[0]
    except (KeyError, TypeError, ValueError):
        return None
    return Event(position, str(key), value, ts)


class RedisStreamSource:
    """A consumer group on a Redis stream. Entries of later windows stay pending (not
    acknowledged) and are read again, from this consumer's pending list, for their window."""

    def __init__(self, url: str, stream: str, group: str, page: int = 1000):
        import redis

        timeout = get_settings().redis_timeout
        self.client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=timeout,
                                           socket_connect_timeout=timeout)
        self.stream, self.group, self.consumer, self.page = stream, group, group, page
        try:
            self.client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _read(self, start: str):
        last = start
        while True:
            reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: last},
                                           count=self.page)
            entries = reply[0][1] if reply else []
            if not entries:
                return
            yield from entries
            if start == ">":
                continue
            last = entries[-1][0]

    def fetch(self, window: Window, seen: Position) -> Fetched:
        fetched = Fetched(position=seen)
        for start in ("0", ">"):
            for entry_id, fields in self._read(start):
                position = parse_position(entry_id)
                fetched.position = max(fetched.position, position)
                event = parse_event(position, fields or {})
                if event is None:
                    fetched.invalid += int(position > seen)
                    fetched.handles.append(entry_id)
                elif classify(fetched, event, window, seen):
                    fetched.handles.append(entry_id)
        return fetched

    def earliest(self) -> int | None:
        """The time of the stream's first entry (entries come in roughly in time order; one
        with an earlier time is counted as before the first window)."""
        first = self.client.xrange(self.stream, count=1)
        if not first:
            return None
        position = parse_position(first[0][0])
        event = parse_event(position, first[0][1] or {})
        return event.ts if event is not None else position[0]

    def ack(self, fetched: Fetched) -> None:
        for i in range(0, len(fetched.handles), 1000):
            self.client.xack(self.stream, self.group, *fetched.handles[i:i + 1000])

    def close(self) -> None:
        self.client.close()


def events_table(name: str, metadata: sa.MetaData | None = None) -> sa.Table:
    return sa.Table(
        name, metadata or sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False, index=True),
    )


class SqlTableSource:
    """An append-only events table (`id, key, value, ts`); ids are positions. Nothing to
    acknowledge: the committed position is the whole state."""

    def __init__(self, db: str, table: str):
        from batchyard.engines import session

        self.db, self.session = db, session
        self.metadata = sa.MetaData()
        self.table = events_table(table, self.metadata)
        with session(db, write=True) as current:
            current.create(self.metadata)

    def fetch(self, window: Window, seen: Position) -> Fetched:
        t = self.table
        with self.session(self.db) as current:
            top = current.execute(sa.select(sa.func.coalesce(sa.func.max(t.c.id), 0))).scalar_one()
            rows = current.execute(
                sa.select(t.c.id, t.c.key, t.c.value, t.c.ts)
                .where(t.c.id <= top, t.c.ts < window.end,
                       sa.or_(t.c.ts >= window.start, t.c.id > seen[0]))
                .order_by(t.c.id)
            ).rows
        fetched = Fetched(position=max(seen, (int(top), 0)))
        for row_id, key, value, ts in rows:
            classify(fetched, Event((int(row_id), 0), str(key), float(value), int(ts)), window, seen)
        return fetched

    def earliest(self) -> int | None:
        with self.session(self.db) as current:
            found = current.execute(sa.select(sa.func.min(self.table.c.ts))).scalar_one()
        return None if found is None else int(found)

    def ack(self, fetched: Fetched) -> None:
        pass

    def close(self) -> None:
        pass


def is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def open_source(url: str, name: str, job: str) -> Source:
    if is_redis(url):
        return RedisStreamSource(url, name, group=f"batchyard-{job}")
    return SqlTableSource(url, name)
