"""One tree of errors for the whole service.

Every error says whether retrying the same call can help (`retryable`). The
mapping to gRPC status codes, HTTP status codes and CLI exit codes lives in one
table each (katib.apis.grpc_errors, katib.cli.exit_codes); nothing else decides
how an error is presented.
"""

from __future__ import annotations

from dataclasses import dataclass


class KatibError(Exception):
    """Base of every error the service raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input, located by a field path (and a line when known)."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path} (line {self.line})" if self.line else self.path
        return f"{where}: {self.message}"


class InvalidSpecError(KatibError):
    """The Experiment (or Trial) spec is wrong; carries every problem found."""

    def __init__(self, problems: list[Problem], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        body = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{head}{len(self.problems)} problem(s) in the Experiment:\n{body}")


class InvalidArgumentError(KatibError, ValueError):
    """A request argument (not a whole spec) is wrong, e.g. an algorithm setting."""


class NotFoundError(KatibError):
    """The named experiment, trial or resource does not exist."""


class AlreadyExistsError(KatibError):
    """Creating something that already exists under that name."""


class ConflictError(KatibError):
    """Someone else holds what this call needs (e.g. another controller owns the experiment)."""

    retryable = True


class UnavailableError(KatibError):
    """A service (database, suggestion service, DBManager) cannot be reached right now."""

    retryable = True


class DeadlineExceededError(KatibError):
    """A call did not finish in time."""

    retryable = True


class WaitTimeoutError(DeadlineExceededError, TimeoutError):
    """An experiment did not reach the awaited condition in time (waiting again may help)."""


class ExperimentFailedError(KatibError, RuntimeError):
    """The experiment ended Failed while the caller waited for another condition."""


class SearchSpaceExhaustedError(KatibError):
    """The algorithm has no new point to suggest; the experiment ends, not as a failure."""


class StorageError(KatibError):
    """The database refused or failed an operation for a reason that is not transient."""


class ExecutorError(KatibError):
    """Launching or watching a trial failed."""


class InternalError(KatibError):
    """A bug: an invariant of the service did not hold."""
