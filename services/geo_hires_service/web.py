"""The FastAPI application: records jobs and answers; never runs a scene in the request path.

Versioned under ``/v1``, with OGC API – Processes and Features at the root (the same jobs,
tenants and limits: :mod:`.ogc`); every error is a problem (:mod:`.problems`). Routes read the
config and the store from ``app.state``, so the Serve ingress can build the app where the
application is defined and attach them in its replica (an engine does not travel between
processes).

Every request has an id: the client's ``X-Request-ID`` if it sends a usable one, else a new
one; it is answered in ``X-Request-ID`` and logged with what the request did. Under Ray Serve
the proxy does exactly this (and its log lines carry the id); elsewhere (uvicorn)
:class:`RequestIds` does.
"""

from __future__ import annotations

import uuid

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from geo_hires_service.ogc import add_ogc_handlers
from geo_hires_service.problems import add_problem_handlers, document_problems
from geo_hires_service.routes import features, jobs, maps, models, processes, stac
from geo_hires_service.schemas import ServiceConfig
from geo_hires_service.store import REQUEST_ID, JobStore
from geo_hires_service.viewer import STATIC

__all__ = ["HeadAsGet", "Private", "RequestIds", "create_app"]


class RequestIds:
    """ASGI middleware: honour a usable ``X-Request-ID``, else make one; answer it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = MutableHeaders(scope=scope)
        rid = headers.get("x-request-id", "")
        if not REQUEST_ID.fullmatch(rid):
            rid = uuid.uuid4().hex
            headers["x-request-id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        await self.app(scope, receive, send_with_id)


class Private:
    """ASGI middleware: answers depend on the caller's token, so no client or proxy may store
    and replay them to another caller (QGIS's network cache served one tenant's features to
    the next connection with another token until ``no-store`` said not to)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/v1/static"):
            await self.app(scope, receive, send)
            return

        async def send_private(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Cache-Control"] = "no-store"
                headers["Vary"] = "Authorization"
            await send(message)

        await self.app(scope, receive, send_private)


class HeadAsGet:
    """ASGI middleware: ``HEAD`` is answered as ``GET`` without the body (RFC 9110 §9.1: a
    general-purpose server supports both; FastAPI routes ``GET`` alone, and clients that check
    a resource before fetching it got ``405``). The app is told it may answer with a file's
    path (ASGI's ``pathsend``), which is then dropped: a HEAD of a large result read the file
    to send nothing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            elif message["type"] == "http.response.pathsend":  # a server that sends files
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        extensions = {**scope.get("extensions", {}), "http.response.pathsend": {}}
        await self.app({**scope, "method": "GET", "extensions": extensions}, receive, send_headers)


def create_app(
    config: ServiceConfig | None = None, store: JobStore | None = None, *, request_ids: bool = True
) -> FastAPI:
    """The FastAPI application (the Serve ingress wraps it; tests run it under uvicorn too).

    ``request_ids``: answer ``X-Request-ID`` here (off under Serve, whose proxy does it).
    """
    app = FastAPI(
        title="geo_hires",
        version="1",
        description="Find objects in large georeferenced rasters; submit scenes as jobs.",
    )
    app.state.config, app.state.store = config, store
    add_problem_handlers(app)
    document_problems(app)
    add_ogc_handlers(app)
    app.mount("/v1/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(models.router)
    app.include_router(jobs.router)
    app.include_router(maps.router)
    app.include_router(stac.router)
    app.include_router(processes.router)  # OGC API - Processes, beside /v1
    app.include_router(features.router)  # OGC API - Features over the results
    app.add_middleware(Private)
    app.add_middleware(HeadAsGet)
    if request_ids:
        app.add_middleware(RequestIds)
    return app
