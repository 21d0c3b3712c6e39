"""An index in front of the app's routes: a request is offered only to the top-level routers
that hold a route whose path matches it, instead of to every one of them in turn.

FastAPI matches a request by asking each top-level route in order; an included router
answers by asking each of its own routes (and FastAPI asks again, one level down, when it
hands the request over). With ~160 routes in ~24 routers that cost ~180 us of the event
loop's time to find a command route and ~55 us for a vehicle's status, before anything else
of the request was done; with the index ~40 us and ~11 us (measured in process, 2026-12-06).
A path no route matches still pays FastAPI's full scan (twice: once more for the
trailing-slash redirect), ~470 us for a 404, as before.

Every route's path is compiled by Starlette into a regular expression. The index joins, per
top-level router and per first path segment, the expressions of the router's routes into one
alternation: one match in C says whether the router holds a route whose PATH matches. Only
such routers, in their order, are offered the request, through FastAPI's own matching; the
first that matches fully is the one FastAPI's scan would have found, since a router with no
route of that path cannot match. Anything else -- no route's path matches (a 404), none
matches fully (a 405), a scope the index does not cover -- answers "no match" here, and
FastAPI's own scan, which follows the index in the route list, decides exactly as it would
without the index.

The index is a route only in name: it serves nothing of its own (``dispatch_only``; the
inventory skips it) and sits at position 0 of ``app.router.routes``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any, Final

from fastapi.routing import iter_route_contexts
from starlette.datastructures import URLPath
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

# The scope key carrying the route the index chose, from matches() to handle().
_CHOSEN: Final = "fleetward.route_index"
_NAMED_GROUP: Final = re.compile(r"\(\?P<[^>]+>")
_ANY: Final = ""  # the bucket key of a route whose first segment is not a fixed literal


def _first_segment(template: str) -> str:
    """The literal first segment every path of ``template`` has, or _ANY."""
    literal = template.split("{", 1)[0]
    if not literal.startswith("/"):
        return _ANY
    rest = literal[1:]
    if "/" in rest:
        return rest.split("/", 1)[0]
    return rest if "{" not in template else _ANY  # "/healthz" is whole; "/x{y}" is not


def _bare(regex: re.Pattern[str] | None) -> str:
    """A route's path expression without its anchors and group names (to be joined)."""
    if regex is None:
        return ".*"  # unknown: offered first, and FastAPI decides
    return _NAMED_GROUP.sub("(?:", regex.pattern.removeprefix("^").removesuffix("$"))


class RouteIndex(BaseRoute):
    """Offers a request to the routers holding a route of its path, in order, and otherwise
    leaves it to FastAPI's scan (see the module docstring)."""

    dispatch_only = True

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.covers = tuple(routes)
        leaves: list[tuple[int, str, str]] = []  # (router position, first segment, expr)
        for position, route in enumerate(routes):
            for context in iter_route_contexts([route]):
                template = str(context.path or getattr(context.original_route, "path", ""))
                regex = context.path_regex or getattr(context.original_route, "path_regex", None)
                leaves.append((position, _first_segment(template), _bare(regex)))
        segments = {segment for _, segment, _ in leaves} | {_ANY}
        self._buckets = {
            segment: _bucket(routes, [(p, e) for p, s, e in leaves if s in (segment, _ANY)])
            for segment in segments
        }

    def candidates(self, path: str) -> Iterator[BaseRoute]:
        """The routers holding a route whose path matches ``path``, in their order."""
        first = path[1:].split("/", 1)[0] if path.startswith("/") else _ANY
        for route, expression in self._buckets.get(first, self._buckets[_ANY]):
            if expression.match(path) is not None:
                yield route

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = scope.get("path")
        if scope["type"] not in ("http", "websocket") or not isinstance(path, str):
            return Match.NONE, {}
        if scope.get("root_path"):
            return Match.NONE, {}  # routes match the path below the root: left to FastAPI
        for route in self.candidates(path):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                return Match.FULL, {**child_scope, _CHOSEN: route}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: BaseRoute = scope.pop(_CHOSEN)
        await route.handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)  # the indexed routes answer for themselves


def _bucket(
    routes: Sequence[BaseRoute], leaves: list[tuple[int, str]]
) -> tuple[tuple[BaseRoute, re.Pattern[str]], ...]:
    """Per router (in order) one expression for its routes among ``leaves``."""
    by_router: dict[int, list[str]] = {}
    for position, expression in leaves:
        by_router.setdefault(position, []).append(expression)
    return tuple(
        (routes[position], re.compile("^(?:" + "|".join(expressions) + ")$"))
        for position, expressions in sorted(by_router.items())
    )


def install_route_index(routes: list[BaseRoute]) -> RouteIndex:
    """Put an index of ``routes`` (as they are now) in front of them, in place; the index
    already there is kept if it covers exactly these routes (start-up installs it twice: at
    the end of ``build_app`` and again when serving, in case routes were added between)."""
    current = [r for r in routes if not getattr(r, "dispatch_only", False)]
    first = routes[0] if routes else None
    if (
        isinstance(first, RouteIndex)
        and len(first.covers) == len(current)
        and all(a is b for a, b in zip(first.covers, current, strict=True))
    ):
        return first
    index = RouteIndex(current)
    routes[:] = [index, *current]
    return index


__all__ = ["RouteIndex", "install_route_index"]
