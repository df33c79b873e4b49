"""Deterministic sample files: users (with a known share of deliberately bad rows) and orders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

COUNTRIES = np.array(["DE", "FR", "US", "GB", "ES", "IT", "NL", "PL", "JP", "BR", "IN", "CA"])
FIRST = np.array(["Ada", "Alan", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken",
                  "Frances", "Edsger", "Katherine", "Donald"])
LAST = np.array(["Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Ritchie", "Liskov",
                 "Thompson", "Allen", "Dijkstra", "Johnson", "Knuth"])

# Each bad kind corrupts one field of every 100th row, at a fixed offset, so counts are exact.
BAD_KINDS = {
    7: ("email", "not-an-email"),
    19: ("age", "200"),
    31: ("signup_date", "2021-02-30"),
    43: ("id", "x17"),
    59: ("name", None),  # missing: an empty unquoted cell
    71: ("country", "Germany"),
}
DUPLICATE_OFFSET = 83  # every 100th row at this offset repeats the previous row's id


def users_table(rows: int, start: int = 0, bad: bool = True, seed: int = 7) -> pa.Table:
    """Rows `start + 1 .. start + rows` of the sample (ids equal row numbers when clean)."""
    rng = np.random.default_rng(seed + start)
    ids = np.arange(start + 1, start + rows + 1)
    first = FIRST[rng.integers(0, len(FIRST), rows)]
    last = LAST[rng.integers(0, len(LAST), rows)]
    names = np.char.add(np.char.add(first, " "), last)
    emails = np.char.add(np.char.add(np.char.lower(first), "."), ids.astype(str))
    emails = np.char.add(emails, "@example.com")
    ages = rng.integers(18, 90, rows).astype(str)
    countries = COUNTRIES[rng.integers(0, len(COUNTRIES), rows)]
    days = rng.integers(0, 3650, rows)
    dates = (np.datetime64("2015-01-01") + days).astype(str)
    balances = np.round(rng.normal(250, 100, rows), 2).astype(str)
    columns = {
        "id": ids.astype(str).astype(object), "email": emails.astype(object),
        "name": names.astype(object), "age": ages.astype(object),
        "country": countries.astype(object), "signup_date": dates.astype(object),
        "balance": balances.astype(object),
    }
    if bad:
        position = (ids - 1) % 100
        for offset, (column, value) in BAD_KINDS.items():
            columns[column][position == offset] = value
        dup = np.flatnonzero(position == DUPLICATE_OFFSET)
        columns["id"][dup] = (ids[dup - 1]).astype(str)
    return pa.table({k: pa.array(v.tolist(), pa.string()) for k, v in columns.items()})


def expected_counts(rows: int) -> dict[str, int]:
    """What importing `users_table(rows)` must give: the bad kinds fail, duplicates are ignored."""
    position = np.arange(rows) % 100
    failed = int(sum((position == offset).sum() for offset in BAD_KINDS))
    ignored = int((position == DUPLICATE_OFFSET).sum())
    return {"total": rows, "failed": failed, "ignored": ignored,
            "success": rows - failed - ignored}


def write_users(path: Path, rows: int, bad: bool = True, seed: int = 7) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    step = 500_000
    writer = None
    for start in range(0, rows, step):
        table = users_table(min(step, rows - start), start, bad, seed)
        if path.suffix == ".parquet":
            writer = writer or pq.ParquetWriter(str(path), table.schema)
            writer.write_table(table)
        else:
            options = pcsv.WriteOptions(include_header=start == 0)
            with open(path, "ab" if start else "wb") as handle:
                pcsv.write_csv(table, handle, write_options=options)
    if writer:
        writer.close()
    return path
