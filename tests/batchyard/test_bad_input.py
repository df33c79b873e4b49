"""The catalogue of bad inputs: each is either refused whole, in one line saying what and where,
before anything is written, or its bad records are rejected one by one with their reasons while
everything else loads. Every input record is accounted for."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchyard.engines import session
from batchyard.errors import SourceError
from tests.helpers import import_without_prefect

HEADER = "id,email,name,age,country,signup_date,balance"
GOOD = "1,a@example.com,Ann,30,DE,2020-01-31,1.5"


def import_core(path: Path, db: str, **options) -> tuple[dict, dict[int, str]]:
    """The batch-import steps without Prefect, and each failed or ignored record's error."""
    summary = import_without_prefect(path, db, **options)
    with session(db) as current:
        errors = dict(current.sql("select row_number, error from batchyard_records "
                                  "order by row_number").rows)
    return summary, errors


def loaded(db: str) -> int:
    with session(db) as current:
        return current.sql("select count(*) from users").rows[0][0]


def write(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "options", "message"),
    [
        ("empty.csv", b"", {}, "the file is empty"),
        ("cols.csv", "id,email,name\n1,a@b.co,A\n", {},
         "line 1: missing required column(s) country, signup_date (header has id, email, name)"),
        ("semi.csv", HEADER.replace(",", ";") + "\n" + GOOD.replace(",", ";") + "\n", {},
         "is the delimiter ';'? pass --delimiter"),
        ("latin.csv", (HEADER + "\n" + GOOD + "\n2,b@example.com,Ren\xe9,30,DE,2020-01-31,1\n")
         .encode("latin-1"), {},
         "record 2 (line 3 if no field spans lines), column 3 (name): not valid utf-8; "
         "if the file is Latin-1"),
        ("not-parquet.parquet", HEADER + "\n", {}, "not a parquet file"),
        ("really-parquet.csv", b"PAR1\x00\x00", {},
         "not a text file: binary content at byte 0; expected CSV (it is a Parquet file)"),
        ("zip.xlsx", "id\n1\n", {}, "not a xlsx file"),
    ],
)
def test_refused_whole_before_anything_is_written(tmp_path, sqlite_url, name, content, options,
                                                   message):
    path = write(tmp_path, name, content)
    with pytest.raises(SourceError) as caught:
        import_core(path, sqlite_url, **options)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert loaded(sqlite_url) == 0


def test_truncated_parquet_is_refused(tmp_path, sqlite_url):
    path = tmp_path / "users.parquet"
    pq.write_table(pa.table({"id": ["1"] * 1000, "email": ["a@b.co"] * 1000}), path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(SourceError, match="not a readable Parquet file"):
        import_core(path, sqlite_url)


@pytest.mark.parametrize(
    ("content", "counts", "errors"),
    [
        pytest.param(HEADER + "\n", (0, 0, 0), {}, id="header-only"),
        pytest.param(HEADER + ",note\n" + GOOD + ",hello\n", (1, 0, 0), {}, id="extra-column"),
        pytest.param(HEADER + "\n" + GOOD + "\n2,b@example.com,B\n3,c@example.com,C,1,DE,2020-01-01,1,x\n",
                     (1, 2, 0), {2: "record: expected 7 fields, found 3",
                                 3: "record: expected 7 fields, found 8"}, id="ragged-rows"),
        pytest.param(HEADER + '\n1,a@example.com,"Lee, ""Ann""\nof Kent",30,DE,2020-01-31,1\n',
                     (1, 0, 0), {}, id="quotes-newlines-delimiters"),
        pytest.param((HEADER + "\r\n" + GOOD + "\r\n").encode(), (1, 0, 0), {}, id="crlf"),
        pytest.param(b"\xef\xbb\xbf" + (HEADER + "\n" + GOOD + "\n").encode(), (1, 0, 0), {},
                     id="utf8-bom"),
        pytest.param(HEADER + "\n" + GOOD + "\n2,b@example.com,B\x00ob,30,DE,2020-01-31,1\n",
                     (1, 1, 0), {2: "name: contains a NUL byte (\\x00)"}, id="nul-byte"),
        pytest.param(HEADER + "\n" + GOOD + "\n2,b@example.com," + "x" * 1_000_000 + ",30,DE,2020-01-31,1\n",
                     (1, 1, 0), {2: "name: String should have at most 200 characters (got '"
                                    + "x" * 59 + "... (1,000,000 characters))"}, id="1mb-field"),
        pytest.param(HEADER + '\n1,a@example.com,A,30,DE,2020-01-31,"1,234.50"\n'
                     '2,b@example.com,B,30,DE,2020-01-31,"12,5"\n',
                     (0, 2, 0), {1: "balance: Input should be a valid number, unable to parse string as a number (got '1,234.50')",
                                 2: "balance: Input should be a valid number, unable to parse string as a number (got '12,5')"},
                     id="thousands-separator-and-comma-decimal"),
        pytest.param(HEADER + "\n1,a@example.com,A,30,DE,2020-01-31,1\n"
                     "2,b@example.com,B,30,DE,2020-01-31T00:00:00,1\n"
                     "3,c@example.com,C,30,DE,2020/01/31,1\n"
                     "4,d@example.com,D,30,DE,31.01.2020,1\n",
                     (2, 2, 0), {3: "signup_date: Input should be a valid date or datetime, invalid date separator, expected `-` (got '2020/01/31')",
                                 4: "signup_date: Input should be a valid date or datetime, invalid character in year (got '31.01.2020')"},
                     id="dates-in-several-formats"),
    ],
)
def test_bad_records_are_rejected_one_by_one(tmp_path, sqlite_url, content, counts, errors):
    summary, found = import_core(write(tmp_path, "in.csv", content), sqlite_url)
    assert (summary["success"], summary["failed"], summary["ignored"]) == counts
    assert summary["status"] == "completed"
    assert found == errors
    assert loaded(sqlite_url) == counts[0]


def test_jsonl_with_one_invalid_line(tmp_path, sqlite_url):
    good = {"id": 1, "email": "a@example.com", "name": "A", "age": 30, "country": "DE",
            "signup_date": "2020-01-31", "balance": 1.5}
    content = json.dumps(good) + "\n{\"id\": 2, oops}\n" + json.dumps({**good, "id": 3}) + "\n"
    summary, found = import_core(write(tmp_path, "in.jsonl", content), sqlite_url)
    assert (summary["success"], summary["failed"]) == (2, 1)
    assert found[2].startswith("record: line 2: invalid JSON: Expecting property name")


def test_excel_with_several_sheets_and_merged_cells(tmp_path, sqlite_url):
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "users"
    sheet.append(HEADER.split(","))
    sheet.append([1, "a@example.com", "Ann", 30, "DE", dt.date(2020, 1, 31), 1.5])
    sheet.append([2, "b@example.com", "Bob", 31, "FR", dt.date(2020, 2, 1), 2])
    sheet.append([3, "c@example.com", "Cy", 32, None, dt.date(2020, 2, 2), 3])
    sheet.merge_cells("E2:E4")  # country merged over three rows: only E2 keeps its value
    book.create_sheet("notes").append(["not", "users"])
    path = tmp_path / "book.xlsx"
    book.save(path)
    summary, found = import_core(path, sqlite_url)
    assert (summary["success"], summary["failed"]) == (1, 2)
    assert found == {2: "country: Field required", 3: "country: Field required"}
    other, _ = import_core(path, f"sqlite:///{tmp_path / 'notes.db'}", sheet="users")
    assert other["success"] == 1
    with pytest.raises(SourceError, match=r"no sheet 'nope' \(sheets: users, notes\)"):
        import_core(path, f"sqlite:///{tmp_path / 'x.db'}", sheet="nope")
