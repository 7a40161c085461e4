"""Every error the API answers is RFC 9457 ``application/problem+json`` with a ``detail`` that
says what to change; no traceback ever reaches a client."""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from geo_hires_service.security import Rejected
from geo_hires_service.store import QueueFullError

__all__ = ["PROBLEM", "add_problem_handlers", "first_error", "problem"]

PROBLEM = "application/problem+json"


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status}
    return JSONResponse({**body, "detail": detail}, status, headers=headers, media_type=PROBLEM)


def first_error(errors: Sequence[Any], where_default: str) -> str:
    """``location: message`` of pydantic's first error (what a client should fix first)."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(x) for x in first["loc"]) or where_default
    return f"{where}: {first['msg']}"


async def _http(_r: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, str(exc.detail), dict(exc.headers or {}))


async def _invalid(_r: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem(422, first_error(exc.errors(), ""))


async def _rejected(_r: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Rejected)
    return problem(exc.status, str(exc))


async def _full(_r: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QueueFullError)
    return problem(429, str(exc), {"Retry-After": str(exc.retry_after_s)})


def add_problem_handlers(app: FastAPI) -> None:
    """Answer HTTP errors, invalid requests, refusals and a full queue as problems."""
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Rejected, _rejected)
    app.add_exception_handler(QueueFullError, _full)
