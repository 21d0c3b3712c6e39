"""Walks an app's routes: every route must carry a catalog entry, or the app must not start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from fleetward.catalog.entry import CatalogEntry, Lifecycle, entry_of


class UncataloguedRoute(RuntimeError):
    """Raised at start-up: a route is served that the inventory does not know, or whose
    deprecated or retired entry nothing enforces."""


@dataclass(frozen=True, slots=True)
class CatalogItem:
    methods: tuple[str, ...]
    path: str
    name: str
    entry: CatalogEntry

    def as_dict(self) -> dict[str, Any]:
        return {"methods": list(self.methods), "path": self.path, "name": self.name}


def inventory(routes: list[BaseRoute]) -> list[CatalogItem]:
    """The catalog of ``routes``; raises UncataloguedRoute naming every missing entry."""
    items: list[CatalogItem] = []
    missing: list[str] = []
    # FastAPI includes routers lazily; its route contexts carry the effective (prefixed) paths.
    for context in iter_route_contexts(routes):
        original = context.original_route
        if getattr(original, "dispatch_only", False):
            continue  # an index in front of the routes (fleetward.api.route_index): no route
        if isinstance(original, Mount):
            # A mounted sub-application would hide its routes from the inventory.
            missing.append(f"mount {original.path} (mounts are not allowed)")
            continue
        if not isinstance(original, (APIRoute, Route, WebSocketRoute)):
            missing.append(f"{type(original).__name__} (unknown route type)")
            continue
        path = context.path or original.path
        methods: tuple[str, ...] = (
            ("WEBSOCKET",)
            if isinstance(original, WebSocketRoute)
            else tuple(sorted(context.methods or ()))
        )
        entry = entry_of(context.endpoint)
        if entry is None:
            missing.append(f"{','.join(methods)} {path}")
            continue
        if entry.lifecycle is not Lifecycle.ACTIVE and not getattr(
            original, "enforces_lifecycle", False
        ):
            # Listed as deprecated or retired, served by a route that never answers 410 (a
            # plain router's, a WebSocket's): a zombie the inventory would report as gone.
            missing.append(
                f"{','.join(methods)} {path} ({entry.lifecycle.value}, but its route does not"
                " enforce the lifecycle)"
            )
            continue
        items.append(CatalogItem(methods, path, context.name or original.name, entry))
    if missing:
        raise UncataloguedRoute(
            "routes without a catalog entry the app can keep: " + "; ".join(missing)
        )
    return items


def export(routes: list[BaseRoute]) -> list[dict[str, Any]]:
    """The catalog as JSON-ready dicts, one per route, sorted by path then method."""
    rows = []
    for item in sorted(inventory(routes), key=lambda i: (i.path, i.methods)):
        row = item.as_dict()
        row.update(
            {k.removeprefix("x-fleetward-"): v for k, v in item.entry.as_extensions().items()}
        )
        rows.append(row)
    return rows
