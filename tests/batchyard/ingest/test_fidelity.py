"""The value in the table is the value in the file: missing values, empty strings, whitespace,
time zones and keys, cell by cell, per format and engine (no Prefect: the chunk functions)."""

from __future__ import annotations

import datetime as dt
import importlib.resources
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchyard.engines import session
from batchyard.errors import ConfigurationError
from batchyard.schemas import load_schema
from tests.helpers import import_without_prefect, rows

ITEM = "tests.batchyard.ingest.fidelity_schemas:Item"
UTC = dt.UTC
NEW_YORK = dt.timezone(dt.timedelta(hours=-5))  # 2024-01-15 is standard time there

# id, label, note, amount, at, at_utc: what every format below holds, and what must be stored
EXPECTED = [
    (1, "plain", None, 1.5, dt.datetime(2024, 1, 15, 12, 0), dt.datetime(2024, 1, 15, 12, 0, tzinfo=UTC)),
    (2, " ", "", None, None, None),  # a space and an empty string are values; a missing cell is NULL
    (3, "  padded  ", " lead", 0.0, dt.datetime(2024, 1, 15, 7, 30, 0, 250000),
     dt.datetime(2024, 1, 15, 17, 0, tzinfo=UTC)),  # 12:00 in New York is 17:00 UTC
]


def _stored(url: str) -> list[tuple]:
    """The table's cells as Python values, whatever the engine returns them as."""
    found = rows(url, "select id, label, note, amount, at, at_utc from items order by id")

    def instant(value, aware: bool):
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if value is not None and aware:
            return value.astimezone(UTC)
        return value

    return [(i, label, note, amount, instant(at, False), instant(at_utc, True))
            for i, label, note, amount, at, at_utc in found]


def _csv(path: Path) -> Path:
    path.write_text(
        "id,label,note,amount,at,at_utc\n"
        "1,plain,,1.5,2024-01-15T12:00:00,2024-01-15T12:00:00Z\n"
        '2," ","",,,\n'
        '3,"  padded  "," lead",0,2024-01-15 07:30:00.25,2024-01-15T12:00:00-05:00\n'
    )
    return path


def _jsonl(path: Path) -> Path:
    records = [
        {"id": 1, "label": "plain", "amount": 1.5, "at": "2024-01-15T12:00:00",
         "at_utc": "2024-01-15T12:00:00Z"},
        {"id": 2, "label": " ", "note": "", "amount": None},
        {"id": 3, "label": "  padded  ", "note": " lead", "amount": 0, "at": "2024-01-15T07:30:00.250",
         "at_utc": "2024-01-15T12:00:00-05:00"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _parquet(path: Path) -> Path:
    table = pa.table({
        "id": pa.array([1, 2, 3], pa.int64()),
        "label": ["plain", " ", "  padded  "],
        "note": [None, "", " lead"],
        "amount": pa.array([1.5, None, 0.0]),
        "at": pa.array([dt.datetime(2024, 1, 15, 12), None, dt.datetime(2024, 1, 15, 7, 30, 0, 250000)],
                       pa.timestamp("us")),
        # typed in New York time: the instants are 12:00 and 17:00 UTC
        "at_utc": pa.array([dt.datetime(2024, 1, 15, 12, tzinfo=UTC), None,
                            dt.datetime(2024, 1, 15, 12, tzinfo=NEW_YORK)],
                           pa.timestamp("us", tz="America/New_York")),
    })
    pq.write_table(table, path)
    return path


def _xlsx(path: Path) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["id", "label", "note", "amount", "at", "at_utc"])
    sheet.append([1, "plain", None, 1.5, dt.datetime(2024, 1, 15, 12), "2024-01-15T12:00:00Z"])
    sheet.append([2, " ", "", None, None, None])
    sheet.append([3, "  padded  ", " lead", 0, dt.datetime(2024, 1, 15, 7, 30, 0, 250000),
                  "2024-01-15T12:00:00-05:00"])  # Excel cells hold no zone: text with an offset
    book.save(path)
    return path


@pytest.mark.parametrize("write", [_csv, _jsonl, _parquet, _xlsx], ids=["csv", "jsonl", "parquet", "xlsx"])
def test_every_format_gives_the_same_table(tmp_path, db_url, write):
    suffix = {"_csv": ".csv", "_jsonl": ".jsonl", "_parquet": ".parquet", "_xlsx": ".xlsx"}[write.__name__]
    summary = import_without_prefect(write(tmp_path / f"items{suffix}"), db_url, schema=ITEM)
    assert (summary["success"], summary["failed"], summary["ignored"]) == (3, 0, 0)
    stored = _stored(db_url)
    if write is _xlsx:  # an Excel cell cannot hold an empty string: it comes back empty
        assert stored == [EXPECTED[0], (2, " ", None, None, None, None), EXPECTED[2]]
    else:
        assert stored == EXPECTED


@pytest.mark.parametrize("null_values, expected_notes, failed", [
    (None, ["NA", None, "NA", "n/a"], 1),  # NA is text, and an amount of "NA" is refused
    (["NA", "n/a"], [None, None, "NA", None], 0),  # unquoted NA and n/a are missing now
])
def test_null_values_spell_missing_values_in_words(tmp_path, sqlite_url, null_values, expected_notes, failed):
    path = tmp_path / "items.csv"
    path.write_text('id,label,note,amount\n1,a,NA,1\n2,b,,2\n3,c,"NA",3\n4,d,n/a,NA\n')
    summary = import_without_prefect(path, sqlite_url, schema=ITEM, null_values=null_values)
    assert (summary["success"], summary["failed"]) == (4 - failed, failed)
    got = dict(rows(sqlite_url, "select id, note from items"))
    assert [got.get(i, "rejected") for i in (1, 2, 3, 4)] == [
        *expected_notes[:3], "rejected" if failed else expected_notes[3]]


def test_an_aware_field_refuses_a_naive_value(tmp_path, sqlite_url):
    path = tmp_path / "items.csv"
    path.write_text("id,label,at_utc\n1,a,2024-01-15T12:00:00\n2,b,2024-01-15T12:00:00+01:00\n")
    import_without_prefect(path, sqlite_url, schema=ITEM)
    assert rows(sqlite_url, "select row_number, error from batchyard_records") == [
        (1, "at_utc: Input should have timezone info (got '2024-01-15T12:00:00')")]
    assert rows(sqlite_url, "select id, at_utc from items") == [(2, "2024-01-15 11:00:00.000000Z")]


def test_a_model_without_a_key_is_refused_in_one_line():
    with pytest.raises(ConfigurationError) as caught:
        load_schema("tests.batchyard.ingest.fidelity_schemas:Keyless")
    assert str(caught.value) == (
        "schema tests.batchyard.ingest.fidelity_schemas:Keyless: no key: declare one with "
        '__batchyard_key__ = ("carrier",) on Keyless (or give it an id field; '
        "__batchyard_key__ = () declares it keyless)")
    assert load_schema("tests.batchyard.ingest.fidelity_schemas:Flight").key == ("carrier", "flight")
    declared = load_schema("tests.batchyard.ingest.fidelity_schemas:DeclaredKeyless")
    assert (declared.key, declared.keyless, declared.table_key) == ((), True, ("_batch_id", "_row_number"))


def test_most_records_ignored_as_duplicates_is_a_warning(tmp_path, sqlite_url):
    path = tmp_path / "flights.csv"
    path.write_text("carrier,flight\n" + "UA,1\n" * 7 + "AA,2\n")
    summary = import_without_prefect(path, sqlite_url, schema="tests.batchyard.ingest.fidelity_schemas:Flight")
    assert (summary["success"], summary["ignored"], summary["status"]) == (2, 6, "completed")
    assert summary["warnings"] == [
        "6 of 8 records (75%) were ignored as duplicate keys of table flight: is the schema's key "
        "right? (set __batchyard_key__ on the model)"]


def test_postgres_key_comes_from_the_data_without_a_sequence(tmp_path, postgres_url, unique_table):
    path = tmp_path / "items.csv"
    path.write_text("id,label\n7,a\n")
    from batchyard.ingest.chunk import process_chunk
    from batchyard.ingest.job import resolve_job
    from batchyard.ingest.lifecycle import close_batch, open_batch, plan_batch
    from batchyard.readers import SourceOptions

    job = resolve_job(str(path), ITEM, postgres_url, unique_table, None)
    open_batch(job, 10, SourceOptions())
    for ref in plan_batch(job, SourceOptions(), 10)[0]:
        process_chunk(job, ref)
    close_batch(job)
    with session(postgres_url) as current:
        found = current.sql("select data_type, column_default from information_schema.columns "
                            "where table_name = %s and column_name = 'id'", (unique_table,)).rows
        current.sql(f'drop table "{unique_table}"')
    assert found == [("bigint", None)]


def test_the_rejects_file_is_the_original_columns_and_four_more(tmp_path, sqlite_url):
    path = tmp_path / "items.csv"
    path.write_text('id,label,note,amount\n1,a,"",x\n2,b,,y\n3,c,d,e,f\n')
    summary = import_without_prefect(path, sqlite_url, schema=ITEM)
    assert summary["failed"] == 3
    lines = Path(summary["rejects_file"]).read_text().splitlines()
    assert lines[0] == '"id","label","note","amount","at","at_utc","_raw","_row_number","_error_code","_error"'
    # "" stays a quoted empty string, a missing note an empty cell, a ragged row keeps its text
    assert lines[1].startswith('"1","a","","x",,,,1,"VALIDATION_ERROR","amount: ')
    assert lines[2].startswith('"2","b",,"y",,,,2,')
    assert lines[3].startswith(',,,,,,"3,c,d,e,f",3,"VALIDATION_ERROR","record: expected 4 fields, found 5"')


def _penguins(tmp_path: Path) -> Path:
    """The palmerpenguins package's penguins.csv (CC0), byte for byte, with an id column in
    front (the file has no key)."""
    source = importlib.resources.files("palmerpenguins") / "data" / "penguins.csv"
    header, *lines = source.read_text().splitlines()
    path = tmp_path / "penguins.csv"
    path.write_text("\n".join([f"id,{header}", *(f"{i},{line}" for i, line in enumerate(lines, 1))]) + "\n")
    return path


@pytest.mark.parametrize("null_values, loaded, failed", [(["NA"], 344, 0), (None, 342, 2)])
def test_real_penguins_file_matches_pandas(tmp_path, db_url, null_values, loaded, failed):
    import pandas as pd

    path = _penguins(tmp_path)
    summary = import_without_prefect(path, db_url, chunk_size=100,
                                     schema="tests.batchyard.ingest.fidelity_schemas:Penguin",
                                     null_values=null_values)
    assert (summary["success"], summary["failed"]) == (loaded, failed)
    frame = pd.read_csv(path, keep_default_na=bool(null_values), na_values=null_values or [])
    frame = frame[pd.to_numeric(frame["bill_length_mm"], errors="coerce").notna() | bool(null_values)]
    (count, nulls_bill, bill_sum, mass_sum, sexes, nulls_sex), = rows(
        db_url, "select count(*), count(*) - count(bill_length_mm), sum(bill_length_mm), "
                "sum(body_mass_g), count(distinct sex), count(*) - count(sex) from penguin")
    bill = pd.to_numeric(frame["bill_length_mm"], errors="coerce")
    assert count == len(frame) == loaded
    assert nulls_bill == int(bill.isna().sum())
    assert round(bill_sum, 6) == round(float(bill.sum()), 6)
    assert int(mass_sum) == int(pd.to_numeric(frame["body_mass_g"], errors="coerce").sum())
    assert sexes == frame["sex"].nunique() and nulls_sex == int(frame["sex"].isna().sum())
