"""The web UI: HTML pages at / and /ui/..., static files at /ui/static/, importance as JSON.

Pages are small server-rendered shells (every substituted value is HTML-escaped) whose
scripts read the REST API (/api/v1) and build the DOM with textContent only, so names
and values from users never become markup. plotly.js is served from the installed
plotly package: nothing is fetched from the network, nothing is built at install time.
Auth is the app's TokenMiddleware (every path but /ui/login); the login page here
checks the token and stores it in an HttpOnly, SameSite=Strict cookie.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import importlib.resources
import logging
import mimetypes
import threading
import urllib.parse
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastapi
from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from katib import errors
from katib.api.models import Experiment, Trial

log = logging.getLogger(__name__)

router = fastapi.APIRouter(include_in_schema=False)

STATIC_DIR = Path(__file__).with_name("static")
TEMPLATE_DIR = Path(__file__).with_name("templates")
PLOTLY_NAME = "plotly.min.js"
COOKIE_NAME = "katib_token"  # the name katib.server.auth reads
#: Scripts only from this origin (no inline script, so injected markup cannot run).
#: plotly's parcoords compiles WebGL shaders with `new Function` (regl), hence 'unsafe-eval'.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


# --- static files -------------------------------------------------------------------


@dataclass(frozen=True)
class StaticFile:
    """One file's bytes, pre-compressed once (plotly.min.js is 4.8 MB, 1.4 MB gzipped)."""

    body: bytes
    gzipped: bytes
    etag: str
    media_type: str


def plotly_js_path() -> Path:
    """plotly.min.js inside the installed plotly package."""
    path = Path(str(importlib.resources.files("plotly") / "package_data" / PLOTLY_NAME))
    if not path.is_file():  # pragma: no cover - a broken plotly install
        raise errors.NotFoundError(f"{PLOTLY_NAME} is missing from the plotly package ({path})")
    return path


@cache
def plotly_version() -> str:
    import plotly

    return str(plotly.__version__)


_static_lock = threading.Lock()
_static_cache: dict[str, tuple[float, StaticFile]] = {}


def _static_path(name: str) -> Path | None:
    if name == PLOTLY_NAME:
        return plotly_js_path()
    if not name or "\\" in name or name.startswith("/"):
        return None
    candidate = (STATIC_DIR / name).resolve()
    root = STATIC_DIR.resolve()
    if root not in candidate.parents or not candidate.is_file():
        return None
    return candidate


def load_static(name: str) -> StaticFile | None:
    """The file under static/ (or plotly.min.js), cached until its mtime changes."""
    path = _static_path(name)
    if path is None:
        return None
    mtime = path.stat().st_mtime
    with _static_lock:
        hit = _static_cache.get(name)
        if hit is not None and hit[0] == mtime:
            return hit[1]
    body = path.read_bytes()
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if path.suffix == ".js":
        media_type = "text/javascript"
    elif path.suffix in (".yaml", ".yml"):
        media_type = "text/plain"
    if media_type.startswith("text/"):
        media_type += "; charset=utf-8"
    entry = StaticFile(
        body=body,
        gzipped=gzip.compress(body, compresslevel=6, mtime=0),
        etag='"' + hashlib.sha256(body).hexdigest()[:20] + '"',
        media_type=media_type,
    )
    with _static_lock:
        _static_cache[name] = (mtime, entry)
    return entry


@router.get("/ui/static/{name:path}")
def static_file(name: str, request: Request) -> Response:
    """A static file, gzipped when the client accepts it; ETag revalidation."""
    entry = load_static(name)
    if entry is None:
        return JSONResponse(
            {"detail": f"no static file {name!r}", "error": "NotFoundError", "retryable": False},
            status_code=404,
        )
    versioned = name == PLOTLY_NAME and request.query_params.get("v") == plotly_version()
    headers = {
        "ETag": entry.etag,
        "Cache-Control": "public, max-age=31536000, immutable" if versioned else "no-cache",
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == entry.etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        headers["Content-Encoding"] = "gzip"
        return Response(entry.gzipped, media_type=entry.media_type, headers=headers)
    return Response(entry.body, media_type=entry.media_type, headers=headers)


# --- pages --------------------------------------------------------------------------


@cache
def _template(name: str) -> str:
    return (TEMPLATE_DIR / f"{name}.html").read_text(encoding="utf-8")


def _asset(name: str) -> str:
    """A static URL carrying a content version, so browsers refetch after an upgrade."""
    if name == PLOTLY_NAME:
        return f"/ui/static/{PLOTLY_NAME}?v={html.escape(plotly_version(), quote=True)}"
    entry = load_static(name)
    version = entry.etag.strip('"')[:10] if entry else "0"
    return f"/ui/static/{name}?v={version}"


def render_page(
    page: str,
    title: str,
    body: str | None = None,
    *,
    plots: bool = False,
    status_code: int = 200,
    nav: bool = True,
) -> HTMLResponse:
    """The layout around a page body. `title` is escaped here; `body` is trusted markup."""
    scripts = []
    if plots:
        scripts.append(_asset(PLOTLY_NAME))
    if page != "login":
        scripts += [_asset("common.js"), _asset(f"{page}.js")]
    if page == "login":  # before sign-in, static files are behind the token: inline the CSS
        css = (STATIC_DIR / "style.css").read_text(encoding="utf-8")
        stylesheet = f"<style>{css}</style>"
    else:
        stylesheet = f'<link rel="stylesheet" href="{_asset("style.css")}">'
    script_tags = "\n".join(f'<script src="{src}" defer></script>' for src in scripts)
    links = (
        '<nav><a href="/">Experiments</a><a href="/ui/create">Create</a></nav>'
        '<span class="conn" id="conn"></span>'
        if nav
        else ""
    )
    markup = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · Katib</title>
{stylesheet}
{"" if page == "login" else f'<link rel="icon" href="{_asset("favicon.svg")}">'}
{script_tags}
</head>
<body data-page="{html.escape(page, quote=True)}">
<header class="topbar"><a class="brand" href="/">Katib <span>local</span></a>{links}</header>
<main>
{_template(page) if body is None else body}
</main>
</body>
</html>
"""
    return HTMLResponse(markup, status_code=status_code, headers=SECURITY_HEADERS)


@router.get("/", response_class=HTMLResponse)
def experiments_page() -> HTMLResponse:
    """Experiments list (live)."""
    return render_page("list", "Experiments")


@router.get("/ui", response_class=HTMLResponse)
@router.get("/ui/", response_class=HTMLResponse)
def ui_root() -> RedirectResponse:
    return RedirectResponse("/", status_code=307)


@router.get("/ui/experiments/{namespace}/{name}", response_class=HTMLResponse)
def experiment_page(namespace: str, name: str) -> HTMLResponse:
    """One experiment: summary, plots, trials, YAML, conditions."""
    return render_page("experiment", f"{name} · Experiment", plots=True)


@router.get("/ui/trials/{namespace}/{name}", response_class=HTMLResponse)
def trial_page(namespace: str, name: str) -> HTMLResponse:
    """One trial: parameters, metric curves, logs."""
    return render_page("trial", f"{name} · Trial", plots=True)


@router.get("/ui/create", response_class=HTMLResponse)
def create_page() -> HTMLResponse:
    """Paste or upload YAML, validated inline before submitting."""
    return render_page("create", "Create experiment")


# --- login --------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only a path on this server (no scheme, no //host): no open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _login_body(target: str, message: str | None) -> str:
    notice = (
        f'<div class="notice error" id="login-error">{html.escape(message)}</div>'
        if message
        else ""
    )
    return f"""<div class="panel login">
<h1>Sign in</h1>
<p class="muted">This server needs its access token (from <code>--token-file</code> or
<code>KATIB_TOKEN</code>). It is kept in a cookie for this browser.</p>
{notice}
<form method="post" action="/ui/login">
<input type="hidden" name="next" value="{html.escape(target, quote=True)}">
<input type="password" name="token" id="token" placeholder="Token" aria-label="Token"
 autocomplete="current-password" autofocus required>
<button type="submit" class="primary" id="sign-in">Sign in</button>
</form>
</div>"""


def _expected_token(request: Request) -> str | None:
    token: str | None = getattr(request.app.state, "token", None)
    return token


@router.get("/ui/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> Response:
    """The token form (reachable without the token)."""
    if _expected_token(request) is None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return render_page("login", "Sign in", _login_body(_safe_next(next), None), nav=False)


@router.post("/ui/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Checks the token; on success sets the cookie and goes back where the user was."""
    from katib.server.grpc_auth import token_matches

    # A urlencoded form, parsed here: FastAPI's Form() would need python-multipart.
    fields = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (fields.get("token") or [""])[0]
    next = (fields.get("next") or ["/"])[0]
    expected = _expected_token(request)
    target = _safe_next(next)
    if expected is not None and not token_matches(expected, token.strip()):
        body = _login_body(target, "That token is not right.")
        return render_page("login", "Sign in", body, status_code=401, nav=False)
    response = RedirectResponse(target, status_code=303)
    if expected is not None:
        response.set_cookie(
            COOKIE_NAME,
            expected,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
    return response


@router.get("/ui/logout")
def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


# --- parameter importance (JSON) ------------------------------------------------------

_importance_lock = threading.Lock()
_importance_cache: dict[tuple[str, str], tuple[Any, dict[str, Any]]] = {}


def _storage(request: Request) -> Any:
    return request.app.state.runtime.storage


def _signature(trials: list[Trial]) -> tuple[Any, ...]:
    return tuple(
        sorted(
            (t.name, t.condition.value, repr(t.status.observation))
            for t in trials
            if t.is_completed
        )
    )


def _unavailable(reason: str) -> dict[str, Any]:
    return {"available": False, "importances": {}, "reason": reason}


def importance_for(experiment: Experiment, trials: list[Trial]) -> dict[str, Any]:
    """{"available", "importances", "method", "reason"} for the experiment's finished trials."""
    objective = experiment.spec.objective
    metric = objective.objective_metric_name if objective else None
    kind = str(objective.type) if objective and objective.type else "minimize"
    if not metric:
        return _unavailable("the experiment has no objective metric")
    try:
        from katib.sdk.importance import param_importances
    except ImportError as exc:
        return _unavailable(f"importance is not installed ({exc})")
    try:
        scores = param_importances(trials, kind, metric, parameters=experiment.spec.parameters)
    except errors.KatibError as exc:
        return _unavailable(str(exc))
    except Exception as exc:  # a library failure must not break the page
        log.warning("importance of %s/%s failed: %r", experiment.namespace, experiment.name, exc)
        return _unavailable(f"importance failed: {exc}")
    return {"available": True, "importances": scores, "method": "fANOVA", "reason": None}


@router.get("/ui/api/namespaces/{namespace}/experiments/{name}/importance")
def importance(namespace: str, name: str, request: Request) -> dict[str, Any]:
    """Parameter importance (fANOVA over succeeded trials), cached until a trial finishes."""
    storage = _storage(request)
    experiment = storage.get_experiment(name, namespace)
    trials = storage.list_trials(name, namespace)
    signature = _signature(trials)
    key = (namespace, name)
    with _importance_lock:
        hit = _importance_cache.get(key)
    if hit is not None and hit[0] == signature:
        return hit[1]
    result = importance_for(experiment, trials)
    with _importance_lock:
        if len(_importance_cache) > 256:
            _importance_cache.clear()
        _importance_cache[key] = (signature, result)
    return result
