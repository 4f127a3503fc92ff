"""A thin client of the `katib server` REST API: one method per route, parsed JSON back.

Failures raise the katib.errors tree, decoded from the response by the one table in
katib.server.http_errors (a 422 becomes InvalidSpecError with its problems); a server
that cannot be reached raises UnavailableError, a slow one DeadlineExceededError.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from katib import errors
from katib.server.http_errors import error_from_response

SERVER_ENV = "KATIB_SERVER"
TOKEN_ENV = "KATIB_TOKEN"
DEFAULT_TIMEOUT = 30.0


def _seg(value: str) -> str:
    return quote(value, safe="")


class KatibHttpClient:
    """Talks to one server at `base_url` (e.g. http://127.0.0.1:8080); token from KATIB_TOKEN."""

    def __init__(
        self, base_url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        base = base_url.strip().rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise errors.InvalidArgumentError(
                f"server URL {base_url!r} must start with http:// or https://"
            )
        self.base_url = base
        token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=base, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KatibHttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        content: str | None = None,
        content_type: str | None = None,
    ) -> httpx.Response:
        what = f"{method} {self.base_url}{path}"
        headers = {"Content-Type": content_type} if content_type else None
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method, path, params=clean, json=json_body, content=content, headers=headers
            )
        except httpx.TimeoutException as exc:
            raise errors.DeadlineExceededError(f"{what}: timed out ({exc})") from None
        except httpx.HTTPError as exc:
            raise errors.UnavailableError(f"{what}: server not reachable ({exc})") from None
        if response.status_code >= 400:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text.strip() or response.reason_phrase
            raise error_from_response(response.status_code, body, what)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise errors.UnavailableError(
                f"{method} {self.base_url}{path}: the answer is not JSON (is this a katib server?)"
            ) from None

    @staticmethod
    def _exp_path(name: str, namespace: str) -> str:
        return f"/api/v1/namespaces/{_seg(namespace)}/experiments/{_seg(name)}"

    @staticmethod
    def _trial_path(trial: str, namespace: str) -> str:
        return f"/api/v1/namespaces/{_seg(namespace)}/trials/{_seg(trial)}"

    # --- routes ------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """{"status": "ok", "version", "dbManagerAddress"}."""
        return dict(self._json("GET", "/api/v1/health"))

    def list_experiments(
        self, namespace: str | None = None, status: str | None = None, *, full: bool = False
    ) -> list[dict[str, Any]]:
        """Experiment summaries (see docs/server.md), oldest first; whole experiments with
        `full`."""
        params = {"namespace": namespace, "status": status, "full": "true" if full else None}
        body = self._json("GET", "/api/v1/experiments", params=params)
        return list(body["items"])

    def create_experiment(
        self, experiment: str | Path | dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Submit YAML text, a file path or a dict; returns the stored (defaulted) experiment.

        `dry_run` validates only. InvalidSpecError lists every problem with its path.
        """
        params = {"dryRun": "true"} if dry_run else None
        if isinstance(experiment, dict):
            return dict(
                self._json("POST", "/api/v1/experiments", params=params, json_body=experiment)
            )
        text = (
            Path(experiment).read_text(encoding="utf-8")
            if isinstance(experiment, Path)
            else experiment
        )
        return dict(
            self._json(
                "POST",
                "/api/v1/experiments",
                params=params,
                content=text,
                content_type="application/yaml",
            )
        )

    def get_experiment(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return dict(self._json("GET", self._exp_path(name, namespace)))

    def edit_experiment_budget(
        self,
        name: str,
        namespace: str = "default",
        *,
        max_trial_count: int | None = None,
        parallel_trial_count: int | None = None,
        max_failed_trial_count: int | None = None,
    ) -> dict[str, Any]:
        """PATCH the editable budget fields; returns the updated experiment."""
        body = {
            k: v
            for k, v in {
                "maxTrialCount": max_trial_count,
                "parallelTrialCount": parallel_trial_count,
                "maxFailedTrialCount": max_failed_trial_count,
            }.items()
            if v is not None
        }
        if not body:
            raise errors.InvalidArgumentError(
                "edit_experiment_budget: give at least one of max_trial_count, "
                "parallel_trial_count, max_failed_trial_count"
            )
        return dict(self._json("PATCH", self._exp_path(name, namespace), json_body=body))

    def delete_experiment(self, name: str, namespace: str = "default") -> None:
        self._json("DELETE", self._exp_path(name, namespace))

    def list_trials(self, experiment: str, namespace: str = "default") -> list[dict[str, Any]]:
        body = self._json("GET", self._exp_path(experiment, namespace) + "/trials")
        return list(body["items"])

    def get_best_trial(self, experiment: str, namespace: str = "default") -> dict[str, Any]:
        """{"trialName", "value", "parameters", "observation"}; NotFoundError if none yet."""
        return dict(self._json("GET", self._exp_path(experiment, namespace) + "/best"))

    def get_trial(self, trial: str, namespace: str = "default") -> dict[str, Any]:
        return dict(self._json("GET", self._trial_path(trial, namespace)))

    def get_observations(
        self, trial: str, namespace: str = "default", metric: str | None = None
    ) -> list[dict[str, Any]]:
        """[{"metricName", "value", "timestamp", "step"}] in time order."""
        body = self._json(
            "GET", self._trial_path(trial, namespace) + "/observations", params={"metric": metric}
        )
        return list(body["items"])

    def get_trial_logs(
        self, trial: str, namespace: str = "default", tail: int | None = None
    ) -> str:
        response = self._request(
            "GET", self._trial_path(trial, namespace) + "/logs", params={"tail": tail}
        )
        return response.text

    def openapi(self) -> dict[str, Any]:
        return dict(self._json("GET", "/openapi.json"))
