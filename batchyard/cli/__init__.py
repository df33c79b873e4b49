"""The `batchyard` command: everything a user does from a terminal.

`app` is the typer application with every command group registered; `main()` is the console
script. The commands live in one module per group (`batches`, `samples`, `stream`, `etl`,
`server`);
what they share is in `common`. None of them imports this package or another command module.
"""

from __future__ import annotations

import atexit
import gc
import sys

import typer

from batchyard import local_server, temporary_server
from batchyard.cli import batches, etl, quality, samples, schemas, server, stream
from batchyard.cli.common import EXIT_ERROR, prefect_environment
from batchyard.errors import BatchyardError


def _flags_without_a_type() -> None:
    """typer 0.29 labels every option with its type in `--help`, flags included (`--json
    <bool>`); a flag takes no value, so it is shown without one."""
    from typer.core import TyperOption

    typed = TyperOption.display_type_rich
    if getattr(typed, "batchyard", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else typed(self, ctx)

    display_type_rich.batchyard = True
    TyperOption.display_type_rich = display_type_rich


_flags_without_a_type()
app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Reliable bulk record imports as Prefect flows.")

# The order `batchyard --help` lists them in: commands first, then the `stream` group.
batches.register(app)
samples.register(app)
quality.register(app)
schemas.register(app)
stream.register(app)
etl.register(app)
server.register(app)


def main() -> None:
    """Run the `batchyard` command on `sys.argv`.

    A BatchyardError that reaches here is printed as one `error:` line on stderr and the
    process exits with EXIT_ERROR; other exit statuses are the commands' own."""
    # Skip the collector's walk over every object at exit (about 1 s with Prefect loaded);
    # registered first, so it runs last, after Prefect's own exit hooks.
    atexit.register(gc.freeze)
    prefect_environment()  # before anything imports Prefect: its settings are read at import
    try:
        local_server.use_early(sys.argv)  # a flow command uses the local server (or starts it)
        temporary_server.start_early()  # else, ephemeral mode: a temporary server
        app()
    except BatchyardError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
