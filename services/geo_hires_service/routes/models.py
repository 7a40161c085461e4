"""``/v1/healthz`` and ``/v1/models``: liveness, and the shipped models with their cards and
their STAC (MLM) items."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from geo_hires.models.card import load_card, shipped_models
from geo_hires_service.access import tenant
from geo_hires_service.ogc import base_url
from geo_hires_service.routes.stac import model_item

__all__ = ["router"]

router = APIRouter(prefix="/v1")


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/models")
def models(request: Request) -> dict[str, Any]:
    tenant(request)
    root = base_url(request)
    return {
        "models": [
            {"name": n, "card": load_card(n).as_json(), "mlm": model_item(root, n)}
            for n in shipped_models()
        ]
    }
