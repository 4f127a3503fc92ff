"""A list+watch cache of one kind's trial resources in one namespace (no `kubernetes` import).

Why a cache: polling many running trials would otherwise cost one GET each per pass.
The watcher lists once, then follows watch events from the list's resourceVersion,
resuming from the last one it saw; a 410 Gone (the server forgot that version) or any
error makes it relist. The requests themselves are made by katib.executors.kubernetes,
which hands this module a list function and a stream opener.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

log = logging.getLogger(__name__)


class WatchExpired(Exception):
    """The API answered 410 Gone to a watch: its resourceVersion is too old; relist."""


class WatchStream(Protocol):
    """One watch request: iterating yields the decoded events, `close` ends it early."""

    def __iter__(self) -> Any: ...

    def close(self) -> None: ...


ListFunction = Callable[[], "tuple[list[dict[str, Any]], str]"]
"""() -> (items, resourceVersion of the list)."""
StreamOpener = Callable[[str], WatchStream]
"""resourceVersion -> a watch from that version on."""


class ResourceWatcher:
    """The cache; `get` answers from it once `synced` is set. A daemon thread keeps it."""

    def __init__(
        self, name: str, list_items: ListFunction, open_stream: StreamOpener, backoff: float
    ) -> None:
        self.name = name
        self.items: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()
        self.stopped = threading.Event()
        self.relists = 0
        self.lock = threading.Lock()
        self._list_items, self._open_stream, self._backoff = list_items, open_stream, backoff
        self._stream: WatchStream | None = None
        self.thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """End the watch now: close its open stream (else it ends at its timeout)."""
        self.stopped.set()
        current = self._stream
        if current is not None:
            current.close()

    def get(self, name: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.items.get(name)
            return json.loads(json.dumps(obj)) if obj is not None else None

    def forget(self, name: str) -> None:
        """The object was just changed: let readers fetch it until the watch catches up."""
        with self.lock:
            self.items.pop(name, None)

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                version = self._relist()
                self._follow(version)
            except Exception as exc:  # a watch thread must never die
                self.synced.clear()
                if not self.stopped.is_set():
                    log.info("watch of %s: %s; relisting", self.name, exc)
                self.stopped.wait(self._backoff)

    def _relist(self) -> str:
        items, version = self._list_items()
        with self.lock:
            self.items = {item["metadata"]["name"]: item for item in items}
            self.relists += 1
        self.synced.set()
        return version

    def _follow(self, version: str) -> None:
        """Apply watch events from `version` on; return to relist on 410 Gone."""
        while not self.stopped.is_set():
            stream = self._stream = self._open_stream(version)
            try:
                version = self._apply(stream, version)
            except WatchExpired:
                log.info("watch of %s expired (410 Gone): relisting", self.name)
                return

    def _apply(self, events: Iterable[dict[str, Any]], version: str) -> str:
        for event in events:
            obj = event.get("object") or {}
            meta = obj.get("metadata") or {}
            version = meta.get("resourceVersion") or version
            name = meta.get("name")
            if event.get("type") == "BOOKMARK" or not name:
                continue
            with self.lock:
                if event.get("type") == "DELETED":
                    self.items.pop(name, None)
                else:
                    self.items[name] = obj
        return version
