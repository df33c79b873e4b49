"""Error codes shared by the CLI, the ledger and the flows.

Every fatal problem is a `BatchyardError` whose message is one line that says what is wrong and
where, so the CLI can print it as it is, with no traceback.
"""

from __future__ import annotations

VALIDATION_ERROR = "VALIDATION_ERROR"
PROCESSING_ERROR = "PROCESSING_ERROR"
TIMEOUT_ERROR = "TIMEOUT_ERROR"
CONFIGURATION_ERROR = "CONFIGURATION_ERROR"


class BatchyardError(Exception):
    """A fatal, user-facing error: never retried, printed as one line."""

    code = PROCESSING_ERROR

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.args[0]


class ConfigurationError(BatchyardError):
    """Wrong options, unknown schema, unreachable database: retrying cannot help."""

    code = CONFIGURATION_ERROR


class SourceError(BatchyardError):
    """The input file cannot be read as declared: refused before anything is written."""

    code = VALIDATION_ERROR


class BatchStateError(BatchyardError):
    """The batch is in a state that forbids the requested action (already running, completed)."""

    code = CONFIGURATION_ERROR


class RunNotCompleted(BatchyardError):
    """A run that did its bookkeeping (ledger, summary, artifacts) and ended short of success:
    a batch `failed` or `cancelled`, a retry that left records failing, an ETL run with failed
    batches. Its flow run ends Failed (Cancelled when `cancelled`) with this as its result:
    the message names what, the counts and how to carry on; `summary` is what it reports."""

    def __init__(self, message: str, summary: dict, cancelled: bool = False):
        super().__init__(message)
        self.summary, self.cancelled = summary, cancelled

    def __reduce__(self):
        return type(self), (self.args[0], self.summary, self.cancelled)


class CarriedError(Exception):
    """An error whose own class cannot cross a process boundary (a database driver's exception
    with keyword-only arguments fails to unpickle): its class name (`kind`) and message, so that
    a process pool or a Dask cluster hands back what happened, not a TypeError of unpickling."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind

    def __reduce__(self):
        return type(self), (self.kind, self.args[0])


def portable(exc: Exception) -> Exception:
    """`exc` itself when it survives pickling, else a CarriedError that says the same."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return CarriedError(type(exc).__name__, str(exc))
    return exc


def kind_of(exc: BaseException) -> str:
    """The name of the error's class (the original one, for a CarriedError)."""
    return getattr(exc, "kind", None) or type(exc).__name__


class RecordsRefused(BatchyardError):
    """The database refused some records' values on a bulk load (MariaDB's strict mode, which a
    LOCAL load reports as warnings): never retried; the loader fails those records, each with
    the server's reason, and loads the others."""

    code = VALIDATION_ERROR

    def __init__(self, table: str, refused: dict[int, str]):
        first = min(refused)
        super().__init__(f"{table}: {len(refused)} record(s) refused, the first (record {first + 1} "
                         f"of the load): {refused[first]}")
        self.refused = refused
        """Index of each refused record in the rows loaded → the reason."""


_MYSQL_DATA_ERRORS = frozenset({
    1048,  # column cannot be null
    1264, 1690,  # out of range
    1265, 1406,  # truncated, too long
    1292, 1366, 1367, 1411,  # incorrect value for the column's type
    3819, 4025,  # CHECK constraint
})


def refused_by_mysql(exc: BaseException) -> bool:
    """A MariaDB or MySQL error about the data itself (strict mode): sending it again fails
    again. Only PyMySQL's errors are read, so the other engines' classification is untouched."""
    original = getattr(exc, "orig", exc)
    return (type(original).__module__.startswith("pymysql")
            and bool(original.args) and original.args[0] in _MYSQL_DATA_ERRORS)


def is_deadlock(exc: BaseException) -> bool:
    """The database rolled this transaction back to break a deadlock: running it again is
    safe and, with the other transaction committed, succeeds (MariaDB 1213, PostgreSQL 40P01)."""
    original = getattr(exc, "orig", exc)
    if type(original).__module__.startswith("pymysql"):
        return bool(original.args) and original.args[0] == 1213
    return getattr(original, "sqlstate", None) == "40P01"


def is_retryable(exc: BaseException) -> bool:
    """Transient I/O problems are retried (a lost connection, a lock wait timeout, a deadlock);
    anything batchyard itself raised is not, nor a value MariaDB refuses."""
    return not (isinstance(exc, BatchyardError | ValueError | TypeError | KeyError)
                or refused_by_mysql(exc))


_TIMEOUT_SIGNS = ("database is locked", "canceling statement due to statement timeout",
                  "lock timeout", "lock wait timeout exceeded", "timed out")


def error_code(exc: BaseException) -> str:
    """The code a failure is recorded with: waits that ran out are TIMEOUT_ERROR."""
    if isinstance(exc, BatchyardError):
        return exc.code
    if refused_by_mysql(exc):
        return VALIDATION_ERROR
    if isinstance(exc, TimeoutError) or any(s in str(exc).lower() for s in _TIMEOUT_SIGNS):
        return TIMEOUT_ERROR
    return PROCESSING_ERROR
