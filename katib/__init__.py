"""Katib-compatible hyperparameter tuning that runs on a laptop.

The public surface is listed in `__all__`; everything else is implementation.
Names load lazily, so `import katib` stays cheap for the processes that only
need a small part of it (the metrics collector wrapping every trial).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Experiment": "katib.api.models",
    "Trial": "katib.api.models",
    "load_experiment": "katib.api.loading",
    "parse_experiment": "katib.api.loading",
    "validate_experiment": "katib.api.validation",
    "apply_defaults": "katib.api.defaults",
    "Runtime": "katib.controller.runtime",
    "BaseExecutor": "katib.executors.base",
    "LocalExecutor": "katib.executors.local",
    "FakeExecutor": "katib.executors.fake",
    "FakeRun": "katib.executors.fake",
    "BaseStorage": "katib.storage.base",
    "SQLStorage": "katib.storage.sql",
    "KatibError": "katib.errors",
    "InvalidSpecError": "katib.errors",
    "errors": "katib",
    "report_metrics": "katib.sdk.report_metrics",
    "tune": "katib.sdk.tune",
    "TuneResult": "katib.sdk.result",
    "KatibClient": "katib.sdk.client",
    "search": "katib.sdk.search",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'katib' has no attribute {name!r}")
    if name == "errors":
        return importlib.import_module("katib.errors")
    if name == "search":  # a module, as in Katib's SDK
        return importlib.import_module(module)
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
