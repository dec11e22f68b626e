"""The exception hierarchy of leo_verify.

Every error a user can cause derives from :class:`LeoError` *and* from the
matching built-in exception, so callers may catch either.  Each class carries
the process exit code the CLI uses for it; the table is documented in the
README ("Exit codes") and must stay in sync with :data:`EXIT_CODES`.
"""
from __future__ import annotations


class LeoError(Exception):
    """Root of every error leo_verify raises on purpose."""

    exit_code = 3


class UsageError(LeoError, ValueError):
    """Bad command-line usage or an invalid option value."""

    exit_code = 3


class _MessageOSError(OSError):
    """An OSError that is just a message: OSError's constructor would read
    positional args as (errno, strerror); keep the plain semantics of the
    other errors."""

    def __init__(self, message: str):
        super().__init__(message)

    def __str__(self) -> str:  # pragma: no cover - trivial
        return str(self.args[0]) if self.args else ""


class InputFileError(LeoError, _MessageOSError):
    """A file the user named does not exist, is not a file, or cannot be read/written."""

    exit_code = 4


class ModelFormatError(LeoError, ValueError):
    """A model file is truncated, malformed or inconsistent."""

    exit_code = 5


class UnsupportedOp(LeoError, NotImplementedError):
    """A model uses an operation leo_verify does not support (names node and op)."""

    exit_code = 6


class GraphError(LeoError, ValueError):
    """The network graph is invalid: lint failure (cycle, arity, shape, non-finite weight)."""

    exit_code = 7


class DomainError(LeoError, ValueError):
    """An input domain is invalid (lower > upper, NaN/inf, wrong length, bad syntax)."""

    exit_code = 8


class DataError(LeoError, ValueError):
    """Input data (points to evaluate, facts files) has the wrong shape or content."""

    exit_code = 9


class OutputError(LeoError, _MessageOSError):
    """An output cannot be written safely (would overwrite an input, folder locked)."""

    exit_code = 10


#: exit code -> meaning; the README table is generated from the same words.
EXIT_CODES = {
    0: "success (for `check`: proven equivalent)",
    1: "`check`: counterexample found",
    2: "`check`: unknown within the budget",
    3: "usage error (bad command line or option value)",
    4: "input/output file missing or unreadable",
    5: "malformed, truncated or inconsistent model file (incl. tensor shapes that do not fit)",
    6: "unsupported operation in the model",
    7: "invalid network graph (cycle, arity, size disagreement, non-finite weight)",
    8: "invalid input domain",
    9: "invalid input data (points, facts)",
    10: "output refused (would overwrite input, folder locked)",
    70: "internal error (a bug: please report it with the traceback)",
    141: "stdout closed (e.g. piped into `head`)",
    130: "interrupted (Ctrl-C); partial results are kept where documented",
}
