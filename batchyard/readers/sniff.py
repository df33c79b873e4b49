"""What a file's first bytes say it is, before any parser sees it.

A text reader given binary data fails deep inside its parser (pyarrow's CSV reader hands the
invalid-row callback bytes that do not decode) and its message quotes the junk. So a file
declared as text is refused here, in one line, when it starts with a known binary signature
(PNG, ZIP, gzip, Parquet, ...) or when its first block holds control bytes no text has. A byte
order mark says which Unicode encoding the text is in, and that is what it is read as.
"""

from __future__ import annotations

import re

SAMPLE = 64 << 10
"""Bytes looked at: the first block, enough for any header and the first records."""

SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
    b"%PDF-": "a PDF document", b"PK\x03\x04": "a ZIP archive", b"PK\x05\x06": "a ZIP archive",
    b"\x1f\x8b": "gzip-compressed data", b"BZh": "bzip2-compressed data",
    b"\xfd7zXZ\x00": "xz-compressed data", b"(\xb5/\xfd": "zstd-compressed data",
    b"7z\xbc\xaf'\x1c": "a 7-Zip archive", b"PAR1": "a Parquet file", b"ARROW1": "an Arrow file",
    b"SQLite format 3\x00": "a SQLite database", b"\x7fELF": "an executable",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1": "an old Office (OLE) document",
}

BOMS = (  # longest first: UTF-32's little-endian mark starts with UTF-16's
    (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"),
)

TITLES = {"csv": "CSV", "jsonl": "JSON Lines"}

_BINARY = re.compile(rb"[\x00-\x08\x0e-\x19\x1c-\x1f]")
"""Control bytes that text does not hold (tab, newlines, form feed, DOS end-of-file and escape
are text)."""


def bom_encoding(head: bytes) -> str | None:
    """The Unicode encoding a byte order mark at the start names (None: none, or UTF-8's)."""
    return next((encoding for mark, encoding in BOMS if head.startswith(mark)), None)


def binary_content(sample: bytes, encoding: str) -> tuple[int, str] | None:
    """Where text declared in `encoding` turns out to be binary, and what it looks like:
    (0, 'a PNG image') for a known signature, (offset, '') for control bytes. None for text.

    A stray NUL in a field is a bad record, not a binary file: the sample must hold more than a
    handful of control bytes (over 1 % of it) to be refused."""
    for signature, kind in SIGNATURES.items():
        if sample.startswith(signature):
            return 0, kind
    if encoding.lower().replace("_", "-").startswith(("utf-16", "utf-32", "utf16", "utf32")):
        return None
    found = _BINARY.findall(sample)
    if len(found) > max(4, len(sample) // 100):
        return _BINARY.search(sample).start(), ""
    return None


def not_text_message(fmt: str, offset: int, kind: str) -> str:
    """`not a text file: binary content at byte 0; expected CSV (it is a PNG image)`."""
    looks = f" (it is {kind})" if kind else ""
    return (f"not a text file: binary content at byte {offset}; expected "
            f"{TITLES.get(fmt, fmt)}{looks}")
