"""Every web route declares who may use it (HR-31): the guard against a page that forgot.

Only the probes, the signed provider webhooks, the login form and the static files are
open; every other route must depend on ``dispatcher.web.auth.require`` with at least one
role. A new page without it fails here, naming the route.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from dispatcher.bootstrap import bootstrap
from dispatcher.daemon import Service
from dispatcher.domain.access import Role
from dispatcher.web.app import create_app
from dispatcher.web.auth import roles_of
from tests.conftest import settings_for

OPEN = {"/healthz", "/readyz", "/metrics", "/login"}
SIGNED = "/webhooks/twilio/"


def declared_roles(dependant: Dependant) -> list[frozenset[Role]]:
    found = []
    for sub in dependant.dependencies:
        roles = roles_of(sub.call)
        if roles is not None:
            found.append(roles)
        found += declared_roles(sub)
    return found


def flatten(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """Every API route, also inside included routers (FastAPI keeps those nested; the
    routers here have no prefix of their own beyond what their routes' paths say)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from flatten(included.routes)


def routes(tmp_path: Path) -> list[APIRoute]:
    app = create_app(Service(bootstrap(settings_for(tmp_path)), instance="test"))
    found = list(flatten(app.routes))
    assert len(found) > 5  # the walk sees the included routers
    return found


def test_every_page_route_requires_a_role(tmp_path: Path) -> None:
    unguarded = []
    for route in routes(tmp_path):
        if route.path in OPEN or route.path.startswith(SIGNED):
            continue
        declared = declared_roles(route.dependant)
        if not declared or not all(declared):
            unguarded.append(f"{sorted(route.methods)} {route.path}")
    assert unguarded == []


def test_the_open_routes_are_only_those_named(tmp_path: Path) -> None:
    """The other way round: nothing public slipped in beside the login form."""
    open_paths = {
        r.path
        for r in routes(tmp_path)
        if not declared_roles(r.dependant) and not r.path.startswith(SIGNED)
    }
    assert open_paths == OPEN


def test_the_users_page_is_for_admins_only(tmp_path: Path) -> None:
    users = [r for r in routes(tmp_path) if r.path.startswith("/users")]
    assert users
    for route in users:
        assert declared_roles(route.dependant) == [frozenset({Role.ADMIN})]
