import itertools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchyard.chunks import read_chunk
from batchyard.errors import SourceError
from batchyard.ingest.spool import spool_source
from batchyard.readers import SourceOptions
from batchyard.schemas import load_schema

HEADER = "id,email,name,age,country,signup_date,balance"


def spool(path: Path, tmp_path: Path, size: int = 2, **options):
    plan = load_schema("users")
    return spool_source(path, SourceOptions(**options), plan, tmp_path / "spool",
                        itertools.repeat(size))


def rows_of(result) -> list[dict]:
    return [r for c in result.chunks for r in read_chunk(c).to_pylist()]


def test_csv_with_bom_crlf_quotes_blank_lines_and_ragged_rows(tmp_path):
    path = tmp_path / "u.csv"
    path.write_bytes(
        b"\xef\xbb\xbf" + HEADER.encode() + b",extra\r\n"
        b'1,a@b.co,"Lee, ""Ann""\nSecond line",3,DE,2020-01-01,1,x\r\n'
        b"\r\n"
        b"2,b@b.co,B,4,FR,2020-01-01\r\n"
        b"3,c@b.co,C,5,FR,2020-01-01,2,y,z\r\n"
        b"4,d@b.co,D,6,FR,2020-01-01,2,y"
    )
    result = spool(path, tmp_path)
    assert result.total == 4
    assert result.extra_columns == ["extra"]
    assert [(c.first_row, c.n_rows) for c in result.chunks] == [(1, 2), (3, 2)]
    rows = rows_of(result)
    assert rows[0]["name"] == 'Lee, "Ann"\nSecond line'
    assert [r["_row_number"] for r in rows] == [1, 2, 3, 4]
    assert rows[1]["_parse_error"] == "record: expected 8 fields, found 6"
    assert rows[2]["_parse_error"] == "record: expected 8 fields, found 9"
    assert rows[3]["id"] == "4" and rows[3]["_parse_error"] is None


def test_csv_delimiter_and_encoding(tmp_path):
    path = tmp_path / "u.csv"
    path.write_bytes((HEADER.replace(",", ";") + "\n1;a@b.co;Zoë;3;DE;2020-01-01;1\n")
                     .encode("latin-1"))
    rows = rows_of(spool(path, tmp_path, delimiter=";", encoding="latin-1"))
    assert rows[0]["name"] == "Zoë"


def test_jsonl_with_invalid_line(tmp_path):
    path = tmp_path / "u.jsonl"
    good = {"id": 1, "email": "a@b.co", "name": "A", "age": 3, "country": "DE",
            "signup_date": "2020-01-01", "balance": 1.5}
    path.write_text(json.dumps(good) + "\n{not json\n\n" + json.dumps({**good, "id": 2}) + "\n[1]\n")
    result = spool(path, tmp_path, size=10)
    rows = rows_of(result)
    assert result.total == 4
    assert [(r["id"], r["balance"]) for r in rows] == [("1", "1.5"), (None, None), ("2", "1.5"),
                                                        (None, None)]
    assert rows[1]["_parse_error"].startswith("record: line 2: invalid JSON")
    assert rows[3]["_parse_error"] == "record: line 5: invalid JSON: expected a JSON object, found list"


def test_parquet_typed_columns_become_text(tmp_path):
    path = tmp_path / "u.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "email": ["a@b.co"] * 3, "name": ["A"] * 3,
                             "age": [3, None, 5], "country": ["DE"] * 3,
                             "signup_date": pa.array([18262] * 3, pa.date32()),
                             "balance": [1.5, 2.0, 3.25]}), path, row_group_size=2)
    result = spool(path, tmp_path, size=2)
    rows = rows_of(result)
    assert [(r["id"], r["age"], r["signup_date"], r["balance"]) for r in rows] == [
        ("1", "3", "2020-01-01", "1.5"), ("2", None, "2020-01-01", "2"),
        ("3", "5", "2020-01-01", "3.25"),
    ]


def test_excel_first_sheet_skips_empty_rows(tmp_path):
    import datetime as dt

    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(HEADER.split(","))
    sheet.append([1, "a@b.co", "A", 30, "DE", dt.datetime(2020, 1, 1), 1.5])
    sheet.append([None] * 7)
    sheet.append([2, "b@b.co", "B", 31.0, "FR", dt.date(2021, 5, 6), 2, "surplus"])
    book.create_sheet("other").append(["ignored"])
    path = tmp_path / "u.xlsx"
    book.save(path)
    rows = rows_of(spool(path, tmp_path, size=10))
    assert [(r["id"], r["age"], r["signup_date"], r["_parse_error"]) for r in rows] == [
        ("1", "30", "2020-01-01", None),
        ("2", "31", "2021-05-06", "record: sheet row 4: 8 values but the header has 7 columns"),
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "the file is empty"),
        ("missing.csv", b"id,email\n1,a@b.co\n", "line 1: missing required column(s) name, country, signup_date"),
        ("zip.csv", b"PK\x03\x04rest", "not a text file: binary content at byte 0; expected CSV (it is a ZIP archive)"),
        ("bad.parquet", b"PAR1truncated", "not a readable Parquet file"),
        ("text.parquet", b"id,email\n", "not a parquet file"),
        ("u.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "unknown file type"),
    ],
)
def test_unreadable_sources_are_refused_in_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceError) as caught:
        spool(path, tmp_path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        spool(tmp_path / "nope.csv", tmp_path)
