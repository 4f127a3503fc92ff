"""The FastAPI application: REST API under /api/v1, the web UI, errors and auth wired once.

`create_app(runtime, token=...)` builds it around a started Runtime (storage, DBManager,
suggestion services, executor); the reconcile loop is the server's business
(katib.server.main), not the app's, so tests can serve the API alone.
"""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from katib import errors
from katib.controller.runtime import Runtime
from katib.server.auth import TokenMiddleware
from katib.server.http_errors import error_body, http_status_for

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def server_version() -> str:
    try:
        return metadata.version("katib-local")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'maxTrialCount') -> 'maxTrialCount'; ('query', 'tail') -> 'query.tail'."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<request>"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.KatibError)
    async def katib_error(request: Request, exc: errors.KatibError) -> JSONResponse:
        status = http_status_for(exc)
        if status >= 500:
            log.warning("%s %s failed: %s", request.method, request.url.path, exc)
        return JSONResponse(error_body(exc), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"path": _field_path(e.get("loc", ())), "message": str(e.get("msg", "")), "line": None}
            for e in exc.errors()
        ]
        return JSONResponse(
            {"detail": problems, "error": "InvalidSpecError", "retryable": False},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = {401: "Unauthorized", 404: "NotFoundError", 405: "MethodNotAllowed"}.get(
            exc.status_code, "HTTPError"
        )
        return JSONResponse(
            {"detail": exc.detail, "error": name, "retryable": False},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )


def create_app(
    runtime: Runtime,
    *,
    token: str | None = None,
    db_manager_address: str | None = None,
    include_ui: bool = True,
) -> FastAPI:
    """The whole HTTP surface for `runtime`. `token` turns auth on for every route."""
    from katib.server import routes_experiments, routes_trials

    app = FastAPI(
        title="Katib server",
        version=server_version(),
        description="Experiments, trials and observations of a katib server (REST, JSON).",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.token = token
    app.state.db_manager_address = db_manager_address or runtime.db_manager_address
    app.add_middleware(TokenMiddleware, token_getter=lambda: app.state.token)
    _install_error_handlers(app)

    @app.get(f"{API_PREFIX}/health", tags=["server"])
    def health() -> dict[str, Any]:
        """Liveness, the version, and where trials report metrics (DBManager gRPC)."""
        return {
            "status": "ok",
            "version": server_version(),
            "dbManagerAddress": app.state.db_manager_address,
        }

    app.include_router(routes_experiments.router, prefix=API_PREFIX)
    app.include_router(routes_trials.router, prefix=API_PREFIX)
    if include_ui:
        try:
            from katib.server.ui import router as ui_router
        except Exception as exc:  # a broken UI must not take the API down with it
            log.warning("web UI not available: %s", exc)
        else:
            app.include_router(ui_router)
    return app


def runtime_of(request: Request) -> Runtime:
    """FastAPI dependency: the app's Runtime."""
    runtime: Runtime = request.app.state.runtime
    return runtime
