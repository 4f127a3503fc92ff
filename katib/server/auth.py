"""Bearer-token auth for the REST API, the web UI and the DBManager gRPC endpoint.

One shared token (from `--token-file` or KATIB_TOKEN). When it is set, every HTTP
request needs `Authorization: Bearer <token>` or the `katib_token` cookie (set by the
UI's login page), except the paths in PUBLIC_PATHS (the login page itself, which
otherwise could never be reached). gRPC calls need the metadata
`authorization: Bearer <token>`. Comparisons are constant-time.

Enforcement is a middleware (`TokenMiddleware`) so nothing can be forgotten: static
files, the OpenAPI document and routes added later are all covered. `require_token`
is the same check as a FastAPI dependency, for routers that want it explicitly.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from katib.errors import InvalidArgumentError
from katib.server.grpc_auth import GrpcTokenInterceptor, bearer_of, token_matches

COOKIE_NAME = "katib_token"
TOKEN_ENV = "KATIB_TOKEN"
#: Reachable without the token: the UI's login page (it sets the cookie).
PUBLIC_PATHS = frozenset({"/ui/login"})
WWW_AUTHENTICATE = 'Bearer realm="katib"'

__all__ = [
    "COOKIE_NAME",
    "PUBLIC_PATHS",
    "GrpcTokenInterceptor",
    "TokenMiddleware",
    "bearer_of",
    "load_token",
    "require_token",
    "token_matches",
]


def load_token(token_file: Path | None, environ: dict[str, str] | None = None) -> str | None:
    """The configured token: the file's first line, else $KATIB_TOKEN, else None (no auth)."""
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InvalidArgumentError(
                f"--token-file {token_file}: cannot read it ({exc.strerror or exc})"
            ) from None
        token = text.splitlines()[0].strip() if text else ""
        if not token:
            raise InvalidArgumentError(f"--token-file {token_file}: the file is empty")
        return token
    value = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    return value or None


def request_authorized(expected: str | None, headers: Any, cookies: dict[str, str]) -> bool:
    """True when no token is configured, or the header or the cookie carries it."""
    if expected is None:
        return True
    if token_matches(expected, bearer_of(headers.get("authorization"))):
        return True
    return token_matches(expected, cookies.get(COOKIE_NAME))


def require_token(request: Request) -> None:
    """FastAPI dependency: 401 unless the request carries the app's token (or none is set)."""
    expected: str | None = getattr(request.app.state, "token", None)
    if not request_authorized(expected, request.headers, dict(request.cookies)):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong bearer token",
            headers={"WWW-Authenticate": WWW_AUTHENTICATE},
        )


def _unauthorized(scope: Scope, accept: str) -> Response:
    headers = {"WWW-Authenticate": WWW_AUTHENTICATE}
    path = scope.get("path", "")
    if "text/html" in accept and not path.startswith("/api/"):
        target = html.escape(f"/ui/login?next={path}", quote=True)
        body = (
            "<!doctype html><meta charset=utf-8><title>Katib: sign in</title>"
            f'<p>This server needs a token. <a href="{target}">Sign in</a></p>'
        )
        return HTMLResponse(body, status_code=401, headers=headers)
    return JSONResponse(
        {"detail": "missing or wrong bearer token", "error": "Unauthorized", "retryable": False},
        status_code=401,
        headers=headers,
    )


class TokenMiddleware:
    """ASGI middleware: every HTTP request but PUBLIC_PATHS needs the token."""

    def __init__(self, app: ASGIApp, token_getter: Callable[[], str | None]) -> None:
        self.app = app
        self.token_getter = token_getter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        expected = self.token_getter()
        if scope["type"] != "http" or expected is None or scope.get("path") in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        from starlette.requests import HTTPConnection

        conn = HTTPConnection(scope)
        if request_authorized(expected, conn.headers, dict(conn.cookies)):
            await self.app(scope, receive, send)
            return
        response = _unauthorized(scope, conn.headers.get("accept", ""))
        await response(scope, receive, send)
