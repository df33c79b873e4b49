"""PostgreSQL's binary COPY format from Arrow: the same rows as a CSV COPY, or a fallback."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from batchyard.engines import session
from batchyard.engines.pgcopy import encode
from batchyard.engines.postgres import copy_csv

COLUMNS = {
    "id": ("bigint", pa.array([1, 2, 3, None], pa.int64())),
    "small": ("integer", pa.array([5, None, -7, 2**31 - 1], pa.int64())),
    "f": ("double precision", pa.array([1.5, None, float("inf"), -2.25])),
    "b": ("boolean", pa.array([True, None, False, True])),
    "s": ("text", pa.array(["héllo", None, "", "a,b\n\"c\""])),
    "d": ("date", pa.array([dt.date(2024, 1, 2), None, dt.date(1969, 12, 31), dt.date(2000, 1, 1)])),
    "ts": ("timestamp without time zone", pa.array(
        [dt.datetime(2024, 1, 1, 12, 0, 0, 5), None, dt.datetime(1999, 12, 31), dt.datetime(2000, 1, 1)],
        pa.timestamp("us"))),
    "tz": ("timestamp with time zone", pa.array(
        [dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC), None, None, dt.datetime(1970, 1, 1, tzinfo=dt.UTC)],
        pa.timestamp("us", "UTC"))),
}


def test_binary_copy_loads_what_a_csv_copy_loads(postgres_url, unique_table):
    table = pa.table({name: values for name, (_, values) in COLUMNS.items()})
    definition = ", ".join(f'"{name}" {kind}' for name, (kind, _) in COLUMNS.items())
    payload = encode(table, [kind for kind, _ in COLUMNS.values()])
    assert payload is not None
    with session(postgres_url, write=True) as current:
        current.sql(f'CREATE TEMP TABLE "{unique_table}_b" ({definition})')
        current.sql(f'CREATE TEMP TABLE "{unique_table}_c" ({definition})')
        cursor = current.connection.connection.driver_connection.cursor()
        with cursor.copy(f'COPY "{unique_table}_b" FROM STDIN WITH (FORMAT binary)') as copy:
            copy.write(payload)
        copy_csv(cursor, f"{unique_table}_c", table)
        binary = current.sql(f'SELECT * FROM "{unique_table}_b" ORDER BY small NULLS FIRST').rows
        text = current.sql(f'SELECT * FROM "{unique_table}_c" ORDER BY small NULLS FIRST').rows
    assert binary == text
    assert len(binary) == 4 and binary[0][4] is None and ("héllo" in [r[4] for r in binary])


@pytest.mark.parametrize("values, kind", [
    (pa.array([2**40], pa.int64()), "integer"),  # does not fit: the server must say so
    (pa.array([dt.datetime(2024, 1, 1)], pa.timestamp("us")), "timestamp with time zone"),  # no zone
    (pa.array(["1"]), "bigint"),  # text into a number column: the server parses it
    (pa.array([1.5]), "numeric"),  # a type this encoder does not write
])
def test_what_cannot_be_encoded_falls_back(values, kind):
    assert encode(pa.table({"c": values}), [kind]) is None


def test_an_empty_table_is_a_header_and_a_trailer():
    assert encode(pa.table({"c": pa.array([], pa.int64())}), ["bigint"]) == \
        b"PGCOPY\n\xff\r\n\x00" + bytes(8) + b"\xff\xff"
