"""Validate STAC items offline: pystac's validator with the extensions' schemas vendored.

pystac ships the core STAC schemas; the extension schemas our items use (label, mlm,
processing, file, and those they reference: classification, raster) are vendored in
``geo_hires/data/stac-extensions`` with their Apache-2.0 licences (``SOURCES.md`` there names
the repository tag of each), so validation never needs the network.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

__all__ = ["SCHEMAS", "validate_item"]

SCHEMAS = Path(__file__).resolve().parent.parent / "data" / "stac-extensions"
_VENDORED = {
    "label/v1.0.1": "label-v1.0.1.json",
    "mlm/v1.5.2": "mlm-v1.5.2.json",
    "processing/v1.2.0": "processing-v1.2.0.json",
    "processing/v1.1.0": "processing-v1.1.0.json",
    "file/v2.1.0": "file-v2.1.0.json",
    "classification/v1.1.0": "classification-v1.1.0.json",
    "raster/v1.1.0": "raster-v1.1.0.json",
}


@functools.cache
def _validator() -> Any:
    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    validator = JsonSchemaSTACValidator()
    for key, name in _VENDORED.items():
        schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
        for uri in (f"https://stac-extensions.github.io/{key}/schema.json",):
            validator.schema_cache[uri] = schema
            validator.schema_cache[uri + "#"] = schema
    return validator


def validate_item(item: dict[str, Any]) -> list[str]:
    """Validate a STAC item (dict) against the core schema and each of its extensions'.

    Returns the schema URIs it was validated against. Raises ``pystac.STACValidationError``
    when it does not validate, and refuses an extension whose schema is not vendored.
    """
    import pystac

    return list(pystac.Item.from_dict(item).validate(validator=_validator()))
