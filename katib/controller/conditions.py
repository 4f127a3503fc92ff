"""Trial success/failure from the run object's status: the GJSON subset Katib's conditions use.

`successCondition` and `failureCondition` are GJSON paths (github.com/tidwall/gjson)
evaluated against the trial's run object as JSON. As in Katib's trial controller, a
condition *holds* when the path yields an object or a non-empty array; a scalar
(`true`, `1`, `"Succeeded"`) or nothing never does. The failure condition is looked
at first; the first matched element's `reason` and `message` describe the outcome.

Supported (everything the defaults and upstream examples need, and a bit more):

* keys ``a.b.c``, ``\\.`` to escape a dot, ``*``/``?`` wildcards, array indexes ``items.0``;
* ``#`` (array length at the end of a path, else "for each element": ``items.#.name``);
* queries ``#(key==value)`` (first match) and ``#(key==value)#`` (all matches), with
  ``== != < <= > >= % !%`` (``%`` is a glob), a nested path on the left, a quoted string,
  number, ``true``/``false``/``null`` on the right, and ``#(key)`` for "key exists";
* the pipe ``|`` (apply the rest to the whole result, not to each element);
* multipaths ``[a,b]`` and ``{a,"n":b}``; modifiers ``@this @reverse @flatten @keys @values``.

Unlike GJSON, which quietly returns nothing for a malformed path, a malformed expression
is an error naming the column, so a typo cannot leave a trial Running forever. That
includes a comparison outside a query (``status.phase=="Succeeded"``), which GJSON would
read as a key named ``phase=="Succeeded"``; the error suggests the query form.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from katib.api.defaults import (
    JOB_FAILURE_CONDITION,
    JOB_SUCCESS_CONDITION,
    KUBEFLOW_JOB_KINDS,
    KUBEFLOW_SUCCESS_CONDITION,
)
from katib.errors import InvalidArgumentError

#: What upstream examples use for kinds Katib has no defaults for (they must be given).
ARGO_SUCCESS_CONDITION = 'status.[@this].#(phase=="Succeeded")#'
ARGO_FAILURE_CONDITION = 'status.[@this].#(phase=="Failed")#'
TEKTON_SUCCESS_CONDITION = 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
TEKTON_FAILURE_CONDITION = 'status.conditions.#(type=="Succeeded")#|#(status=="False")#'

_DEFAULTS: dict[str, tuple[str, str]] = {
    "Job": (JOB_SUCCESS_CONDITION, JOB_FAILURE_CONDITION),
    **{kind: (KUBEFLOW_SUCCESS_CONDITION, JOB_FAILURE_CONDITION) for kind in KUBEFLOW_JOB_KINDS},
    "TrainJob": (JOB_SUCCESS_CONDITION, JOB_FAILURE_CONDITION),
    "Workflow": (ARGO_SUCCESS_CONDITION, ARGO_FAILURE_CONDITION),
    "PipelineRun": (TEKTON_SUCCESS_CONDITION, TEKTON_FAILURE_CONDITION),
}
#: Kinds Katib's defaulting webhook fills in (the others come from upstream examples).
KATIB_DEFAULTED_KINDS = frozenset({"Job", "TrainJob", *KUBEFLOW_JOB_KINDS})

_MISSING: Any = object()
_OPERATORS = ("==", "!=", "<=", ">=", "!%", "<", ">", "%", "=")
_MODIFIERS = frozenset({"this", "reverse", "flatten", "keys", "values"})
_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][+-]?\d+)?$")


def default_conditions(api_version: str, kind: str) -> tuple[str, str]:
    """(success, failure) for a trial kind; as Katib, only the kind is looked at.

    Job, TFJob, PyTorchJob, XGBoostJob, MPIJob and TrainJob get Katib's defaults;
    Argo Workflow and Tekton PipelineRun the expressions of the upstream examples.
    """
    del api_version  # Katib ignores the group and version too
    try:
        return _DEFAULTS[kind]
    except KeyError:
        known = ", ".join(sorted(_DEFAULTS))
        raise InvalidArgumentError(
            f"no default successCondition/failureCondition for kind {kind!r} (known: {known}); "
            "set spec.trialTemplate.successCondition and failureCondition"
        ) from None


# --- parsing ---------------------------------------------------------------------------


def _error(expression: str, pos: int, message: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"invalid condition {expression!r} at column {pos + 1}: {message}")


@dataclass
class _Query:
    path: list[_Segment]
    op: str | None
    value: Any
    all: bool


@dataclass
class _Segment:
    kind: str  # key | count | query | multi_array | multi_object | modifier
    sep: str  # '.', '|' or '' (the first one)
    text: str = ""
    query: _Query | None = None
    items: list[tuple[str, list[_Segment]]] = field(default_factory=list)


class _Parser:
    def __init__(self, expression: str) -> None:
        self.src = expression

    def fail(self, pos: int, message: str) -> InvalidArgumentError:
        return _error(self.src, pos, message)

    def parse(self) -> list[_Segment]:
        if not self.src.strip():
            raise InvalidArgumentError("invalid condition: the expression is empty")
        segs, end = self.path(0, stop="")
        if end != len(self.src):
            raise self.fail(end, f"unexpected {self.src[end]!r}")
        return segs

    def path(self, pos: int, stop: str) -> tuple[list[_Segment], int]:
        """Segments from `pos` up to an unnested character of `stop` (or the end)."""
        segs: list[_Segment] = []
        sep = ""
        src = self.src
        while True:
            if pos >= len(src) or src[pos] in stop:
                if sep:
                    raise self.fail(pos, f"nothing after {sep!r}")
                return segs, pos
            seg, pos = self.segment(pos, sep, stop)
            segs.append(seg)
            if pos >= len(src) or src[pos] in stop:
                return segs, pos
            if src[pos] not in ".|":
                raise self.fail(pos, f"expected '.' or '|' before {src[pos]!r}")
            sep = src[pos]
            pos += 1

    def segment(self, pos: int, sep: str, stop: str) -> tuple[_Segment, int]:
        src = self.src
        ch = src[pos]
        if ch == "#":
            if pos + 1 < len(src) and src[pos + 1] == "(":
                query, pos = self.query(pos + 2)
                return _Segment("query", sep, query=query), pos
            return _Segment("count", sep), pos + 1
        if ch in "[{":
            return self.multipath(pos, sep)
        if ch == "@":
            start = pos + 1
            end = start
            while end < len(src) and (src[end].isalnum() or src[end] == "_"):
                end += 1
            name = src[start:end]
            if name not in _MODIFIERS:
                raise self.fail(
                    pos,
                    f"unknown modifier @{name} (known: @this, @reverse, @flatten, @keys, @values)",
                )
            return _Segment("modifier", sep, text=name), end
        if ch in ".|":
            raise self.fail(pos, "empty path component")
        if ch in ")]},":
            raise self.fail(pos, f"unexpected {ch!r}")
        return self.key(pos, sep, stop)

    def key(self, pos: int, sep: str, stop: str) -> tuple[_Segment, int]:
        src = self.src
        out: list[str] = []
        start = pos
        while pos < len(src):
            ch = src[pos]
            if ch == "\\":
                if pos + 1 >= len(src):
                    raise self.fail(pos, "a backslash must escape a character")
                out.append("\\" + src[pos + 1])
                pos += 2
                continue
            if ch in stop or ch in ".|)],}":
                break
            if ch in '([{"':
                raise self.fail(pos, f"unexpected {ch!r} in the key {''.join(out)!r}")
            if src.startswith(("==", "!=", "<", ">", "!%"), pos):
                raise self.fail(
                    pos,
                    "a comparison outside a query never matches in GJSON; write it as a "
                    f"query, e.g. {_query_hint(src, start, pos)}",
                )
            out.append(ch)
            pos += 1
        if not out:
            raise self.fail(pos, "empty path component")
        return _Segment("key", sep, text="".join(out)), pos

    def query(self, pos: int) -> tuple[_Query, int]:
        """`pos` is just after '#('."""
        src = self.src
        open_at = pos - 2
        lhs_path: list[_Segment] = []
        if pos < len(src) and src[pos] not in "=!<>%)":
            lhs_path, pos = self.path(pos, stop="=!<>%)")
        if pos >= len(src):
            raise self.fail(open_at, "unclosed '#(': missing ')'")
        op: str | None = None
        value: Any = None
        if src[pos] != ")":
            op = next((o for o in _OPERATORS if src.startswith(o, pos)), None)
            if op is None:
                raise self.fail(pos, f"unknown operator starting with {src[pos]!r}")
            pos += len(op)
            value, pos = self.literal(pos, op)
            if op == "=":
                op = "=="
        if pos >= len(src) or src[pos] != ")":
            raise self.fail(pos if pos < len(src) else open_at, "expected ')' to close '#('")
        pos += 1
        every = pos < len(src) and src[pos] == "#"
        if every:
            pos += 1
        return _Query(lhs_path, op, value, every), pos

    def literal(self, pos: int, op: str) -> tuple[Any, int]:
        src = self.src
        while pos < len(src) and src[pos] == " ":
            pos += 1
        if pos >= len(src) or src[pos] == ")":
            raise self.fail(pos, f"a value is needed after {op!r}")
        if src[pos] == '"':
            end = pos + 1
            while end < len(src) and src[end] != '"':
                end += 2 if src[end] == "\\" else 1
            if end >= len(src):
                raise self.fail(pos, "unterminated string")
            try:
                return json.loads(src[pos : end + 1]), end + 1
            except ValueError:
                raise self.fail(pos, "invalid string escape") from None
        end = pos
        while end < len(src) and src[end] != ")":
            end += 1
        raw = src[pos:end].strip()
        if raw in ("true", "false"):
            return raw == "true", end
        if raw == "null":
            return None, end
        if _NUMBER.match(raw):
            return float(raw), end
        return raw, end  # GJSON compares an unquoted value as text (e.g. a % pattern)

    def multipath(self, pos: int, sep: str) -> tuple[_Segment, int]:
        src = self.src
        opener = src[pos]
        closer = "]" if opener == "[" else "}"
        kind = "multi_array" if opener == "[" else "multi_object"
        items: list[tuple[str, list[_Segment]]] = []
        start = pos
        pos += 1
        while True:
            if pos >= len(src):
                raise self.fail(start, f"unclosed {opener!r}: missing {closer!r}")
            if src[pos] == closer and not items:
                pos += 1
                break
            name = ""
            if kind == "multi_object" and src[pos] == '"':
                end = src.find('"', pos + 1)
                if end < 0 or end + 1 >= len(src) or src[end + 1] != ":":
                    raise self.fail(pos, 'expected "name":path')
                name = src[pos + 1 : end]
                pos = end + 2
            sub, pos = self.path(pos, stop="," + closer)
            if not sub:
                raise self.fail(pos, "empty path in a multipath")
            if not name:
                last = sub[-1]
                name = _unescape(last.text) if last.kind == "key" else f"_{len(items)}"
            items.append((name, sub))
            if pos >= len(src):
                raise self.fail(start, f"unclosed {opener!r}: missing {closer!r}")
            if src[pos] == closer:
                pos += 1
                break
            pos += 1  # ','
        return _Segment(kind, sep, items=items), pos


def _query_hint(src: str, start: int, op_at: int) -> str:
    """`status.phase=="X"` -> `status.[@this].#(phase=="X")#`."""
    prefix = src[:start].rstrip(".|")
    comparison = src[start:]
    if prefix:
        return f"{prefix}.[@this].#({comparison})#"
    return f"[@this].#({comparison})#"


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


_CACHE: dict[str, list[_Segment]] = {}


def parse(expression: str) -> list[_Segment]:
    """The parsed expression (cached); InvalidArgumentError names the column of a mistake."""
    found = _CACHE.get(expression)
    if found is None:
        found = _Parser(expression).parse()
        if len(_CACHE) < 1024:
            _CACHE[expression] = found
    return found


def check(expression: str) -> None:
    """Raise InvalidArgumentError if `expression` is not a valid condition."""
    parse(expression)


# --- evaluation ------------------------------------------------------------------------


def _key_matches(pattern: str, key: str) -> bool:
    if "\\" not in pattern and "*" not in pattern and "?" not in pattern:
        return pattern == key
    if "*" not in pattern.replace("\\*", "") and "?" not in pattern.replace("\\?", ""):
        return _unescape(pattern) == key
    regex = ""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            regex += re.escape(pattern[i + 1])
            i += 2
            continue
        regex += ".*" if ch == "*" else "." if ch == "?" else re.escape(ch)
        i += 1
    return re.fullmatch(regex, key, re.DOTALL) is not None


def _get_key(value: Any, pattern: str) -> Any:
    if isinstance(value, Mapping):
        plain = _unescape(pattern) if "\\" in pattern else pattern
        if plain in value and "*" not in pattern and "?" not in pattern:
            return value[plain]
        for key in value:
            if _key_matches(pattern, str(key)):
                return value[key]
        return _MISSING
    if isinstance(value, list):
        text = _unescape(pattern)
        if text.isdigit() and int(text) < len(value):
            return value[int(text)]
    return _MISSING


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _compare(left: Any, op: str, right: Any) -> bool:
    if isinstance(right, bool) or right is None:
        if op == "==":
            return left is right or (isinstance(left, bool) and left == right)
        if op == "!=":
            return not (left is right or (isinstance(left, bool) and left == right))
        return False
    if _is_number(right):
        if not _is_number(left):
            return False
        a, b = float(left), float(right)
        if math.isnan(a):
            return False
    elif isinstance(right, str):
        if not isinstance(left, str):
            return False
        if op in ("%", "!%"):
            matched = fnmatch.fnmatchcase(left, right)
            return matched if op == "%" else not matched
        a, b = left, right  # type: ignore[assignment]
    else:
        return False
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    return False


def _query_matches(element: Any, query: _Query) -> bool:
    left = _walk(element, query.path, 0) if query.path else element
    if left is _MISSING:
        return False
    if query.op is None:
        return True
    return _compare(left, query.op, query.value)


def _next_pipe(segs: list[_Segment], i: int) -> int:
    for j in range(i, len(segs)):
        if segs[j].sep == "|":
            return j
    return len(segs)


def _each(items: list[Any], segs: list[_Segment], i: int) -> Any:
    """Apply segs[i:next pipe] to every item, then the rest to the collected list."""
    j = _next_pipe(segs, i)
    if i < j:
        collected = [r for r in (_walk(item, segs[:j], i) for item in items) if r is not _MISSING]
    else:
        collected = list(items)
    return _walk(collected, segs, j)


def _modifier(value: Any, name: str) -> Any:
    if name == "this":
        return value
    if name == "reverse":
        if isinstance(value, list):
            return list(reversed(value))
        if isinstance(value, Mapping):
            return dict(reversed(list(value.items())))
        return value
    if name == "flatten":
        if not isinstance(value, list):
            return value
        flat: list[Any] = []
        for item in value:
            flat.extend(item if isinstance(item, list) else [item])
        return flat
    if name == "keys":
        return list(value) if isinstance(value, Mapping) else _MISSING
    return list(value.values()) if isinstance(value, Mapping) else _MISSING  # values


def _walk(value: Any, segs: list[_Segment], i: int) -> Any:
    if value is _MISSING:
        return _MISSING
    while i < len(segs):
        seg = segs[i]
        if seg.kind == "key":
            value = _get_key(value, seg.text)
        elif seg.kind == "modifier":
            value = _modifier(value, seg.text)
        elif seg.kind == "count":
            if not isinstance(value, list):
                return _MISSING
            if i + 1 == len(segs):
                return len(value)
            if segs[i + 1].sep == "|":
                value = len(value)
            else:
                return _each(value, segs, i + 1)
        elif seg.kind == "query":
            assert seg.query is not None
            if not isinstance(value, list):
                return _MISSING
            if seg.query.all:
                return _each([v for v in value if _query_matches(v, seg.query)], segs, i + 1)
            value = next((v for v in value if _query_matches(v, seg.query)), _MISSING)
        elif seg.kind == "multi_array":
            value = [r for _, sub in seg.items if (r := _walk(value, sub, 0)) is not _MISSING]
        else:  # multi_object
            value = {n: r for n, sub in seg.items if (r := _walk(value, sub, 0)) is not _MISSING}
        if value is _MISSING:
            return _MISSING
        i += 1
    return value


def get(expression: str, resource: Mapping[str, Any]) -> Any:
    """What the GJSON path yields on `resource` (None when it yields nothing)."""
    found = _walk(resource, parse(expression), 0)
    return None if found is _MISSING else found


def evaluate(expression: str, resource: Mapping[str, Any]) -> bool:
    """Does the condition hold? (Katib: the result is an object or a non-empty array.)"""
    found = _walk(resource, parse(expression), 0)
    return isinstance(found, Mapping) or (isinstance(found, list) and len(found) > 0)


@dataclass(frozen=True)
class ConditionMatch:
    """A condition that held, with the reason/message of the first matched element."""

    reason: str = ""
    message: str = ""


def match(expression: str, resource: Mapping[str, Any]) -> ConditionMatch | None:
    """Like `evaluate`, with the matched condition's `reason` and `message` (None if false)."""
    found = _walk(resource, parse(expression), 0)
    if isinstance(found, list):
        if not found:
            return None
        found = found[0]
    elif not isinstance(found, Mapping):
        return None
    if not isinstance(found, Mapping):
        return ConditionMatch()
    return ConditionMatch(str(found.get("reason") or ""), str(found.get("message") or ""))


@dataclass(frozen=True)
class JobStatus:
    """The run object's state as the trial controller sees it."""

    phase: str  # "Failed" | "Succeeded" | "Running"
    reason: str = ""
    message: str = ""


def job_status(
    resource: Mapping[str, Any], success_condition: str, failure_condition: str
) -> JobStatus:
    """Failed if the failure condition holds (checked first), Succeeded if the success
    condition holds, else Running, as Katib's trial controller decides."""
    failed = match(failure_condition, resource) if failure_condition else None
    if failed is not None:
        return JobStatus("Failed", failed.reason, failed.message)
    succeeded = match(success_condition, resource) if success_condition else None
    if succeeded is not None:
        return JobStatus("Succeeded", succeeded.reason, succeeded.message)
    return JobStatus("Running")
