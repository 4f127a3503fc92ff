"""The test double's HTTP side: routing API paths onto the store, discovery, watches, faults.

Private to katib.testing.kube_api_double. Requests go over a real socket (a
ThreadingHTTPServer on 127.0.0.1), so the official client's paths, query parameters,
patch content types, delete options and watch streams are what is exercised.
"""

from __future__ import annotations

import copy
import json
import re
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from katib.testing._kube_double_store import (
    _BY_PATH,
    _REASONS,
    RESOURCE_TYPES,
    ApiStatusError,
    DoubleStore,
    JsonDict,
    _json_patch,
    _merge_patch,
    _policy,
    _status_body,
    label_selector_matches,
)

if TYPE_CHECKING:
    from katib.testing.kube_api_double import KubeApiDouble


@dataclass
class Fault:
    """Make matching requests fail or stall.

    `status` answers with that HTTP status (a Status body) instead of serving the
    request; for a watch, status 410 sends an ERROR event (code 410) in the stream, as
    the API server does for an expired resourceVersion. `delay` sleeps before answering
    (a client with a shorter timeout sees a timeout). `times` is how many requests it
    hits (None: all). `method` and `path` (a regex searched in the path) select them;
    `watch` True/False limits it to watch / non-watch requests.
    """

    status: int | None = 500
    delay: float = 0.0
    times: int | None = 1
    method: str = "*"
    path: str = ""
    watch: bool | None = None
    hits: int = 0

    def matches(self, method: str, path: str, is_watch: bool) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method not in ("*", method):
            return False
        if self.watch is not None and self.watch != is_watch:
            return False
        return re.search(self.path, path) is not None


class ApiRoutes(DoubleStore):
    """What each API path does (discovery and namespaced CRUD), over the store."""

    faults: list[Fault]

    def _fault_for(self, method: str, path: str, is_watch: bool) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path, is_watch):
                    fault.hits += 1
                    return fault
        return None

    def discovery(self, path: str) -> JsonDict | None:
        if path == "/version":
            return {
                "major": "1",
                "minor": "37",
                "gitVersion": "v1.37.0-double",
                "platform": "linux/amd64",
            }
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups: dict[str, list[str]] = {}
            for t in RESOURCE_TYPES:
                if t.group:
                    groups.setdefault(t.group, [])
                    if t.version not in groups[t.group]:
                        groups[t.group].append(t.version)
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                        "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                    }
                    for g, vs in groups.items()
                ],
            }
        match = re.fullmatch(r"/api/(v1)|/apis/([^/]+)/([^/]+)", path)
        if not match:
            return None
        group, version = ("", "v1") if match.group(1) else (match.group(2), match.group(3))
        types = [t for t in RESOURCE_TYPES if t.group == group and t.version == version]
        if not types:
            return None
        resources = [
            {
                "name": t.plural,
                "singularName": t.kind.lower(),
                "namespaced": True,
                "kind": t.kind,
                "verbs": list(t.verbs),
            }
            for t in types
        ]
        if group == "":
            resources.append(
                {
                    "name": "pods/log",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "Pod",
                    "verbs": ["get"],
                }
            )
            resources.append(
                {
                    "name": "namespaces",
                    "singularName": "namespace",
                    "namespaced": False,
                    "kind": "Namespace",
                    "verbs": ["get", "list"],
                }
            )
        for t in types:
            resources.append(
                {
                    "name": f"{t.plural}/status",
                    "singularName": "",
                    "namespaced": True,
                    "kind": t.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        """Serve one non-watch request: (status, JSON body or text)."""
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"]:
            group, version, rest = "", parts[1] if len(parts) > 1 else "", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiStatusError(
                404, "NotFound", f"the server could not find the requested resource ({path})"
            )
        namespace: str | None = None
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        elif rest[:1] == ["namespaces"] and len(rest) == 2 and not group:
            if rest[1] in self.namespaces:
                return 200, {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": rest[1]}}
            raise ApiStatusError(404, "NotFound", f'namespaces "{rest[1]}" not found')
        if not rest:
            raise ApiStatusError(
                404, "NotFound", f"the server could not find the requested resource ({path})"
            )
        rtype = _BY_PATH.get((group, version, rest[0]))
        if rtype is None:
            raise ApiStatusError(
                404, "NotFound", f"the server could not find the requested resource ({path})"
            )
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        selector = (query.get("labelSelector") or [""])[0]
        with self.changed:
            if name is None:
                if method == "GET":
                    return 200, self.list_objects(rtype, namespace, selector)
                if namespace is None:
                    raise ApiStatusError(405, "MethodNotAllowed", "create needs a namespace")
                if method == "POST":
                    return 201, copy.deepcopy(self._create(rtype, namespace, body))
                if method == "DELETE":
                    policy = _policy(body, query)
                    for key in [k for k in self.store if k[0] == rtype and k[1] == namespace]:
                        if label_selector_matches(
                            selector, self.store[key]["metadata"].get("labels") or {}
                        ):
                            self._delete(rtype, namespace, key[2], policy)
                    return 200, self.list_objects(rtype, namespace, selector)
                raise ApiStatusError(
                    405, "MethodNotAllowed", f"{method} not allowed on a collection"
                )
            assert namespace is not None
            key = (rtype, namespace, name)
            if sub == "log" and rtype.plural == "pods":
                if key not in self.store:
                    raise ApiStatusError(404, "NotFound", self._not_found(rtype, name))
                pod = self._pods.get((namespace, name))
                text = pod.script.log if pod is not None else ""
                container = (query.get("container") or [""])[0]
                if pod is not None and container and container != pod.primary:
                    text = ""
                tail = next(iter(query.get("tailLines") or []), None)
                if tail is not None:
                    text = "".join(text.splitlines(keepends=True)[-int(tail) :])
                return 200, text
            if method == "DELETE":
                policy = _policy(body, query)
                return 200, self._delete(rtype, namespace, name, policy)
            obj = self.store.get(key)
            if obj is None:
                raise ApiStatusError(404, "NotFound", self._not_found(rtype, name))
            if method == "GET":
                out = copy.deepcopy(obj)
                out.pop("_double_started", None)
                return 200, out
            if method == "PUT":
                given = (body.get("metadata") or {}).get("resourceVersion")
                if given and given != obj["metadata"]["resourceVersion"]:
                    raise ApiStatusError(
                        409,
                        "Conflict",
                        f'Operation cannot be fulfilled on {rtype.plural} "{name}": '
                        "the object has been modified",
                    )
                new = copy.deepcopy(body)
                new["metadata"] = {**obj["metadata"], **(body.get("metadata") or {})}
                if sub != "status":
                    new["status"] = obj.get("status", {})
                new["_double_started"] = obj.get("_double_started", False)
                self.store[key] = new
            elif method == "PATCH":
                new = _json_patch(obj, body) if isinstance(body, list) else _merge_patch(obj, body)
                new["metadata"]["uid"] = obj["metadata"]["uid"]
                self.store[key] = new
            else:
                raise ApiStatusError(405, "MethodNotAllowed", f"{method} not allowed")
            self._modified(key)
            out = copy.deepcopy(self.store[key])
            out.pop("_double_started", None)
            return 200, out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    double: KubeApiDouble

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send_json(self, code: int, body: Any) -> None:
        if isinstance(body, str):
            data, ctype = body.encode(), "text/plain"
        else:
            data, ctype = json.dumps(body).encode(), "application/json"
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        path, query = split.path.rstrip("/") or "/", parse_qs(split.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        double = self.double
        with double.lock:
            double.requests.append((method, path, query))
        is_watch = (query.get("watch") or ["false"])[0] in ("true", "1")
        fault = double._fault_for(method, path, is_watch)
        try:
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            if (
                fault is not None
                and fault.status is not None
                and not (is_watch and fault.status == 410)
            ):
                code = fault.status
                raise ApiStatusError(
                    code,
                    _REASONS.get(code, "Unknown"),
                    f"injected fault: {code} on {method} {path}",
                )
            found = double.discovery(path) if method == "GET" else None
            if found is not None:
                self._send_json(200, found)
                return
            body = json.loads(raw) if raw else None
            if is_watch and method == "GET":
                self._watch(path, query, fault is not None and fault.status == 410)
                return
            code, answer = double.handle(method, path, query, body)
            self._send_json(code, answer)
        except ApiStatusError as exc:
            self._send_json(exc.code, _status_body(exc.code, exc.reason, exc.message))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            self._send_json(400, _status_body(400, "BadRequest", f"bad request: {exc}"))

    def _watch(self, path: str, query: dict[str, list[str]], fault_410: bool) -> None:
        parts = [p for p in path.split("/") if p]
        group, version, rest = (
            ("", parts[1], parts[2:]) if parts[0] == "api" else (parts[1], parts[2], parts[3:])
        )
        namespace = None
        if rest[:1] == ["namespaces"]:
            namespace, rest = rest[1], rest[2:]
        rtype = _BY_PATH.get((group, version, rest[0] if rest else ""))
        if rtype is None:
            raise ApiStatusError(
                404, "NotFound", f"the server could not find the requested resource ({path})"
            )
        since = int((query.get("resourceVersion") or ["0"])[0] or 0)
        timeout = float((query.get("timeoutSeconds") or ["30"])[0])
        selector = (query.get("labelSelector") or [""])[0]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if since == 0:  # "any": start with the current state, as ADDED events
                listed = self.double.list_objects(rtype, namespace, selector)
                for item in listed["items"]:
                    self._chunk({"type": "ADDED", "object": item})
                since = int(listed["metadata"]["resourceVersion"])
            for event in self.double.watch_events(
                rtype, namespace, selector, since, timeout, fault_410
            ):
                self._chunk(event)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _chunk(self, event: JsonDict) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")
