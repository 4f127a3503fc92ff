"""The DBManager endpoint's token check, and the token helpers shared with the HTTP side.

Kept apart from katib.server.auth so the runtime can install it without importing
the web framework.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import grpc


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison (no early exit on the first differing byte)."""
    if given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def bearer_of(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, else None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


class GrpcTokenInterceptor(grpc.ServerInterceptor):
    """Refuses gRPC calls without `authorization: Bearer <token>` (UNAUTHENTICATED).

    The health service stays open, so probes work without the secret.
    """

    OPEN_PREFIXES = ("/grpc.health.v1.Health/",)

    def __init__(self, token: str) -> None:
        self.token = token

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method or ""
        if method.startswith(self.OPEN_PREFIXES):
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        raw = metadata.get("authorization")
        given = bearer_of(raw if isinstance(raw, str) else None)
        if token_matches(self.token, given):
            return continuation(handler_call_details)
        return self._deny
