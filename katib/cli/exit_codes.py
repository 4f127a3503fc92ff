"""The one table from errors to the `katib` command's exit codes."""

from __future__ import annotations

from katib import errors

OK = 0
EXPERIMENT_FAILED = 1
USAGE = 2

# Ordered: the first matching class wins, so subclasses come before their bases.
EXIT_CODES: list[tuple[type[errors.KatibError], int]] = [
    (errors.ExperimentFailedError, EXPERIMENT_FAILED),
    (errors.InvalidSpecError, 2),
    (errors.InvalidArgumentError, 2),
    (errors.NotFoundError, 3),
    (errors.AlreadyExistsError, 4),
    (errors.ConflictError, 4),
    (errors.UnavailableError, 5),
    (errors.DeadlineExceededError, 5),
    (errors.StorageError, 6),
    (errors.ExecutorError, 6),
    (errors.KatibError, 70),
]


def exit_code_for(exc: BaseException) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return 70
