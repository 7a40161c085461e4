"""Scenes arriving at the service: uploads copied to disk within limits, URIs under allowed
roots (folders or bucket prefixes), and the scene's header opened and (for a file) its block
table checked before a job is accepted (a bad scene is a 4xx now rather than a failed job later).

Disk full while an upload arrives (``ENOSPC``, or a filesystem quota's ``EDQUOT``) is ``507``,
and the partial file is removed: nothing half-written stays behind.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect
from starlette.types import Message

from geo_hires.aoi import AoiWarning, load_aoi
from geo_hires.errors import (
    ConfigError,
    SceneNotFoundError,
    SceneReadError,
    SceneTooLargeError,
    StorageError,
    UnsupportedBandsError,
    quiet,
)
from geo_hires.scene.integrity import check_blocks
from geo_hires.scene.stac import open_input
from geo_hires_service.problems import DiskFull, disk_full, first_error
from geo_hires_service.schemas import (
    MAX_AOI_BYTES,
    JobOptions,
    ServiceConfig,
    UriSubmission,
    job_detect_options,
)
from geo_hires_service.security import Rejected, is_tiff, resolve_scene_uri, scene_name

__all__ = [
    "check_header",
    "drop_upload",
    "from_upload",
    "from_uri",
    "safe_name",
    "save_upload",
    "submit_body",
    "uploading",
]

MAX_UPLOADS, MAX_UPLOADS_PER_TENANT = 4, 2
"""Uploads one ingress process receives at once, in all and per tenant. Why: each holds a
request slot of the ingress (a client that stops sending holds it until it hangs up) and, under
Ray Serve, up to its size in the proxy's memory; beyond these, ``429`` before the body is read,
so status calls, health checks and submissions by path always get a slot (and no tenant takes
more than half the uploads)."""

_IN_FLIGHT: collections.Counter[str] = collections.Counter()


@contextlib.contextmanager
def uploading(tenant: str) -> Iterator[None]:
    """Count an upload in flight for its whole reception, refused (429) past the limits."""
    from geo_hires_service.records import QueueFullError

    if _IN_FLIGHT[tenant] >= MAX_UPLOADS_PER_TENANT:
        raise QueueFullError(
            f"you are sending {_IN_FLIGHT[tenant]} uploads already (limit "
            f"{MAX_UPLOADS_PER_TENANT}); send this one when one has arrived",
            retry_after_s=10,
        )
    if _IN_FLIGHT.total() >= MAX_UPLOADS:
        raise QueueFullError(
            f"the service is receiving {MAX_UPLOADS} uploads; retry shortly", retry_after_s=10
        )
    _IN_FLIGHT[tenant] += 1  # the event loop's thread only: no lock needed
    try:
        yield
    finally:
        _IN_FLIGHT[tenant] -= 1
        if not _IN_FLIGHT[tenant]:
            del _IN_FLIGHT[tenant]


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
Submission = tuple[Path | str, str, BaseModel]
"""The scene (a local path, or an ``s3://`` URI), its name, its options."""


def safe_name(filename: str | None) -> str:
    """An upload's file name reduced to a safe base name (it becomes the output's provenance)."""
    name = _SAFE.sub("_", Path(filename or "").name).lstrip(".")[:200]
    return name or "scene.tif"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def save_upload(upload: UploadFile, folder: Path, limit: int, *, quota: str = "") -> Path:
    """Copy an upload into ``folder`` with a byte limit; fsynced (file and folder) on return.

    ``quota``: what the limit is when it is the tenant's remaining storage, not the upload
    limit (named in the ``413``).
    """
    try:
        folder.mkdir(parents=True)
        return await _copy(upload, folder / safe_name(upload.filename), limit, quota)
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if disk_full(exc):
            raise DiskFull() from exc
        raise
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a refused upload leaves nothing behind
        raise


async def _copy(upload: UploadFile, path: Path, limit: int, quota: str) -> Path:
    size = 0
    with path.open("wb") as fh:
        while chunk := await upload.read(1 << 20):
            if size == 0 and not is_tiff(chunk[:4]):
                raise Rejected("only GeoTIFF scenes are accepted", status=415)
            size += len(chunk)
            if size > limit:
                raise Rejected(
                    quota or f"the upload exceeds the limit of {limit:,} bytes", status=413
                )
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    if size == 0:
        raise Rejected("the scene upload is empty")
    _fsync_dir(path.parent)
    return path


def check_header(path: Path | str, config: ServiceConfig, options: BaseModel) -> None:
    """Open the scene's header now (with the job's bands) and check that every tile or strip
    of a file lies inside it, so a bad, truncated or corrupt scene or band choice is refused
    before ``202`` (an object the service's own credentials cannot read: ``502``)."""
    opts = job_detect_options(options.model_dump())
    try:
        scene, _ = open_input(path, opts.read_config(config.read_config))
        if not scene.remote:  # a bucket's object was not sent by the client: read errors say
            check_blocks(scene.path, driver="GTiff")
        if opts.aoi is not None:
            with quiet(AoiWarning):  # a miss is an empty result
                load_aoi(opts.aoi, scene)
    except (
        SceneTooLargeError, SceneReadError, UnsupportedBandsError, ConfigError, StorageError
    ) as exc:  # fmt: skip
        detail = str(exc).replace(str(path), scene_name(path))  # no server paths in answers
        if isinstance(path, Path):  # nor a STAC item's asset's: it is named by its path too
            detail = detail.replace(f"{path.parent}{os.sep}", "")
        if isinstance(exc, SceneTooLargeError):
            raise Rejected(detail, status=413) from exc
        if isinstance(exc, SceneNotFoundError):
            raise Rejected(detail, status=404) from exc
        if isinstance(exc, StorageError):
            raise Rejected(f"the storage refused the service: {detail}", status=502) from exc
        raise Rejected(f"the scene cannot be used: {detail}") from exc


def _parse_options(text: str | None) -> BaseModel:
    try:
        return JobOptions.model_validate_json(text or "{}")
    except ValidationError as exc:
        raise Rejected(f"options: {first_error(exc.errors(), 'options')}", status=422) from exc


STALL_S = 60.0
"""Seconds a request body (an upload, a JSON submission) may send nothing before it is refused
(408): a client that stops sending would otherwise hold its slot (an upload's,
:data:`MAX_UPLOADS`; the ingress's) until it hangs up."""
MIN_RATE = 16 * 1024
"""Bytes per second a request body must average after its first :data:`STALL_S` seconds (408
below): a client trickling a byte a minute is never stalled, and held its upload slots for
as long as it liked. 16 KiB/s (128 kbit/s) lets the slowest real link finish: 256 MiB in 4.5
hours."""


def _cancelled_by_serve(exc: Exception) -> bool:
    """Whether ``exc`` is Ray Serve's word for a client that hung up mid-body: its proxy
    cancels the request, and the replica's next read of the body raises ``TaskCancelledError``
    (uvicorn says ``http.disconnect``), which was logged as a failed request and counted as
    a 500. Ray is only looked up, never imported: the app runs under uvicorn too."""
    errors = sys.modules.get("ray.exceptions")
    return errors is not None and isinstance(exc, errors.TaskCancelledError)


def _stall_limited(request: Request) -> Request:
    """``request`` whose body read fails (408) once no byte has come for :data:`STALL_S`, or
    once it has fallen under :data:`MIN_RATE` on average after that long. Only the time spent
    waiting for the client counts: the server's own pauses between reads (spooling to disk,
    a busy thread pool) are not the client's slowness."""
    waited, got = 0.0, 0

    async def receive() -> Message:
        nonlocal got, waited
        asked = time.monotonic()
        try:
            message = await asyncio.wait_for(request.receive(), STALL_S)
        except TimeoutError:
            raise Rejected(
                f"the request body sent nothing for {STALL_S:g} s; send it again", status=408
            ) from None
        except Exception as exc:
            if _cancelled_by_serve(exc):
                raise ClientDisconnect() from exc
            raise
        waited += time.monotonic() - asked
        got += len(message.get("body", b""))
        late = waited - STALL_S
        if message.get("more_body") and late > 0 and got < MIN_RATE * late:
            raise Rejected(
                f"the request body came at under {MIN_RATE / 1024:g} KiB/s after its first "
                f"{STALL_S:g} s; send it again over a faster link, or submit the scene by "
                "path or URI",
                status=408,
            )
        return message

    return Request(request.scope, receive)


async def from_upload(request: Request, config: ServiceConfig, *, room: int | None) -> Submission:
    """A multipart upload (``scene`` and ``options`` fields) saved under the data dir.

    ``room``: bytes the tenant may still store (``None``: no quota); an upload beyond it is
    ``413`` like one beyond the upload limit, saying which.
    """
    length = request.headers.get("content-length")
    if length is None:
        raise Rejected("uploads need a Content-Length header", status=411)
    limit, quota = config.max_upload_bytes, ""
    if room is not None and room < limit:
        limit = room
        quota = (
            f"the upload would exceed your storage quota of {config.tenant_quota_bytes:,} "
            f"bytes ({room:,} left); delete finished jobs (DELETE /v1/jobs/ID) and send it again"
        )
    if not length.isdigit() or int(length) > limit + 1024 * 1024:
        raise Rejected(quota or f"the upload exceeds the limit of {limit:,} bytes", status=413)
    request = _stall_limited(request)
    try:
        async with request.form(max_files=1, max_fields=4) as form:
            scene = form.get("scene")
            if not isinstance(scene, UploadFile):
                raise Rejected("multipart field 'scene' (the GeoTIFF file) is missing")
            opts = form.get("options")
            options = _parse_options(opts if isinstance(opts, str) else None)
            folder = config.data_dir.resolve() / "uploads" / uuid.uuid4().hex
            path = await save_upload(scene, folder, limit, quota=quota)
    except OSError as exc:  # the parser's spool file (TMPDIR) is full
        if disk_full(exc):
            raise DiskFull() from exc
        raise
    return path, path.name, options


MAX_JSON_BYTES = 2 * MAX_AOI_BYTES
"""A JSON request body's limit: room for the largest AOI and the rest of the options."""


async def json_body(request: Request) -> bytes:
    """The request's body, refused (413) once it passes :data:`MAX_JSON_BYTES`: read as it
    streams in, so a huge body is never held in memory whatever its Content-Length says."""
    parts, size = [], 0
    async for chunk in _stall_limited(request).stream():
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise Rejected(f"the JSON body is over {MAX_JSON_BYTES:,} bytes", status=413)
        parts.append(chunk)
    return b"".join(parts)


async def from_uri(request: Request, config: ServiceConfig) -> Submission:
    """A JSON submission of a scene already under an allow-listed root (the path resolved in
    a worker thread: it asks the disk or a bucket, which must not hold up other requests)."""
    try:
        body = UriSubmission.model_validate_json(await json_body(request))
    except ValidationError as exc:
        raise Rejected(first_error(exc.errors(), "body"), status=422) from exc
    path = await run_in_threadpool(resolve_scene_uri, body.uri, config.allow_roots)
    return path, scene_name(path), body.options


def drop_upload(path: Path | str, config: ServiceConfig) -> None:
    """Remove an upload that did not become a job (URIs are never touched)."""
    if not isinstance(path, Path):
        return
    uploads = (config.data_dir / "uploads").resolve()
    if path.resolve().parent.parent == uploads:
        shutil.rmtree(path.parent, ignore_errors=True)


def submit_body() -> dict[str, Any]:
    """``POST /v1/jobs`` in the OpenAPI document (the handler parses both kinds itself)."""
    options = JobOptions.model_json_schema()
    uri = {
        "type": "object",
        "properties": {"uri": {"type": "string", "maxLength": 4096}, "options": options},
        "required": ["uri"],
        "additionalProperties": False,
    }
    upload = {
        "type": "object",
        "properties": {
            "scene": {"type": "string", "format": "binary", "description": "the GeoTIFF"},
            "options": {"type": "string", "description": "DetectOptions as JSON"},
        },
        "required": ["scene"],
    }
    return {
        "required": True,
        "content": {"application/json": {"schema": uri}, "multipart/form-data": {"schema": upload}},
    }
