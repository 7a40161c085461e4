"""Option values of the right kind: what :class:`~geo_hires.detect.options.DetectOptions`
keeps of what a Python caller gives (a ``Path``, a numpy number, a list), or one
:class:`~geo_hires.errors.ConfigError` saying what the option takes. The command line and the
service hand over values of the right kind already; an untyped caller's wrong kind failed deep
in a stage, or broke a batch's status file."""

from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Mapping
from typing import Any

from geo_hires.errors import ConfigError

__all__ = ["plain", "plain_values"]

_NUMBERS = {"score_threshold": float, "budget": float, "rpc_height": float, "block": int,
            "batch": int, "threads": int}  # fmt: skip
_AOI_HINT = (
    "a vector file's path or a GeoJSON mapping in WGS84 (a GeoDataFrame: "
    "json.loads(frame.to_crs(4326).to_json()); a lon/lat shapely geometry: "
    "shapely.geometry.mapping(geometry))"
)


OPTIONAL = frozenset({"score_threshold", "levels", "bands", "asset", "aoi", "budget"})
"""The options ``None`` may leave unset (the others have a value to run with)."""


def plain(name: str, value: Any) -> Any:
    """``value`` of option ``name`` as the options keep it (paths as text, numpy numbers as
    Python's, sequences as tuples of them), or :class:`ConfigError` naming what the option
    takes: from Python, a wrong kind failed deep in a stage, or was recorded as it came and
    broke the batch's status file."""
    if value is None:
        if name not in OPTIONAL:
            raise ConfigError(f"DetectOptions.{name}: give a value (None leaves it unset only "
                              f"for {', '.join(sorted(OPTIONAL))})")  # fmt: skip
        return None
    if name in _NUMBERS:
        return _number(name, value, _NUMBERS[name])
    if name in ("levels", "bands"):
        return _sequence(name, value)
    if name in ("model", "aoi") and isinstance(value, os.PathLike):
        return os.fspath(value)
    if name == "aoi" and not isinstance(value, str | Mapping):
        raise ConfigError(f"DetectOptions.aoi: {_AOI_HINT}; got a {type(value).__name__}")
    if name != "aoi" and not isinstance(value, str):
        hint = " (a loaded Bundle goes to run_detect(..., bundle=b))" if name == "model" else ""
        raise ConfigError(f"DetectOptions.{name}: a name (str), got {value!r}{hint}")
    return value


def _number(name: str, value: Any, kind: type[int] | type[float]) -> int | float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"DetectOptions.{name}: a number ({kind.__name__}), got {value!r}")
    if kind is float:
        return float(value)
    if not isinstance(value, numbers.Integral):
        raise ConfigError(f"DetectOptions.{name}: a whole number (int), got {value!r}")
    return int(value)


def _sequence(name: str, value: Any) -> tuple[int | str, ...]:
    """``bands``: band numbers or names; ``levels``: level names (each item kept as Python's:
    a numpy number in a tuple broke the batch's status file as a lone one did)."""
    example = "(3, 2, 1)" if name == "bands" else '("coarse",)'
    if isinstance(value, str | bytes) or not isinstance(value, tuple | list):
        raise ConfigError(f"DetectOptions.{name}: a tuple such as {example}, got {value!r}")
    out: list[int | str] = []
    for item in value:
        if isinstance(item, str):
            out.append(item)
        elif name == "bands" and isinstance(item, numbers.Integral) and not isinstance(item, bool):
            out.append(int(item))
        else:
            raise ConfigError(f"DetectOptions.{name}: a tuple such as {example}, got {value!r}")
    return tuple(out)


def plain_values(opts: Any) -> dict[str, Any]:
    """The fields of ``opts`` (a :class:`~geo_hires.detect.options.DetectOptions`) whose kept
    value differs from the value given (see :func:`plain`)."""
    out = {}
    for field in dataclasses.fields(opts):
        given = getattr(opts, field.name)
        kept = plain(field.name, given)
        if kept is not given:
            out[field.name] = kept
    return out
