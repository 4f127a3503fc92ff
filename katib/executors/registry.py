"""The executor table: name -> class, imported only when chosen.

`kubernetes` pulls in the official client (a large import), so the table holds module
paths, not classes; `create_executor` imports the one asked for. The CLI (`katib run
--executor`) and the server use this table, so a name means the same everywhere.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from katib.errors import InvalidArgumentError
from katib.executors.base import BaseExecutor

#: name -> "module:Class"
EXECUTORS: dict[str, str] = {
    "local": "katib.executors.local:LocalExecutor",
    "kubernetes": "katib.executors.kubernetes:KubernetesExecutor",
    "fake": "katib.executors.fake:FakeExecutor",
}


def executor_names() -> list[str]:
    return list(EXECUTORS)


def executor_class(name: str) -> type[BaseExecutor]:
    """The class registered as `name` (imports its module)."""
    try:
        target = EXECUTORS[name]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}"
        ) from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert issubclass(cls, BaseExecutor)
    return cls


def create_executor(name: str, *, data_dir: Path | None = None, **options: Any) -> BaseExecutor:
    """A new executor of kind `name`.

    ``data_dir`` is where the local executor keeps trial directories (``<data_dir>/trials``);
    other ``options`` go to the class (e.g. ``kube_context``, ``collector_image`` for
    kubernetes; options left as None are dropped so each class keeps its defaults).
    """
    cls: Any = executor_class(name)  # constructors differ per executor
    given = {k: v for k, v in options.items() if v is not None}
    if name == "local":
        if data_dir is None:
            raise InvalidArgumentError("the local executor needs a data directory")
        return cls(Path(data_dir) / "trials", **given)
    return cls(**given)
