"""The one table between the error tree and gRPC status codes (both directions)."""

from __future__ import annotations

import grpc

from katib import errors

# Ordered: the first matching class wins, so subclasses come before their bases.
TO_GRPC: list[tuple[type[errors.KatibError], grpc.StatusCode]] = [
    (errors.InvalidSpecError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (errors.ConflictError, grpc.StatusCode.ABORTED),
    (errors.UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.SearchSpaceExhaustedError, grpc.StatusCode.OUT_OF_RANGE),
    (errors.StorageError, grpc.StatusCode.INTERNAL),
    (errors.ExecutorError, grpc.StatusCode.INTERNAL),
    (errors.KatibError, grpc.StatusCode.UNKNOWN),
]

FROM_GRPC: dict[grpc.StatusCode, type[errors.KatibError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: errors.NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExistsError,
    grpc.StatusCode.ABORTED: errors.ConflictError,
    grpc.StatusCode.UNAVAILABLE: errors.UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceededError,
    grpc.StatusCode.OUT_OF_RANGE: errors.SearchSpaceExhaustedError,
}


def grpc_code_for(exc: BaseException) -> grpc.StatusCode:
    for cls, code in TO_GRPC:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def error_from_rpc(exc: grpc.RpcError, what: str) -> errors.KatibError:
    """Turn a failed call into our error; `what` names the call for the message."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    cls = FROM_GRPC.get(code, errors.KatibError)
    return cls(f"{what}: {details}")
