"""Binary files declared as text are refused from their first bytes, before a parser sees them,
in one line and without a traceback; text in UTF-16 or UTF-32 with a byte order mark is read."""

from __future__ import annotations

import gzip
import io
import os
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchyard.errors import SourceError
from tests.helpers import import_without_prefect, rows

HEADER = "id,email,name,age,country,signup_date,balance"
GOOD = "1,a@example.com,Ann,30,DE,2020-01-31,1.5"
RECORD = ('{"id": 1, "email": "a@example.com", "name": "Ann", "country": "DE", '
          '"signup_date": "2020-01-31"}\n')


def png() -> bytes:
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(4000)


def zip_of_text() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("users.csv", HEADER + "\n" + GOOD + "\n")
    return buffer.getvalue()


def parquet() -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": ["1"], "email": ["a@example.com"]}), buffer)
    return buffer.getvalue()


def noise() -> bytes:
    """Text for 100 bytes, then binary with no known signature."""
    return (HEADER + "\n" + GOOD + "\n" + "2" * 100)[:100].encode() + bytes(range(256)) * 40


@pytest.mark.parametrize(("name", "content", "message"), [
    ("image.csv", png(), "binary content at byte 0; expected CSV (it is a PNG image)"),
    ("archive.csv", zip_of_text(), "binary content at byte 0; expected CSV (it is a ZIP archive)"),
    ("data.csv", parquet(), "binary content at byte 0; expected CSV (it is a Parquet file)"),
    ("users.csv", gzip.compress((HEADER + "\n" + GOOD + "\n").encode()),
     "binary content at byte 0; expected CSV (it is gzip-compressed data)"),
    ("users.jsonl", gzip.compress(RECORD.encode()),
     "binary content at byte 0; expected JSON Lines (it is gzip-compressed data)"),
    ("noise.csv", noise(), "binary content at byte 100; expected CSV"),
    ("archive.xlsx", zip_of_text(), "a ZIP archive but not an Excel workbook (no xl/workbook.xml)"),
])
def test_binary_content_is_refused_before_parsing(tmp_path, sqlite_url, capfd, name, content,
                                                  message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceError) as caught:
        import_without_prefect(path, sqlite_url)
    prefix = "" if name.endswith(".xlsx") else "not a text file: "
    assert str(caught.value) == f"{path}: {prefix}{message}"
    assert capfd.readouterr().err == ""  # no "Exception ignored in ..." from a pyarrow callback


def test_an_undecodable_ragged_row_gives_one_line_and_no_traceback(tmp_path, sqlite_url, capfd):
    path = tmp_path / "latin.csv"
    path.write_bytes((HEADER + "\n" + GOOD + "\n2,b@example.com,Ren\xe9,30\n").encode("latin-1"))
    with pytest.raises(SourceError) as caught:
        import_without_prefect(path, sqlite_url)
    assert str(caught.value) == (
        f"{path}: a record with the wrong number of fields near the start is not valid utf-8; "
        "if the file is Latin-1 or Windows-1252, pass --encoding latin-1 or cp1252")
    assert capfd.readouterr().err == ""
    latin = import_without_prefect(path, f"sqlite:///{tmp_path / 'latin.db'}", encoding="latin-1")
    assert (latin["success"], latin["failed"]) == (1, 1)


@pytest.mark.parametrize(("name", "encoding"), [
    ("utf16.csv", "utf-16"), ("utf16be.csv", "utf-16-be"), ("utf32.csv", "utf-32"),
    ("utf16.jsonl", "utf-16"),
])
def test_unicode_text_with_a_byte_order_mark_is_read_not_refused(tmp_path, sqlite_url, name,
                                                                   encoding):
    text = RECORD if name.endswith(".jsonl") else HEADER + "\n" + GOOD + "\n"
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    (tmp_path / name).write_bytes(data)
    summary = import_without_prefect(tmp_path / name, sqlite_url)
    assert (summary["total"], summary["success"]) == (1, 1)
    assert rows(sqlite_url, "select id, email, name from users") == [(1, "a@example.com", "Ann")]
