"""The FastAPI application: records jobs and answers; never runs a scene in the request path.

Versioned under ``/v1``, with OGC API – Processes and Features at the root (the same jobs,
tenants and limits: :mod:`.ogc`); every error is a problem (:mod:`.problems`). Routes read the
config and the store from ``app.state``, so the Serve ingress can build the app where the
application is defined and attach them in its replica (an engine does not travel between processes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles

from geo_hires_service.ogc import add_ogc_handlers
from geo_hires_service.problems import add_problem_handlers
from geo_hires_service.routes import features, jobs, maps, models, processes, stac
from geo_hires_service.schemas import ServiceConfig
from geo_hires_service.store import JobStore
from geo_hires_service.viewer import STATIC

__all__ = ["create_app"]


def create_app(config: ServiceConfig | None = None, store: JobStore | None = None) -> FastAPI:
    """The FastAPI application (the Serve ingress wraps it; tests run it under uvicorn too)."""
    app = FastAPI(
        title="geo_hires",
        version="1",
        description="Find objects in large georeferenced rasters; submit scenes as jobs.",
    )
    app.state.config, app.state.store = config, store
    add_problem_handlers(app)
    add_ogc_handlers(app)
    app.mount("/v1/static", StaticFiles(directory=STATIC), name="static")
    app.middleware("http")(_private)
    app.include_router(models.router)
    app.include_router(jobs.router)
    app.include_router(maps.router)
    app.include_router(stac.router)
    app.include_router(processes.router)  # OGC API - Processes, beside /v1
    app.include_router(features.router)  # OGC API - Features over the results
    return app


Handler = Callable[[Request], Awaitable[Response]]


async def _private(request: Request, call_next: Handler) -> Response:
    """Answers depend on the caller's token, so no client or proxy may store and replay them
    to another caller: QGIS's network cache served one tenant's features to the next
    connection with another token until this header said not to."""
    response = await call_next(request)
    if not request.url.path.startswith("/v1/static"):
        response.headers["Cache-Control"] = "no-store"
        response.headers["Vary"] = "Authorization"
    return response
