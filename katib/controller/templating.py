"""Render a trial's run spec from the Experiment's trial template (reference 3.1).

Substitution is textual, as in Katib, but values are JSON-escaped first, so a
value containing a quote or a backslash cannot break the document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from katib.api.models import Experiment
from katib.errors import InvalidSpecError, Problem

_META = re.compile(r"^\$\{trialSpec\.(.+?)\}$")
_INDEXED = re.compile(r"^(Labels|Annotations)\[(.+)\]$")
_PLACEHOLDER = re.compile(r"\$\{trialParameters\.([^}]+)\}")


def _meta_value(key: str, template: Mapping[str, Any], trial_name: str, namespace: str) -> str:
    simple = {
        "Name": trial_name,
        "Namespace": namespace,
        "Kind": str(template.get("kind", "")),
        "APIVersion": str(template.get("apiVersion", "")),
    }
    if key in simple:
        return simple[key]
    indexed = _INDEXED.match(key)
    if indexed:
        section = "labels" if indexed.group(1) == "Labels" else "annotations"
        values = (template.get("metadata") or {}).get(section) or {}
        if indexed.group(2) in values:
            return str(values[indexed.group(2)])
        raise InvalidSpecError(
            [
                Problem(
                    "spec.trialTemplate.trialSpec.metadata." + section,
                    f"{indexed.group(2)} not found in trialSpec metadata {section}",
                )
            ]
        )
    raise InvalidSpecError(
        [
            Problem(
                "spec.trialTemplate.trialParameters", f"illegal reference of trial metadata: {key}"
            )
        ]
    )


def render_run_spec(
    experiment: Experiment, trial_name: str, assignments: Mapping[str, str]
) -> dict[str, Any]:
    """The rendered object (e.g. a batch/v1 Job) for one trial, named after the trial."""
    template = experiment.spec.trial_template
    if template is None or template.trial_spec is None:
        raise InvalidSpecError(
            [Problem("spec.trialTemplate.trialSpec", "a trialSpec is needed to run trials locally")]
        )
    namespace = experiment.namespace
    values: dict[str, str] = {}
    for param in template.trial_parameters or []:
        reference = param.reference or ""
        meta = _META.match(reference)
        if meta:
            values[param.name or ""] = _meta_value(
                meta.group(1), template.trial_spec, trial_name, namespace
            )
        elif reference in assignments:
            values[param.name or ""] = assignments[reference]
        else:
            raise InvalidSpecError(
                [
                    Problem(
                        "spec.trialTemplate.trialParameters",
                        f"unable to find parameter {reference} in the trial's assignments",
                    )
                ]
            )

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        return json.dumps(values[name])[1:-1]

    text = _PLACEHOLDER.sub(substitute, json.dumps(template.trial_spec))
    rendered: dict[str, Any] = json.loads(text)
    metadata = rendered.setdefault("metadata", {})
    metadata["name"] = trial_name
    metadata["namespace"] = namespace
    return rendered


def find_container(run_spec: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The container called `name` anywhere in the object (Job, TFJob replicas, TrainJob...)."""
    stack: list[Any] = [run_spec]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            containers = node.get("containers")
            if isinstance(containers, list):
                for container in containers:
                    if isinstance(container, dict) and container.get("name") == name:
                        return container
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None
