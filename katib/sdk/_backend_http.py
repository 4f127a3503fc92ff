"""The HTTP backend: the same calls against a `katib server`, over its REST API.

Built on katib.sdk.http_client.KatibHttpClient (one method per route); this module
only turns the JSON documents back into our models and the contract's shapes. The
server runs the controller, so nothing runs here: experiments keep going whatever
happens to the client.
"""

from __future__ import annotations

import secrets
from typing import Any, TypeVar

import yaml

from katib import errors
from katib.api.models import Experiment, Trial
from katib.sdk._backend import BaseBackend, ExperimentDocument, MetricLog, MetricValue
from katib.sdk.http_client import KatibHttpClient

M = TypeVar("M", Experiment, Trial)
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _model(cls: type[M], doc: Any, what: str) -> M:
    if not isinstance(doc, dict):
        raise errors.UnavailableError(f"{what}: the server answered {type(doc).__name__}")
    try:
        return cls.model_validate(doc, by_alias=True, by_name=False)
    except ValueError as exc:
        raise errors.InternalError(f"{what}: the server's document does not parse: {exc}") from None


class HttpBackend(BaseBackend):
    """Every call is one (or a few) REST requests to `server`, with `token` as bearer."""

    def __init__(
        self,
        default_namespace: str = "default",
        server: str = "",
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(default_namespace)
        self.http = KatibHttpClient(server, token=token, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    # --- experiments ---------------------------------------------------------------
    def create_experiment(self, document: ExperimentDocument) -> Experiment:
        """Send the document; YAML text goes as it is (the server's messages then carry
        its lines) unless the namespace or a generated name must be filled in."""
        body: dict[str, Any] | str = document.body
        parsed: Any = body
        if isinstance(body, str):
            try:
                parsed = yaml.safe_load(body)
            except yaml.YAMLError:
                parsed = None  # the server says where the YAML is broken
        meta = parsed.get("metadata") if isinstance(parsed, dict) else None
        name = namespace = None
        if isinstance(parsed, dict) and isinstance(meta, dict):
            meta = dict(meta)
            namespace = document.namespace or meta.get("namespace") or self.default_namespace
            name = meta.get("name")
            if not name and meta.get("generateName"):
                suffix = "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
                name = meta["name"] = f"{meta['generateName']}{suffix}"
            if (meta.get("namespace"), meta.get("name")) != (namespace, name):
                meta["namespace"] = namespace
                body = {**parsed, "metadata": meta}
        try:
            doc = self.http.create_experiment(body)
        except errors.InvalidSpecError as exc:
            if document.source:
                raise errors.InvalidSpecError(exc.problems, source=document.source) from None
            raise
        except errors.AlreadyExistsError:
            raise errors.AlreadyExistsError(
                f"A Katib Experiment with the name {namespace}/{name} already exists."
            ) from None
        return _model(Experiment, doc, "create_experiment")

    def get_experiment(self, name: str, namespace: str) -> Experiment:
        doc = self.http.get_experiment(name, namespace)
        return _model(Experiment, doc, f"experiment {namespace}/{name}")

    def list_experiments(self, namespace: str | None) -> list[Experiment]:
        return [
            _model(Experiment, doc, "GET /api/v1/experiments?full=true")
            for doc in self.http.list_experiments(namespace, full=True)
        ]

    def edit_experiment_budget(
        self,
        name: str,
        namespace: str,
        max_trial_count: int | None,
        parallel_trial_count: int | None,
        max_failed_trial_count: int | None,
    ) -> Experiment:
        doc = self.http.edit_experiment_budget(
            name,
            namespace,
            max_trial_count=max_trial_count,
            parallel_trial_count=parallel_trial_count,
            max_failed_trial_count=max_failed_trial_count,
        )
        return _model(Experiment, doc, f"experiment {namespace}/{name}")

    def delete_experiment(self, name: str, namespace: str) -> None:
        self.http.delete_experiment(name, namespace)

    # --- trials ------------------------------------------------------------------------
    def list_trials(self, experiment_name: str, namespace: str) -> list[Trial]:
        return [
            _model(Trial, doc, f"trial of {namespace}/{experiment_name}")
            for doc in self.http.list_trials(experiment_name, namespace)
        ]

    def get_trial(self, name: str, namespace: str) -> Trial:
        return _model(Trial, self.http.get_trial(name, namespace), f"trial {namespace}/{name}")

    def get_observation_log(
        self, trial_name: str, namespace: str, metric_name: str | None
    ) -> list[MetricLog]:
        return [
            MetricLog(
                time_stamp=str(item.get("timestamp", "")),
                metric=MetricValue(name=str(item["metricName"]), value=str(item["value"])),
                step=item.get("step"),
            )
            for item in self.http.get_observations(trial_name, namespace, metric=metric_name)
        ]

    def get_trial_logs(self, trial_name: str, namespace: str, tail: int | None) -> str:
        return self.http.get_trial_logs(trial_name, namespace, tail=tail)
