"""The one table between the error tree (katib.errors) and HTTP status codes, both ways.

Bodies of error responses are JSON: `{"detail": message, "error": class name,
"retryable": bool}`; for an invalid spec (422) `detail` is the list of problems
`[{"path", "message", "line"}]`. The client (katib.sdk.http_client) reads the class
name first, the status code second, so 409 tells AlreadyExists from Conflict.

This module imports no web framework: the SDK client uses the same table.
"""

from __future__ import annotations

from typing import Any

from katib import errors

# Ordered: the first matching class wins, so subclasses come before their bases.
TO_HTTP: list[tuple[type[errors.KatibError], int]] = [
    (errors.InvalidSpecError, 422),
    (errors.InvalidArgumentError, 400),
    (errors.NotFoundError, 404),
    (errors.AlreadyExistsError, 409),
    (errors.ConflictError, 409),
    (errors.UnavailableError, 503),
    (errors.WaitTimeoutError, 504),
    (errors.DeadlineExceededError, 504),
    (errors.ExperimentFailedError, 409),
    (errors.SearchSpaceExhaustedError, 409),
    (errors.StorageError, 500),
    (errors.ExecutorError, 500),
    (errors.InternalError, 500),
    (errors.KatibError, 500),
]

#: Status -> class when the body does not name one (e.g. a proxy answered).
FROM_HTTP: dict[int, type[errors.KatibError]] = {
    400: errors.InvalidArgumentError,
    401: errors.InvalidArgumentError,
    403: errors.InvalidArgumentError,
    404: errors.NotFoundError,
    409: errors.ConflictError,
    422: errors.InvalidSpecError,
    502: errors.UnavailableError,
    503: errors.UnavailableError,
    504: errors.DeadlineExceededError,
}

_BY_NAME: dict[str, type[errors.KatibError]] = {cls.__name__: cls for cls, _ in TO_HTTP}


def http_status_for(exc: BaseException) -> int:
    for cls, code in TO_HTTP:
        if isinstance(exc, cls):
            return code
    return 500


def problems_body(problems: list[errors.Problem]) -> list[dict[str, Any]]:
    return [{"path": p.path, "message": p.message, "line": p.line} for p in problems]


def error_body(exc: errors.KatibError) -> dict[str, Any]:
    """The JSON body of an error response for `exc`."""
    detail: Any = str(exc)
    if isinstance(exc, errors.InvalidSpecError):
        detail = problems_body(exc.problems)
    return {"detail": detail, "error": type(exc).__name__, "retryable": exc.retryable}


def error_from_response(status: int, body: Any, what: str) -> errors.KatibError:
    """The error a response stands for; `what` (e.g. 'GET /api/v1/...') prefixes the message."""
    name = body.get("error") if isinstance(body, dict) else None
    cls = _BY_NAME.get(name or "") or FROM_HTTP.get(status)
    if cls is None:
        cls = errors.UnavailableError if status >= 500 else errors.KatibError
    detail = body.get("detail") if isinstance(body, dict) else body
    if cls is errors.InvalidSpecError or (status == 422 and isinstance(detail, list)):
        problems = [
            errors.Problem(
                path=str(item.get("path", "")),
                message=str(item.get("message", item.get("msg", ""))),
                line=item.get("line"),
            )
            for item in (detail if isinstance(detail, list) else [])
            if isinstance(item, dict)
        ] or [errors.Problem("<request>", str(detail))]
        return errors.InvalidSpecError(problems, source=what)
    if status == 401:
        return cls(f"{what}: unauthorized: {detail} (set KATIB_TOKEN or pass the token)")
    return cls(f"{what}: {detail}")
