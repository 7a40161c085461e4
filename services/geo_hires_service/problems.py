"""Every error the API answers is RFC 9457 ``application/problem+json`` with a ``detail`` that
says what to change; no traceback ever reaches a client. Each one is counted by its status and
the caller's tenant (``geo_hires_errors_total``); an unexpected one is logged with the request's
id, which the client got in ``X-Request-ID``."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from geo_hires_service.observe import log, metrics
from geo_hires_service.security import Rejected
from geo_hires_service.store import QueueFullError

__all__ = [
    "PROBLEM",
    "DiskFull",
    "add_problem_handlers",
    "disk_full",
    "document_problems",
    "first_error",
    "problem",
    "problem_doc",
]

PROBLEM = "application/problem+json"


class DiskFull(Rejected):
    """The service's disk (or its filesystem quota) is full: ``507``."""

    def __init__(self) -> None:
        super().__init__(
            "the service's disk is full; retry later or ask its operator for room", status=507
        )


def disk_full(exc: OSError) -> bool:
    """Whether an ``OSError`` says the disk or a filesystem quota is full."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status}
    return JSONResponse({**body, "detail": detail}, status, headers=headers, media_type=PROBLEM)


def first_error(errors: Sequence[Any], where_default: str) -> str:
    """``location: message`` of pydantic's first error (what a client should fix first)."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(x) for x in first["loc"]) or where_default
    return f"{where}: {first['msg']}"


def _counted(request: Request, response: JSONResponse) -> JSONResponse:
    tenant = getattr(request.state, "tenant", "-")
    metrics().errors.inc(tags={"type": f"http_{response.status_code}", "tenant": tenant})
    return response


async def _http(r: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return _counted(r, problem(exc.status_code, str(exc.detail), dict(exc.headers or {})))


async def _invalid(r: Request, exc: Exception) -> JSONResponse:
    """A body that does not validate is ``422``; a query parameter that does not is ``400``,
    as OGC API Features asks of its ``limit``, ``offset`` and ``bbox``."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    status = 400 if errors and errors[0]["loc"][:1] == ("query",) else 422
    return _counted(r, problem(status, first_error(errors, "")))


async def _rejected(r: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Rejected)
    return _counted(r, problem(exc.status, str(exc)))


async def _full(r: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QueueFullError)
    return _counted(r, problem(429, str(exc), {"Retry-After": str(exc.retry_after_s)}))


async def _disconnected(r: Request, exc: Exception) -> JSONResponse:
    """The client hung up mid-body: no error of ours (nobody reads the answer)."""
    log.info("client disconnected", extra={"request_id": r.headers.get("x-request-id", "")})
    return _counted(r, problem(400, "the request body ended early: the client hung up"))


async def _unexpected(r: Request, exc: Exception) -> JSONResponse:
    """A bug, or the disk filling up somewhere unforeseen: a problem, never a traceback."""
    if isinstance(exc, OSError) and disk_full(exc):
        full = DiskFull()
        return _counted(r, problem(full.status, str(full)))
    rid = r.headers.get("x-request-id", "")
    log.error("request failed", exc_info=exc, extra={"request_id": rid})
    return _counted(r, problem(500, f"internal error; quote request id {rid} to the operator"))


def add_problem_handlers(app: FastAPI) -> None:
    """Answer HTTP errors, invalid requests, refusals, a full queue and anything unexpected
    as problems."""
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Rejected, _rejected)
    app.add_exception_handler(QueueFullError, _full)
    app.add_exception_handler(ClientDisconnect, _disconnected)
    app.add_exception_handler(Exception, _unexpected)


_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                   "status": {"type": "integer"}, "detail": {"type": "string"}},
    "required": ["type", "title", "status", "detail"],
}  # fmt: skip


def problem_doc(description: str) -> dict[str, Any]:
    """An OpenAPI response that is a problem (for a route's ``responses``)."""
    return {"description": description,
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}  # fmt: skip


ANSWERS = {
    400: "a request the service refuses: an unreadable scene or a path outside the allowed "
         "roots, a malformed upload (the detail says which)",
    401: "no valid bearer token",
    404: "no such job of yours (or a scene by path or URI that does not exist)",
    408: "the request body sent nothing for 60 s, or came at under 16 KiB/s after that",
    409: "the job has not finished yet",
    410: "the job failed or was cancelled, or its file is no longer kept: it never will have one",
    411: "an upload without a Content-Length header",
    413: "the upload, the JSON body or the scene's declared pixels are over their limits, or "
         "the tenant's storage quota is full",
    415: "the upload is not multipart/form-data with a TIFF, or the body is not JSON",
    429: "too many jobs or uploads at once (the queue, the tenant's share); Retry-After says "
         "when to send it again",
    502: "an object in a bucket the service's credentials cannot read",
    507: "the service's disk is full",
}  # fmt: skip
"""What the service's own refusals mean, for the API definition (``answers(...)``)."""


PUBLIC = frozenset({"/", "/conformance", "/v1/healthz", "/v1/jobs/{job_id}/map"})
"""The paths answered without a token (the map page reads its token from its URL's fragment,
which no server sees, and asks with it)."""
SECURITY = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "basic": {"type": "http", "scheme": "basic",
              "description": "any user name, the token as the password (QGIS, GDAL)"},
}  # fmt: skip


def answers(*codes: int) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses``: each of ``codes`` as a problem of :data:`ANSWERS`."""
    return {code: problem_doc(ANSWERS[code]) for code in codes}


def document_problems(app: FastAPI) -> None:
    """Make the API definition say what the handlers answer: FastAPI lists a ``422``
    ``HTTPValidationError`` for every operation with parameters, where an invalid query
    parameter is a ``400`` problem and an invalid body or path a ``422`` problem (clients and
    OGC validators read the definition; ``/items`` was documented as 200 JSON or 422)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()  # FastAPI's, kept in app.openapi_schema
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = _SCHEMA
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            schemas_of = schema["components"].setdefault("securitySchemes", {})
            schemas_of.update(SECURITY)
            for path, operations in schema["paths"].items():
                for op in operations.values():
                    _problems_of(op)
                    if path not in PUBLIC:
                        op.setdefault("security", [{"bearer": []}, {"basic": []}])
                        op["responses"].setdefault("401", problem_doc(ANSWERS[401]))
        return app.openapi_schema  # type: ignore[return-value]  # built above

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _can_fail(param: dict[str, Any]) -> bool:
    """Whether a path part or header can fail validation (any string cannot)."""
    constraints = {k: v for k, v in param["schema"].items() if k not in ("title", "description")}
    return param["in"] != "query" and constraints != {"type": "string"}


def _problems_of(op: dict[str, Any]) -> None:
    responses = op.setdefault("responses", {})
    found = responses.get("422")
    if found is None or PROBLEM in found.get("content", {}):  # none, or the route's own words
        return
    del responses["422"]  # FastAPI's HTTPValidationError
    params = op.get("parameters", [])
    if any(p["in"] == "query" for p in params):  # a route's own words are kept
        responses.setdefault("400", problem_doc("a query parameter is invalid"))
    if "requestBody" in op or any(_can_fail(p) for p in params):
        responses["422"] = problem_doc("the request body (or a path part, a header) is invalid")
