"""The service's request and response shapes.

:class:`JobOptions` is generated from the library's one options definition
(:class:`geo_hires.detect.options.DetectOptions`): the fields a client may set, with their help
text as the OpenAPI description and the limits a shared service enforces. Only what JSON needs
differently is said here: lists for tuples, a GeoJSON object for the AOI, the character set of
band and asset names.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import typing
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from geo_hires.config import ReadConfig
from geo_hires.detect.options import DetectOptions, option_fields
from geo_hires.models.card import load_card, shipped_models
from geo_hires_service.limits import MAX_UPLOAD_BYTES
from geo_hires_service.security import Tokens
from geo_hires_service.store import Job

__all__ = ["JobOptions", "ServiceConfig", "UriSubmission", "job_json", "scene_read_config"]

NAME = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
"""Band and asset names a client may send (never a path or a GDAL option)."""
MAX_AOI_BYTES = 1_000_000
_JSON_TYPES: dict[str, Any] = {
    "levels": list[str] | None,
    "bands": list[Annotated[int, Field(ge=1, le=4096)] | Annotated[str, Field(pattern=NAME)]]
    | None,
    "asset": Annotated[str, Field(pattern=NAME)] | None,
    "aoi": dict[str, Any] | None,
}


class _Checks(BaseModel):
    """What the service checks beyond the types: shipped models only, a policy for ``rl``,
    level names of the model, an AOI of bounded size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("aoi", check_fields=False)
    @classmethod
    def _small_geojson(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and len(json.dumps(v)) > MAX_AOI_BYTES:
            raise ValueError(f"the AOI is over {MAX_AOI_BYTES:,} bytes of GeoJSON; simplify it")
        return v

    @field_validator("model", check_fields=False)
    @classmethod
    def _shipped(cls, v: str) -> str:
        if v not in shipped_models():
            raise ValueError(f"unknown model {v!r}; choose one of {shipped_models()}")
        return v

    @model_validator(mode="after")
    def _model_fits(self) -> Any:
        values = self.model_dump()
        card = load_card(values["model"])
        if values["zoom"] == "rl" and not card.extra.get("zoom_policy"):
            raise ValueError(f"model {values['model']!r} has no zoom policy; use zoom 'gate'")
        names = [lv.name for lv in card.levels]
        unknown = [n for n in values["levels"] or () if n not in names]
        if unknown:
            raise ValueError(
                f"model {values['model']!r} has no level {unknown[0]!r}; its levels: {names}"
            )
        return self


def _job_options() -> type[BaseModel]:
    hints = typing.get_type_hints(DetectOptions)
    fields: dict[str, Any] = {}
    for f in option_fields(service=True):
        kind = _JSON_TYPES.get(f.name, hints[f.name])
        meta = Field(default=f.default, description=f.metadata["help"], **f.metadata["limits"])
        fields[f.name] = (kind, meta)
    return create_model("DetectOptions", __base__=_Checks, **fields)


JobOptions = _job_options()
"""The detect options of a job (``DetectOptions`` in the OpenAPI document)."""


class UriSubmission(BaseModel):
    """``POST /v1/jobs`` as JSON: a scene already under an allow-listed root."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(
        ...,
        max_length=4096,
        description="absolute path under an allowed root, or s3://BUCKET/KEY under an allowed "
        "prefix",
    )
    options: JobOptions = Field(default_factory=JobOptions)  # type: ignore[valid-type]


def scene_read_config(max_scene_pixels: int = ReadConfig.max_scene_pixels) -> ReadConfig:
    """How the service opens every scene: the GTiff driver only, within a pixel budget, and a
    STAC item's asset only from the item's own folder."""
    return ReadConfig(driver="GTiff", max_scene_pixels=max_scene_pixels, stac_confine=True)


def job_detect_options(options: dict[str, Any]) -> DetectOptions:
    """A stored job's options (validated at submit) as the library's options."""
    return DetectOptions.from_mapping(options)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """Service settings (``geo-hires serve`` flags)."""

    data_dir: Path
    tokens: Tokens
    allow_roots: tuple[Path | str, ...] = ()
    """Folders, and ``s3://bucket/prefix/`` (text) for objects (``security.parse_root``)."""
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_scene_pixels: int = 50_000_000_000
    max_active: int = 200
    max_active_per_tenant: int = 50
    tenant_quota_bytes: int | None = None
    """Bytes of uploads and outputs each tenant may keep (``None``: no quota)."""
    retain_days: float = 7.0
    """Days a finished job's files and record are kept."""

    @property
    def read_config(self) -> ReadConfig:
        return scene_read_config(self.max_scene_pixels)


def _iso(t: float | None) -> str | None:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat() if t is not None else None


def job_json(job: Job, root: str = "") -> dict[str, Any]:
    """The public view of a job (never its tenant or server paths); its links are paths
    under ``root``, the prefix the service is mounted under."""
    return {
        "id": job.id,
        "state": job.state.value,
        "scene": job.scene_name,
        "options": job.options,
        "progress": {"units_done": job.units_done, "units_total": job.units_total},
        "detections": job.detections,
        "error": job.error,
        "cancel_requested": job.cancel_requested,
        "attempts": job.attempts,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "links": {
            "self": f"{root}/v1/jobs/{job.id}",
            "result": f"{root}/v1/jobs/{job.id}/result",
            "map": f"{root}/v1/jobs/{job.id}/map",
        },
    }
