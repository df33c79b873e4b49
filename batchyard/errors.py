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


def is_retryable(exc: BaseException) -> bool:
    """Transient I/O problems are retried; anything batchyard itself raised is not."""
    return not isinstance(exc, BatchyardError | ValueError | TypeError | KeyError)


_TIMEOUT_SIGNS = ("database is locked", "canceling statement due to statement timeout",
                  "lock timeout", "timed out")


def error_code(exc: BaseException) -> str:
    """The code a failure is recorded with: waits that ran out are TIMEOUT_ERROR."""
    if isinstance(exc, BatchyardError):
        return exc.code
    if isinstance(exc, TimeoutError) or any(s in str(exc).lower() for s in _TIMEOUT_SIGNS):
        return TIMEOUT_ERROR
    return PROCESSING_ERROR
