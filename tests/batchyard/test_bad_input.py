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


# What a hostile or careless file does (issue 15). Large files are written as a stream (or
# sparse) and deleted by the test.

def test_a_header_of_10000_columns_loads_and_names_a_few_of_the_extras(tmp_path, sqlite_url):
    extra = [f"c{i}" for i in range(10_000 - 7)]
    path = write(tmp_path, "wide.csv", HEADER + "," + ",".join(extra) + "\n"
                 + GOOD + "," + ",".join("x" for _ in extra) + "\n")
    summary, found = import_core(path, sqlite_url)
    assert (summary["total"], summary["success"], found) == (1, 1, {})
    from batchyard.ingest.spool import spool_source
    from batchyard.readers import SourceOptions
    from batchyard.schemas import load_schema

    plan = spool_source(path, SourceOptions(), load_schema("users"), tmp_path / "spool", iter([10]))
    assert plan.warnings == [f"extra column(s) ignored: {', '.join(extra[:20])} and 9,973 more"]


def test_a_field_of_100_mb_is_refused_in_one_line(tmp_path, sqlite_url):
    path = tmp_path / "big.csv"
    try:
        with path.open("w") as handle:
            handle.write(HEADER + "\n" + GOOD + "\n2,b@example.com,")
            block = "y" * (1 << 20)
            for _ in range(100):
                handle.write(block)
            handle.write(",30,DE,2020-01-31,1\n3,c@example.com,C,30,DE,2020-01-31,1\n")
        with pytest.raises(SourceError) as caught:
            import_core(path, sqlite_url)
    finally:
        path.unlink()
    assert str(caught.value) == (f"{path}: near record 2: a record longer than 4 MB (or a quote "
                                 "left open); batchyard reads CSV records of up to that size")
    assert loaded(sqlite_url) == 0


def test_a_nul_in_the_header_is_refused_in_one_line(tmp_path, sqlite_url):
    path = write(tmp_path, "nul.csv", HEADER.replace("name", "na\x00me") + "\n" + GOOD + "\n")
    with pytest.raises(SourceError) as caught:
        import_core(path, sqlite_url)
    assert str(caught.value) == (f"{path}: line 1: header column 3 ('na\\x00me') contains a "
                                 "control character (a NUL byte?): not a column name")


def test_mixed_line_endings_load_every_record(tmp_path, sqlite_url):
    content = (HEADER + "\r\n" + GOOD + "\n2,b@example.com,B,30,DE,2020-01-31,1\r"
               "3,c@example.com,C,30,DE,2020-01-31,1\r\n4,d@example.com,D,30,DE,2020-01-31,1")
    summary, found = import_core(write(tmp_path, "mixed.csv", content), sqlite_url)
    assert (summary["total"], summary["success"], found) == (4, 4, {})
    with session(sqlite_url) as current:
        assert current.sql("select id, name from users order by id").rows == [
            (1, "Ann"), (2, "B"), (3, "C"), (4, "D")]


@pytest.mark.parametrize("change", ["append", "truncate", "replace"])
def test_a_file_that_changes_while_it_is_read_is_refused(tmp_path, sqlite_url, monkeypatch,
                                                          change):
    import threading
    import time

    from batchyard import faults

    lines = [HEADER] + [f"{i},u{i}@example.com,U,30,DE,2020-01-31,1" for i in range(1, 301)]
    path = write(tmp_path, "growing.csv", "\n".join(lines) + "\n")
    marker = tmp_path / "held"
    monkeypatch.setenv("BATCHYARD_PAUSE_AT", "chunk-spooled[0]:1")
    monkeypatch.setenv("BATCHYARD_PAUSE_FILE", str(marker))
    faults._hits.clear()
    caught: list = []

    def run() -> None:
        try:
            import_core(path, sqlite_url, chunk_size=100)
        except SourceError as exc:
            caught.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    while not marker.exists():
        assert worker.is_alive()
        time.sleep(0.02)
    size = path.stat().st_size
    if change == "append":
        with path.open("a") as handle:
            handle.write("301,late@example.com,L,30,DE,2020-01-31,1\n")
    elif change == "truncate":
        with path.open("r+") as handle:
            handle.truncate(size // 2)
    else:
        replacement = tmp_path / "other.csv"
        replacement.write_text("\n".join(lines[:51]) + "\n")
        replacement.replace(path)
    marker.unlink()
    worker.join(60)
    assert len(caught) == 1
    message = str(caught[0])
    assert message.startswith(f"{path}: the file changed while it was read")
    assert message.endswith("nothing was loaded from it: import it again once it is complete")
    assert loaded(sqlite_url) == 0


def test_a_symlink_loop_and_a_directory_are_refused(tmp_path, sqlite_url):
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    with pytest.raises(SourceError) as caught:
        import_core(loop, sqlite_url)
    assert str(caught.value) == f"{loop}: a loop of symbolic links, not a file"
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    with pytest.raises(SourceError) as caught:
        import_core(folder, sqlite_url)
    assert str(caught.value) == f"{folder}: is a directory, not a file"


def _nested(depth: int, leaf) -> dict:
    value = leaf
    for _ in range(depth):
        value = {"k": value}
    return value


def test_json_nested_30_levels_loads_and_deeper_than_python_fails_the_record(tmp_path,
                                                                              sqlite_url):
    good = {"id": 1, "email": "a@example.com", "name": "A", "country": "DE",
            "signup_date": "2020-01-31"}
    lines = [json.dumps({**good, "meta": _nested(30, "x")}),  # an extra field: ignored
             json.dumps({**good, "id": 2, "name": _nested(30, "x")}),  # a name that is no text
             json.dumps({**good, "id": 3})[:-1] + ', "meta": ' + "[" * 100_000 + "]" * 100_000 + "}"]
    summary, found = import_core(write(tmp_path, "nested.jsonl", "\n".join(lines) + "\n"),
                                 sqlite_url)
    assert (summary["total"], summary["success"], summary["failed"]) == (3, 1, 2)
    assert found[2].startswith("name: String should have at most 200 characters")
    assert found[3] == "record: line 3: invalid JSON: nested too deeply (over about 1,000 levels)"


def test_a_json_line_of_1_gb_is_refused_by_the_limit_without_reading_it(tmp_path, sqlite_url):
    import resource

    path = tmp_path / "huge.jsonl"
    try:
        with path.open("wb") as handle:  # sparse: a text start, then a hole up to 1 GB
            handle.write(b'{"id": 1, "email": "a@example.com", "name": "' + b"n" * 100_000)
            handle.seek(1 << 30)
            handle.write(b'"}\n')
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(SourceError) as caught:
            import_core(path, sqlite_url)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    finally:
        path.unlink()
    assert str(caught.value) == (f"{path}: line 1: longer than 67,108,864 characters, the limit "
                                 "of one record (BATCHYARD_MAX_RECORD_BYTES); nothing loaded")
    assert grown < 400 << 10  # KB: the line's first 64 MB at most, never the 1 GB
    assert loaded(sqlite_url) == 0


def _zip_bomb(path: Path, sheet_bytes: int) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            block = bytes(8 << 20)
            for _ in range(sheet_bytes // len(block)):
                sheet.write(block)
    return path


def test_an_xlsx_zip_bomb_is_refused_by_its_compression_ratio(tmp_path, sqlite_url):
    path = _zip_bomb(tmp_path / "bomb.xlsx", 256 << 20)
    with pytest.raises(SourceError) as caught:
        import_core(path, sqlite_url)
    message = str(caught.value)
    assert message.startswith(f"{path}: xl/worksheets/sheet1.xml unpacks to 256 MB from ")
    assert message.endswith("refused as a ZIP bomb (spreadsheets compress under 200 to 1)")
    assert loaded(sqlite_url) == 0


def test_an_xlsx_larger_than_the_size_limit_is_refused(tmp_path, sqlite_url, monkeypatch):
    monkeypatch.setenv("BATCHYARD_XLSX_MAX_BYTES", str(16 << 20))
    path = _zip_bomb(tmp_path / "large.xlsx", 32 << 20)
    with pytest.raises(SourceError) as caught:
        import_core(path, sqlite_url)
    assert str(caught.value) == (f"{path}: its parts unpack to 32 MB, over the limit of 16 MB "
                                 "(BATCHYARD_XLSX_MAX_BYTES)")


def test_header_names_that_are_sql_or_carry_quotes_are_only_names(tmp_path, sqlite_url):
    content = (HEADER + ',"na""me","select * from users","x; drop table users;--"\n'
               + GOOD + ",1,2,3\n")
    summary, found = import_core(write(tmp_path, "quoted.csv", content), sqlite_url)
    assert (summary["total"], summary["success"], found) == (1, 1, {})
    with session(sqlite_url) as current:
        assert current.sql("select id, name from users").rows == [(1, "Ann")]


def test_columns_and_a_table_named_with_sql_keywords_load(tmp_path, db_url):
    content = ("select,order,group,user,table,limit\n1,first,g,u,7,1.5\n"
               "2,second,,,,\n1,again,g,u,7,1.5\n")
    path = write(tmp_path, "keywords.csv", content)
    summary = import_without_prefect(path, db_url, schema="tests.batchyard.bad_input_schemas:Keywords")
    assert (summary["total"], summary["success"], summary["ignored"]) == (3, 2, 1)
    q = "`" if db_url.startswith("mariadb") else '"'
    with session(db_url) as current:
        assert current.sql(f"select {q}select{q}, {q}order{q}, {q}group{q}, {q}user{q}, "
                           f"{q}table{q}, {q}limit{q} from {q}order{q} order by 1").rows == [
            (1, "first", "g", "u", 7, 1.5), (2, "second", None, None, None, None)]


def test_a_table_name_with_a_quote_is_refused(tmp_path, sqlite_url):
    from batchyard.errors import ConfigurationError
    from batchyard.ingest.lifecycle import preflight

    path = write(tmp_path, "in.csv", HEADER + "\n" + GOOD + "\n")
    with pytest.raises(ConfigurationError) as caught:
        preflight(str(path), "users", sqlite_url, 'users"; drop table x;--', None, None, ",",
                  "utf-8", None)
    assert str(caught.value) == ("invalid table name 'users\"; drop table x;--': use letters, "
                                 "digits and underscores, starting with a letter")
