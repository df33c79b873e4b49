"""`batchyard profile`: a batch's quality profile, from the ledger (it only reads)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from batchyard.cli.common import DEFAULT_DB, DbOption, JsonOption, fail, resolve_db
from batchyard.errors import BatchyardError


def register(app: typer.Typer) -> None:
    app.command()(profile)


def profile(
    batch_id: Annotated[str, typer.Argument(help="The batch.")],
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """A batch's quality profile per column: nulls, distinct values, minimum and maximum, top
    values or a histogram, and rejects (markdown, or --json)."""
    from batchyard.engines import safe_url
    from batchyard.ingest.summary import read_batch, read_ledger
    from batchyard.quality.report import batch_profile, render_profile

    try:
        with read_ledger(resolve_db(db)) as connection:
            batch = read_batch(connection, batch_id)
            found = batch_profile(connection, batch_id) if batch else None
    except BatchyardError as exc:
        fail(str(exc))
    if batch is None:
        fail(f"no batch {batch_id!r} in {safe_url(db)}")
    if found is None:
        fail(f"batch {batch_id} has no profile: no chunk of it committed (or it ran before "
             "batchyard kept profiles)")
    if as_json:
        typer.echo(json.dumps(found, default=str))
        return
    sys.stdout.write(render_profile(found, batch_id, batch["target_table"]))
