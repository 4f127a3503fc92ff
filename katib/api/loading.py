"""Read an Experiment from YAML/JSON (or a dict), default it and validate it.

The goal is one pass that lists every problem, each located by a Katib-style field path
(`spec.parameters[0].feasibleSpace.min`) and, for files, the line it is on, so a user
fixes everything at once instead of one webhook rejection at a time.

Two stages: structure (types, unknown fields; what Go's decoder would reject) and rules
(katib.api.validation, on the defaulted Experiment). Unknown fields alone do not stop the
second stage, since dropping them gives exactly what Katib would see; any other
structural problem does, because the rules would only report noise about it.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from katib.api.defaults import apply_defaults
from katib.api.models import API_VERSION, Experiment
from katib.api.validation import (
    KNOWN_ALGORITHMS,
    KNOWN_EARLY_STOPPING,
    ConfigMapLoader,
    validate_experiment,
)
from katib.errors import InvalidSpecError, Problem

V1ALPHA3 = "kubeflow.org/v1alpha3"
"""Accepted and read as v1beta1 (its `trialTemplate.goTemplate` is supported)."""

FILE_PATH = "<file>"
"""The path of problems about the file or document as a whole."""

LineMap = dict[str, int]
PathParts = list[str | int]


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps dates as strings (Kubernetes' YAML-to-JSON does not make dates)."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


# --- paths and lines ---------------------------------------------------------------------------


def format_path(parts: PathParts) -> str:
    """('spec', 'parameters', 0, 'name') -> 'spec.parameters[0].name'."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _parent_path(path: str) -> str | None:
    if not path:
        return None
    cut = max(path.rfind("."), path.rfind("["))
    return path[:cut] if cut > 0 else ""


def line_for(path: str, lines: LineMap) -> int | None:
    """The line of `path`, or of its nearest ancestor that exists in the document."""
    current: str | None = path
    while current is not None:
        if current in lines:
            return lines[current]
        current = _parent_path(current)
    return None


def _map_lines(node: Node, prefix: str, lines: LineMap, problems: list[Problem]) -> None:
    """Record the line of every key and list item; flag duplicate keys (YAML keeps the last)."""
    if isinstance(node, MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                continue
            path = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                problems.append(Problem(path, "duplicate key; only the last value is used", line))
            seen.add(key_node.value)
            lines[path] = line
            _map_lines(value_node, path, lines, problems)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}[{i}]"
            lines[path] = item.start_mark.line + 1
            _map_lines(item, path, lines, problems)


def _with_lines(problems: list[Problem], lines: LineMap) -> list[Problem]:
    return [
        p if p.line is not None else Problem(p.path, p.message, line_for(p.path, lines))
        for p in problems
    ]


# --- reading -----------------------------------------------------------------------------------


def _looks_like_path(value: str) -> bool:
    if "\n" in value or not value.strip():
        return False
    if value.endswith((".yaml", ".yml", ".json")):
        return True
    try:
        return Path(value).is_file()
    except OSError:
        return False


def _read(
    path_or_text: str | Path, source: str | None
) -> tuple[str | None, str | None, Problem | None]:
    """(text, source, problem): the text, or the problem that stops us from reading it."""
    if isinstance(path_or_text, str) and not _looks_like_path(path_or_text):
        return path_or_text, source, None
    path = Path(path_or_text)
    source = source or str(path)
    try:
        return path.read_text(encoding="utf-8"), source, None
    except FileNotFoundError:
        return None, source, Problem(FILE_PATH, f"file not found: {path}")
    except UnicodeDecodeError:
        return None, source, Problem(FILE_PATH, "the file is not UTF-8 text")
    except OSError as err:
        return None, source, Problem(FILE_PATH, f"cannot read the file: {err.strerror or err}")


def _documents(text: str) -> tuple[list[tuple[Node, Any]], Problem | None]:
    """Every non-empty YAML document as (node, data), or the syntax problem."""
    loader = _Loader(text)
    docs: list[tuple[Node, Any]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is not None:
                docs.append((node, data))
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        what = " ".join(s for s in (err.context, err.problem) if s) or str(err)
        return [], Problem(FILE_PATH, f"invalid YAML: {what}", mark.line + 1 if mark else None)
    except yaml.YAMLError as err:
        return [], Problem(FILE_PATH, f"invalid YAML: {err}")
    finally:
        loader.dispose()
    return docs, None


def _pick_document(docs: list[tuple[Node, Any]]) -> tuple[tuple[Node, Any] | None, Problem | None]:
    if not docs:
        return None, Problem(FILE_PATH, "the document is empty; expected an Experiment")
    if len(docs) == 1:
        return docs[0], None
    chosen = [d for d in docs if isinstance(d[1], dict) and d[1].get("kind") == "Experiment"]
    if not chosen:
        return None, Problem(
            FILE_PATH, f"no document with kind: Experiment among the {len(docs)} documents"
        )
    if len(chosen) > 1:
        at = [n.start_mark.line + 1 for n, _ in chosen]
        return None, Problem(
            FILE_PATH,
            f"{len(chosen)} documents with kind: Experiment (lines "
            f"{', '.join(map(str, at))}); expected exactly one",
            at[1],
        )
    return chosen[0], None


# --- structure -----------------------------------------------------------------------------------

_TYPE_MESSAGES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "bool_type": "must be a boolean (true or false)",
    "bool_parsing": "must be a boolean (true or false)",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
}

# Go's decoder rejects these JSON types where pydantic's lax mode would convert them.
_STRICT_FIELDS: dict[tuple[str, ...], tuple[tuple[type, ...], str]] = {
    ("spec", "parallelTrialCount"): ((int,), "must be an integer"),
    ("spec", "maxTrialCount"): ((int,), "must be an integer"),
    ("spec", "maxFailedTrialCount"): ((int,), "must be an integer"),
    ("spec", "objective", "goal"): ((int, float), "must be a number"),
    ("spec", "trialTemplate", "retain"): ((bool,), "must be a boolean (true or false)"),
    ("spec", "nasConfig", "graphConfig", "numLayers"): ((int,), "must be an integer"),
}


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True)
    text = text.strip().removesuffix("...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


def _strict_problems(data: dict[str, Any]) -> list[Problem]:
    out: list[Problem] = []
    for keys, (allowed, message) in _STRICT_FIELDS.items():
        cur: Any = data
        for key in keys:
            cur = cur.get(key) if isinstance(cur, dict) else None
        if cur is None:
            continue
        if (isinstance(cur, bool) and bool not in allowed) or not isinstance(cur, allowed):
            out.append(Problem(".".join(keys), f"{message}, got {_shown(cur)}"))
        elif isinstance(cur, int) and allowed == (int,) and not -(2**31) <= cur < 2**31:
            out.append(Problem(".".join(keys), f"must be a 32-bit integer, got {cur}"))
    return out


def _clean_loc(data: Any, loc: tuple[str | int, ...], missing: bool) -> PathParts:
    """Keep the loc entries that walk the data; drops pydantic's union-branch tags."""
    parts: PathParts = []
    cur = data
    for i, entry in enumerate(loc):
        in_dict = isinstance(cur, dict) and entry in cur
        in_list = isinstance(cur, list) and isinstance(entry, int) and 0 <= entry < len(cur)
        if in_dict or in_list:
            parts.append(str(entry) if in_dict else entry)
            cur = cur[entry]  # type: ignore[index]
        elif missing and i == len(loc) - 1:
            parts.append(entry)
    return parts


def _model_fields(parts: PathParts) -> list[str]:
    """The camelCase field names of the model found at `parts` (for 'did you mean')."""
    model: type[BaseModel] | None = Experiment
    for part in parts:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if part in (f.alias, n)), None)
        if field is None:
            return []
        model = _model_in(field.annotation)
    return [f.alias or n for n, f in model.model_fields.items()] if model else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _pydantic_problems(err: ValidationError, data: Any) -> tuple[list[Problem], list[PathParts]]:
    """(problems, unknown-field paths); one problem per path, the clearest message kept."""
    by_path: dict[str, Problem] = {}
    unknown: list[PathParts] = []
    for e in err.errors():
        kind = e["type"]
        parts = _clean_loc(data, tuple(e["loc"]), missing=kind == "missing")
        path = format_path(parts)
        if kind == "extra_forbidden":
            unknown.append(parts)
            message = "unknown field"
            close = difflib.get_close_matches(str(parts[-1]), _model_fields(parts[:-1]), n=1)
            if close:
                message += f"; did you mean {close[0]}?"
        elif kind == "missing":
            message = "must be specified"
        elif kind in _TYPE_MESSAGES:
            message = f"{_TYPE_MESSAGES[kind]}, got {_shown(e['input'])}"
        elif kind == "enum":
            message = f"must be one of: {e.get('ctx', {}).get('expected', '')}"
        else:
            message = e["msg"][:1].lower() + e["msg"][1:]
        if path not in by_path or by_path[path].message.startswith("must be one of"):
            by_path[path] = Problem(path, message)
    return list(by_path.values()), unknown


def _drop(data: Any, parts: PathParts) -> None:
    cur = data
    for part in parts[:-1]:
        cur = cur[part]
    if isinstance(cur, dict):
        cur.pop(parts[-1], None)


# --- public --------------------------------------------------------------------------------------


def parse_experiment_dict(
    data: Any,
    *,
    lines: LineMap | None = None,
    algorithm_names: Collection[str] = KNOWN_ALGORITHMS,
    early_stopping_names: Collection[str] = KNOWN_EARLY_STOPPING,
    config_map_loader: ConfigMapLoader | None = None,
    local_configmaps: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[Experiment | None, list[Problem]]:
    """(defaulted Experiment or None, every problem) without raising.

    The Experiment is returned whenever it could be built, even if rules failed, so a
    caller can still show it; it is None when the structure itself is wrong.
    `local_configmaps` ("namespace/name" -> data) stand in for the cluster's ConfigMaps
    when no `config_map_loader` is given; the one the template uses is recorded on the
    Experiment (katib.controller.templating.LOCAL_CONFIGMAPS_ANNOTATION).
    """
    lines = lines or {}
    if not isinstance(data, dict):
        got = "a list" if isinstance(data, list) else f"{_shown(data)}"
        problem = Problem(FILE_PATH, f"expected a mapping (an Experiment), got {got}")
        return None, _with_lines([problem], lines)
    head: list[Problem] = []
    kind, api_version = data.get("kind"), data.get("apiVersion")
    if kind is not None and kind != "Experiment":
        head.append(Problem("kind", f"must be Experiment, got {_shown(kind)}"))
    if api_version == V1ALPHA3 and not _has_go_template(data):
        head.append(
            Problem(
                "apiVersion",
                f"must be {API_VERSION}, got {_shown(api_version)} ({V1ALPHA3} is read only "
                "for Experiments whose trialTemplate is a goTemplate)",
            )
        )
    elif api_version is not None and api_version not in (API_VERSION, V1ALPHA3):
        head.append(Problem("apiVersion", f"must be {API_VERSION}, got {_shown(api_version)}"))
    if head:
        return None, _with_lines(head, lines)
    if api_version == V1ALPHA3:  # read as v1beta1; its goTemplate is accepted (reference 3.2)
        data = {**data, "apiVersion": API_VERSION}
    if config_map_loader is None and local_configmaps:
        from katib.controller.templating import configmap_loader

        config_map_loader = configmap_loader(local_configmaps)

    try:
        exp, problems = _parse_mapping(
            data, lines, algorithm_names, early_stopping_names, config_map_loader
        )
    except RecursionError:
        problem = Problem(FILE_PATH, "the document contains itself (a recursive YAML alias)")
        return None, _with_lines([problem], lines)
    if exp is not None and local_configmaps:
        from katib.controller.templating import record_local_configmap

        record_local_configmap(exp, local_configmaps)
    return exp, problems


def _has_go_template(data: dict[str, Any]) -> bool:
    spec = data.get("spec")
    tt = spec.get("trialTemplate") if isinstance(spec, dict) else None
    return isinstance(tt, dict) and "goTemplate" in tt


def _parse_mapping(
    data: dict[str, Any],
    lines: LineMap,
    algorithm_names: Collection[str],
    early_stopping_names: Collection[str],
    config_map_loader: ConfigMapLoader | None,
) -> tuple[Experiment | None, list[Problem]]:
    data = copy.deepcopy(data)
    problems = _strict_problems(data)
    exp: Experiment | None = None
    try:
        exp = Experiment.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as err:
        found, unknown = _pydantic_problems(err, data)
        strict_paths = {p.path for p in problems}
        problems += [p for p in found if p.path not in strict_paths]
        if len(unknown) == len(found):  # only unknown fields: Katib would ignore them
            for parts in unknown:
                _drop(data, parts)
            try:
                exp = Experiment.model_validate(data, by_alias=True, by_name=False)
            except ValidationError:
                exp = None
    if exp is None or len(problems) > len(_unknown_only(problems)):
        return None, _with_lines(problems, lines)
    defaulted = apply_defaults(exp)
    if defaulted.spec.trial_template is not None and defaulted.spec.trial_template.go_template:
        from katib.controller.templating import default_go_template

        default_go_template(defaulted, config_map_loader)
    problems += validate_experiment(
        defaulted,
        algorithm_names=algorithm_names,
        early_stopping_names=early_stopping_names,
        config_map_loader=config_map_loader,
    )
    return defaulted, _with_lines(problems, lines)


def _unknown_only(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.message.startswith("unknown field")]


def parse_experiment(
    path_or_text: str | Path,
    *,
    source: str | None = None,
    algorithm_names: Collection[str] = KNOWN_ALGORITHMS,
    early_stopping_names: Collection[str] = KNOWN_EARLY_STOPPING,
    config_map_loader: ConfigMapLoader | None = None,
) -> tuple[Experiment | None, list[Problem]]:
    """Like load_experiment, but returns (Experiment or None, problems) instead of raising.

    A `str` without a newline that names a file (or ends in .yaml/.yml/.json) is read as
    a path; any other `str` is the document itself.
    """
    text, _, problem = _read(path_or_text, source)
    if problem is not None or text is None:
        return None, [problem or Problem(FILE_PATH, "nothing to read")]
    docs, problem = _documents(text)
    if problem is not None:
        return None, [problem]
    chosen, problem = _pick_document(docs)
    if problem is not None or chosen is None:
        return None, [problem or Problem(FILE_PATH, "no Experiment")]
    node, data = chosen
    lines: LineMap = {"": node.start_mark.line + 1}
    dup_problems: list[Problem] = []
    try:
        _map_lines(node, "", lines, dup_problems)
    except RecursionError:
        return None, [Problem(FILE_PATH, "the document contains itself (a recursive YAML alias)")]
    local = None
    if config_map_loader is None and ("configMap" in text or "templateSpec" in text):
        from katib.controller.templating import local_configmaps

        path = (
            Path(path_or_text)
            if isinstance(path_or_text, Path) or _looks_like_path(path_or_text)
            else None
        )
        local = local_configmaps(text, path)
    exp, problems = parse_experiment_dict(
        data,
        lines=lines,
        algorithm_names=algorithm_names,
        early_stopping_names=early_stopping_names,
        config_map_loader=config_map_loader,
        local_configmaps=local,
    )
    return exp, dup_problems + problems


def load_experiment(
    path_or_text: str | Path,
    *,
    source: str | None = None,
    algorithm_names: Collection[str] = KNOWN_ALGORITHMS,
    early_stopping_names: Collection[str] = KNOWN_EARLY_STOPPING,
    config_map_loader: ConfigMapLoader | None = None,
) -> Experiment:
    """Read, default and validate one Experiment; InvalidSpecError lists every problem.

    Among several YAML documents the one with `kind: Experiment` is used. Missing `kind`
    and `apiVersion` are accepted (they default to Experiment and kubeflow.org/v1beta1).
    """
    src = source
    if src is None and (isinstance(path_or_text, Path) or _looks_like_path(path_or_text)):
        src = str(path_or_text)
    exp, problems = parse_experiment(
        path_or_text,
        source=source,
        algorithm_names=algorithm_names,
        early_stopping_names=early_stopping_names,
        config_map_loader=config_map_loader,
    )
    if problems or exp is None:
        raise InvalidSpecError(problems or [Problem(FILE_PATH, "no Experiment")], source=src)
    return exp


def load_experiment_dict(
    data: dict[str, Any],
    *,
    source: str | None = None,
    algorithm_names: Collection[str] = KNOWN_ALGORITHMS,
    early_stopping_names: Collection[str] = KNOWN_EARLY_STOPPING,
    config_map_loader: ConfigMapLoader | None = None,
) -> Experiment:
    """load_experiment for an already parsed document (e.g. from the SDK or a REST body)."""
    exp, problems = parse_experiment_dict(
        data,
        algorithm_names=algorithm_names,
        early_stopping_names=early_stopping_names,
        config_map_loader=config_map_loader,
    )
    if problems or exp is None:
        raise InvalidSpecError(problems or [Problem(FILE_PATH, "no Experiment")], source=source)
    return exp
