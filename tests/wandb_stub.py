"""A W&B server stand-in on 127.0.0.1 for the dashboard tests: it answers the GraphQL operations
``wandb-workspaces`` sends to save a Workspace view and a Report, keeps the views it was sent, and
records every request. Nothing leaves the machine (``WANDB_BASE_URL`` points here)."""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ENTITY = "stub-entity"
PROJECT_NODE = {
    "id": "UHJvamVjdDox",
    "internalId": "UHJvamVjdDox",
    "name": "distillab",
    "entityName": ENTITY,
    "createdAt": "2026-12-06T00:00:00",
    "isBenchmark": False,
    "user": None,
}
VIEWER = {
    "id": "VXNlcjox",
    "entity": ENTITY,
    "username": ENTITY,
    "email": None,
    "admin": False,
    "flags": "{}",
}


class StubServer:
    def __init__(self) -> None:
        self.views: dict[str, dict[str, Any]] = {}  # id -> the upsertView variables it was saved with
        self.requests: list[tuple[str, dict[str, Any]]] = []  # (operation, variables) of every GraphQL call
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                if self.path != "/graphql":  # wandb-core's telemetry: accepted, ignored
                    return self._reply({})
                body = json.loads(raw)
                self._reply({"data": stub.answer(body.get("query", ""), body.get("variables") or {})})

            def _reply(self, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def operations(self, name: str) -> list[dict[str, Any]]:
        return [v for op, v in self.requests if op == name]

    def answer(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        head = query.strip().split("{", 1)[0].split("(", 1)[0].split()
        operation = head[1] if len(head) > 1 else head[0]
        self.requests.append((operation, variables))
        if "upsertView" in query:
            return {"upsertView": self._upsert(variables)}
        if "allViews" in query:
            kept = [
                v
                for v in self.views.values()
                if v["type"].startswith(variables.get("viewType", "runs"))
                and variables.get("viewName") in (None, v["name"])
            ]
            edges = [{"node": {**self._node(v), "user": None}, "cursor": v["id"]} for v in kept]
            page = {"endCursor": None, "hasNextPage": False}
            return {"project": {"allViews": {"edges": edges, "pageInfo": page}}}
        if "models" in query:  # the projects of an entity
            page = {"endCursor": None, "hasNextPage": False}
            return {"models": {"edges": [{"node": PROJECT_NODE, "cursor": "c"}], "pageInfo": page}}
        if "project(" in query:
            return {"project": PROJECT_NODE}
        return {"viewer": VIEWER, "serverInfo": {"cliVersionInfo": {}, "latestLocalVersionInfo": None}}

    def _upsert(self, variables: dict[str, Any]) -> dict[str, Any]:
        view_id = variables.get("id") or f"view{len(self.views) + 1}"
        inserted = view_id not in self.views
        name = variables.get("name") or f"generated{len(self.views) + 1}"
        self.views[view_id] = {**variables, "id": view_id, "name": name}
        return {"view": self._node(self.views[view_id]), "inserted": inserted}

    @staticmethod
    def _node(view: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": view["id"],
            "type": view.get("type"),
            "name": view["name"],
            "displayName": view.get("displayName"),
            "description": view.get("description") or "",
            "project": {
                "id": PROJECT_NODE["id"],
                "name": view.get("projectName"),
                "entityName": view.get("entityName"),
            },
            "spec": view.get("spec"),
            "updatedAt": "2026-12-06T00:00:00",
            "createdAt": "2026-12-06T00:00:00",
        }
