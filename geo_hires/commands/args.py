"""Arguments shared by commands: scene reading, the detect options, executors.

The detect flags are generated from :class:`~geo_hires.detect.options.DetectOptions` (name,
type, default, help), so the command line always offers exactly the options the library and
the service know; only what belongs to a machine (device, executor, Ray) is declared here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import typing
import warnings
from collections.abc import Iterator
from types import UnionType
from typing import Any, Literal

from geo_hires.config import ReadConfig
from geo_hires.errors import ConfigError

if typing.TYPE_CHECKING:
    from geo_hires.detect.executors import Executor
    from geo_hires.detect.options import DetectOptions
    from geo_hires.models.bundle import Bundle

__all__ = [
    "SCENE_FLAGS",
    "add_detect_args",
    "add_scene_args",
    "detect_options",
    "given_flags",
    "read_config",
    "run_bundle",
    "running_executor",
]

SCENE_HELP = (
    "raster file (GeoTIFF/COG, anything GDAL reads) or STAC item; or its s3:// or https:// URL "
    "(credentials and endpoint from the standard AWS_* settings)"
)


def _items(text: str) -> tuple[int | str, ...]:
    """``3,2,1`` or ``red,green,blue``: digits become indexes, the rest names."""
    return tuple(int(t) if t.isdigit() else t for t in (s.strip() for s in text.split(",")) if t)


def _names(text: str) -> tuple[str, ...]:
    return tuple(t for t in (s.strip() for s in text.split(",")) if t)


def _argument(name: str, hint: Any, default: Any) -> dict[str, Any]:
    """argparse keywords for an option of type ``hint``."""
    args = typing.get_args(hint)
    if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        if any(typing.get_origin(a) is dict for a in inner):  # a file here, GeoJSON in a job
            return {"metavar": "FILE"}
        return _argument(name, inner[0], default)
    if typing.get_origin(hint) is Literal:
        return {"choices": list(args)}
    if typing.get_origin(hint) is tuple:
        parse = _names if args[0] is str else _items
        return {"type": parse, "metavar": "A,B,…"}
    return {"type": hint}


@functools.cache
def _hints() -> dict[str, Any]:
    from geo_hires.detect.options import DetectOptions

    return typing.get_type_hints(DetectOptions)


BARE_PT_FLAGS: dict[str, Any] = {"model_gsd": None, "window": 640}
"""The defaults of the flags that describe a bare ``.pt`` model."""
RAY_FLAGS: dict[str, Any] = {"address": None, "actors": 2, "gpus_per_actor": None,
                             "cpus_per_actor": 1.0, "placement_timeout": 600.0}  # fmt: skip
"""The defaults of the flags that size the Ray executor."""


def add_detect_args(p: argparse.ArgumentParser) -> None:
    """The flags of every :class:`DetectOptions` field, then the machine's own."""
    from geo_hires.detect.options import option_fields

    hints = _hints()
    for f in option_fields():
        kw = _argument(f.name, hints[f.name], f.default)
        help_ = f.metadata["help"] + (" (default: %(default)s)" if f.default is not None else "")
        p.add_argument(f"--{f.name.replace('_', '-')}", default=f.default, help=help_, **kw)
    p.add_argument(
        "--model-gsd", type=float, default=BARE_PT_FLAGS["model_gsd"],
        help="for a bare .pt: metres per pixel of the imagery it was trained on",
    )  # fmt: skip
    p.add_argument(
        "--window", type=int, default=BARE_PT_FLAGS["window"],
        help="for a bare .pt: window side in pixels (its imgsz); windows overlap by 96 px",
    )  # fmt: skip
    _add_machine_args(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--max-pixels", type=int, default=0, help="declared-size budget (pixels)")


def _add_machine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the network runs (auto: CUDA when present; with --executor ray: "
                        "on the actors' nodes, checked there)")  # fmt: skip
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="run work units in this process, or on Ray scanner actors")  # fmt: skip
    ray = RAY_FLAGS
    p.add_argument(
        "--address", default=ray["address"], help="Ray cluster to join (auto or HOST:PORT)"
    )
    p.add_argument("--actors", type=int, default=ray["actors"], help="Ray scanner actors")
    p.add_argument("--gpus-per-actor", type=float, default=ray["gpus_per_actor"],
                   help="GPUs per Ray actor")  # fmt: skip
    p.add_argument("--cpus-per-actor", type=float, default=ray["cpus_per_actor"],
                   help="CPUs Ray reserves per actor")  # fmt: skip
    p.add_argument(
        "--placement-timeout", type=float, default=ray["placement_timeout"],
        help="seconds work may wait with no Ray actor placed before the scene fails",
    )  # fmt: skip


def renaming(text: str) -> tuple[str, str]:
    """``--class-map OLD=NEW`` as a pair (argparse's usage error otherwise)."""
    old, sep, new = text.partition("=")
    if not sep or not old or not new:
        raise argparse.ArgumentTypeError(f"{text!r}: write OLD=NEW (Truncated_airplane=Airplane)")
    return old, new


SCENE_FLAGS: dict[str, Any] = {"asset": None, "bands": None, "max_pixels": 0, "rpc_height": 0.0}
"""The defaults of the flags that say how a scene is read."""


def add_scene_args(p: argparse.ArgumentParser) -> None:
    """Reading options of commands that open a scene without detecting in it."""
    scene = SCENE_FLAGS
    p.add_argument("--max-pixels", type=int, default=scene["max_pixels"],
                   help="declared-size budget (pixels)")  # fmt: skip
    p.add_argument(
        "--bands", default=scene["bands"], type=_items, metavar="R,G,B",
        help="scene bands used as red, green, blue: 1-based indexes (3,2,1) or names "
        "(colour interpretation or band description); default: by colour interpretation",
    )  # fmt: skip
    p.add_argument(
        "--rpc-height", type=float, default=scene["rpc_height"], metavar="M",
        help="height above the ellipsoid (m) for scenes placed by RPCs (default 0)",
    )  # fmt: skip
    p.add_argument(
        "--asset",
        default=scene["asset"],
        metavar="KEY",
        help="for a STAC item: the asset to scan (default: the visual/RGB one)",
    )


def detect_options(args: argparse.Namespace) -> DetectOptions:
    """The :class:`DetectOptions` the flags set."""
    from geo_hires.detect.options import DetectOptions, option_fields

    _warn_moot(args)
    return DetectOptions(**{f.name: getattr(args, f.name) for f in option_fields()})


def _warn_moot(args: argparse.Namespace) -> None:
    """Say which given flags this run leaves unused, rather than drop them unsaid."""
    from geo_hires.errors import OptionIgnoredWarning

    moot = {
        "for a bare .pt model only": [] if _bare_pt(args) else given_flags(args, BARE_PT_FLAGS),
        "for --executor ray only": given_flags(args, RAY_FLAGS) if args.executor == "local" else [],
    }
    for why, flags in moot.items():
        if flags:
            warnings.warn(f"{', '.join(flags)}: {why}; ignored", OptionIgnoredWarning, stacklevel=3)


def given_flags(args: argparse.Namespace, defaults: dict[str, Any]) -> list[str]:
    """The flags among ``defaults``' that the command line set to another value."""
    return ["--" + k.replace("_", "-") for k, v in defaults.items() if getattr(args, k) != v]


def _bare_pt(args: argparse.Namespace) -> bool:
    return str(args.model).lower().endswith(".pt")


def read_config(args: argparse.Namespace) -> ReadConfig:
    """The read budget of the flags (``detect_options(args).read_config`` adds the rest)."""
    base = ReadConfig(max_scene_pixels=args.max_pixels) if args.max_pixels else ReadConfig()
    return dataclasses.replace(
        base,
        bands=getattr(args, "bands", None) or None,
        rpc_height_m=getattr(args, "rpc_height", 0.0),
        stac_asset=getattr(args, "asset", None),
    )


def run_bundle(args: argparse.Namespace) -> Bundle | None:
    """A bare ultralytics ``.pt`` loaded as a bundle; ``None`` for a name or bundle folder."""
    if not _bare_pt(args):
        return None
    from geo_hires.models.bundle import load_pt

    if args.model_gsd is None:
        raise ConfigError(
            f"--model {args.model}: a bare .pt needs --model-gsd (metres per pixel of its "
            "training data); or give a bundle folder with a card.json"
        )
    return load_pt(args.model, gsd_m=args.model_gsd, window=args.window)


def _executor(args: argparse.Namespace) -> Executor:
    import torch

    from geo_hires.detect.executors import LocalExecutor

    device = None if args.device == "auto" else torch.device(args.device)
    if args.executor == "local":
        return LocalExecutor(device=device)  # which refuses a CUDA device that is not there
    try:
        from geo_hires.detect.ray_executor import RayConfig, RayExecutor
    except ImportError as exc:
        raise ConfigError(
            f"--executor ray needs Ray installed (pip install 'ray[default]'): {exc}"
        ) from exc
    gpus = args.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if device is not None and device.type == "cuda" else 0.0
    config = RayConfig(address=args.address, actors=args.actors, num_cpus=args.cpus_per_actor,
                       num_gpus=gpus, placement_timeout_s=args.placement_timeout,
                       device=None if device is None else device.type)  # fmt: skip
    return RayExecutor(config=config)


@contextlib.contextmanager
def running_executor(args: argparse.Namespace) -> Iterator[Executor]:
    """The executor the flags ask for, with its workers (Ray actors) stopped afterwards."""
    executor = _executor(args)
    try:
        yield executor
    finally:
        stop = getattr(executor, "shutdown", None)
        if stop is not None:
            stop()
