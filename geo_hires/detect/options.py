"""Detection settings, defined once: the configs the stages read, and the options users set.

:class:`DetectConfig` and :class:`ZoomConfig` are what the planner, the units and the executors
read; their identity (:func:`~geo_hires.config.config_id`) goes into every output and journal.
:class:`DetectOptions` is what a person or a client sets — the ``geo-hires detect`` flags and
the service's job options are both generated from its fields (name, type, default, help text,
and the limits a shared service enforces), and :meth:`DetectOptions.detect_config` /
:meth:`DetectOptions.read_config` are the one conversion both use. So a new option is one field
here, and the command line, the OpenAPI schema and the runner cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from geo_hires.config import ReadConfig
from geo_hires.detect.option_values import plain_values
from geo_hires.errors import ConfigError, OptionIgnoredWarning, option
from geo_hires.models.card import FCN, ModelCard

__all__ = [
    "DEFAULT_MODEL",
    "PRECISIONS",
    "ZOOM_CHOICES",
    "ZOOM_MODES",
    "DetectConfig",
    "DetectOptions",
    "Precision",
    "PrecisionChoice",
    "ZoomChoice",
    "ZoomConfig",
    "ZoomMode",
    "native_bf16",
    "option_fields",
    "resolve_precision",
    "resolve_zoom",
]

DEFAULT_MODEL = "aircraft_cascade"
"""The shipped bundle ``detect``, ``batch`` and the service use when none is named."""
BLOCK = 1024
"""The default block core side (level pixels) of a scanning network's levels."""

ZoomMode = Literal["all", "gate", "rl", "random", "none"]
ZOOM_MODES: tuple[ZoomMode, ...] = get_args(ZoomMode)
ZoomChoice = Literal["auto", "all", "gate", "rl", "random", "none"]
ZOOM_CHOICES: tuple[ZoomChoice, ...] = get_args(ZoomChoice)
Precision = Literal["fp32", "bf16"]
"""What the scanning network's arithmetic runs in: fp32, or bf16 autocast (weights and sums
stay fp32; convolutions take bf16 inputs), which CPUs with AVX-512 BF16 or AMX and CUDA GPUs run
natively. The ultralytics models run fp32 (bf16 autocast made them slower on such a CPU)."""
PrecisionChoice = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[PrecisionChoice, ...] = get_args(PrecisionChoice)


def native_bf16(device_type: str) -> bool:
    """Whether a device of this type here runs bf16 natively (not emulated): a CUDA GPU that
    supports it, or a CPU whose flags list ``avx512_bf16`` or ``amx_bf16`` (Linux)."""
    if device_type == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def resolve_zoom(choice: str, card: ModelCard) -> ZoomMode:
    """``auto`` → the zoom mode the bundle's card names as measured safe (``zoom_default``:
    ``rl`` only for a policy that kept its AP on every GSD and on small objects, see
    ``docs/zoom.md``), else ``all``; any other choice as asked."""
    if choice not in ZOOM_CHOICES:
        raise ConfigError(f"{option('--zoom', choice)}: choose one of {', '.join(ZOOM_CHOICES)}")
    if choice != "auto":
        return choice
    default = card.extra.get("zoom_default", "all")
    return default if default in ZOOM_MODES else "all"


def resolve_precision(choice: str, card: ModelCard, native: bool) -> Precision:
    """``auto`` → bf16 where the device the network runs on does it natively (``native``:
    :func:`native_bf16` of that device) *and* the card records that bf16 keeps the bundle's
    validation AP (``precision.bf16.keeps_ap``, measured by ``scripts/score_precision.py``),
    else fp32; ``fp32`` and ``bf16`` as asked. A bundle without a scanning network always
    runs fp32."""
    if choice not in PRECISIONS:
        raise ConfigError(f"{option('--precision', choice)}: choose one of {', '.join(PRECISIONS)}")
    if card.arch is None or choice == "fp32":
        return "fp32"
    if choice == "bf16":
        return "bf16"
    measured = card.extra.get("precision", {}).get("bf16", {})
    return "bf16" if measured.get("keeps_ap") and native else "fp32"


def _ignored(message: str) -> None:
    warnings.warn(message, OptionIgnoredWarning, stacklevel=3)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ZoomConfig:
    """How fine windows are chosen (see :mod:`geo_hires.detect.zoom`).

    Attributes:
        mode: One of :data:`ZOOM_MODES`.
        budget: This share of the fine windows (``(0, 1]``, rounded up to whole windows; the
            rl safety rule's come on top), the highest-ranked;
            ``None``: no cap.
        window: Fine window side in fine-level pixels (a zoom decision covers one window).
        gate_threshold: Evidence score a window needs under ``gate``.
        evidence_threshold: Coarse peaks kept as evidence (any size).
        seed: Seed of ``random``.
    """

    mode: ZoomMode = "all"
    budget: float | None = None
    window: int = 512
    gate_threshold: float = 0.2
    evidence_threshold: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ZOOM_MODES:
            raise ConfigError(
                f"{option('--zoom', self.mode)}: choose one of {', '.join(ZOOM_MODES)}"
            )
        if self.budget is not None and not 0.0 < self.budget <= 1.0:
            raise ConfigError(
                f"{option('--budget', self.budget)}: give a share of windows in (0, 1]"
            )
        if self.window < 64 or self.window % 32:
            raise ConfigError(f"zoom window {self.window}: a multiple of 32, at least 64")
        if not 0.0 < self.evidence_threshold <= self.gate_threshold < 1.0:
            raise ConfigError("zoom: 0 < evidence_threshold <= gate_threshold < 1")

    @property
    def selective(self) -> bool:
        """Whether windows are chosen at all (``all`` scans the fine level as it always did)."""
        return self.mode != "all" or self.budget is not None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DetectConfig:
    """Detection settings.

    Attributes:
        core: Block core side in level pixels (a multiple of the network stride). Larger blocks
            waste less on halos but hold more memory: a block is ``(core + 2 * halo)^2`` pixels.
        batch_size: Blocks per forward pass (one work unit).
        score_threshold: Minimum heatmap score; ``None`` uses the model card's.
        iou_threshold: Class-aware NMS across levels.
        prefetch: Units read ahead on a background thread (local executor).
        max_per_block: Cap on peaks decoded per block.
        whole_read_pixels: A level of at most this many pixels is read once and sliced into
            blocks (files without internal tiling, like plain JPEG or PNG, would otherwise be
            decoded again for every block); larger levels stream block by block. The budget
            bounds what is held: 13 bytes per pixel (image and mask).
        threads: Torch intra-op threads for the forward pass, in every executor. Part of the
            numerics: CPU convolutions split their sums by thread, so the same thread count is
            what makes local and Ray runs byte-identical.
        levels: Names of the model card's levels to run (``None``: all). Unit keys keep the
            card's level indices, and the config identity covers this, so a journal of a run
            with other levels is never reused.
        zoom: Which fine windows get the full-resolution pass.
        precision: The scanning network's arithmetic (:data:`Precision`); part of the numerics,
            so of the config identity, the journal and the provenance.
    """

    core: int = BLOCK
    batch_size: int = 2
    score_threshold: float | None = None
    iou_threshold: float = 0.5
    prefetch: int = 2
    max_per_block: int = 5000
    whole_read_pixels: int = 16_000_000
    threads: int = 2
    levels: tuple[str, ...] | None = None
    zoom: ZoomConfig = dataclasses.field(default_factory=ZoomConfig)
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision {self.precision!r}: fp32 or bf16")
        if self.core < 16:
            raise ConfigError(f"{option('--block', self.core)}: give a block core of 16 px or more")
        if self.batch_size < 1 or self.prefetch < 1:
            raise ConfigError(
                f"{option('--batch', self.batch_size)}, prefetch {self.prefetch}: give 1 or more "
                "of each"
            )
        if self.threads < 1:
            raise ConfigError(f"{option('--threads', self.threads)}: give 1 or more torch threads")
        if self.score_threshold is not None and not 0.0 < self.score_threshold < 1.0:
            raise ConfigError(f"score threshold must be in (0, 1), got {self.score_threshold}")
        if self.levels is not None and (isinstance(self.levels, str) or not self.levels):
            raise ConfigError("levels: a tuple naming at least one level of the model card")
        if not 0.0 < self.iou_threshold <= 1.0 or self.max_per_block < 1:
            raise ConfigError("DetectConfig: iou_threshold in (0, 1] and max_per_block >= 1")
        if self.whole_read_pixels < 0:
            raise ConfigError("DetectConfig: whole_read_pixels >= 0 (0: always stream)")
        if not isinstance(self.zoom, ZoomConfig):
            raise ConfigError(
                f"DetectConfig.zoom is a ZoomConfig (e.g. ZoomConfig(mode={self.zoom!r})); "
                "DetectOptions takes the mode's name"
            )


def _option(default: Any, help: str, *, service: bool = True, **limits: Any) -> Any:
    """A :class:`DetectOptions` field: its help text, whether a service client may set it, and
    the limits a shared service enforces on top of the library's own checks (pydantic's
    ``gt``, ``le``, ``min_length``…)."""
    meta = {"help": help, "service": service, "limits": limits}
    return dataclasses.field(default=default, metadata=meta)


Bands = tuple[int | str, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DetectOptions:
    """Everything a user sets for one detection run (the flags of ``geo-hires detect``, the
    options of a service job). Field order is the order of the service's job options."""

    model: str = _option(
        DEFAULT_MODEL,
        "shipped model name; on the command line also a bundle folder, or an ultralytics .pt "
        "with --model-gsd",
    )
    score_threshold: float | None = _option(
        None, "minimum score (default: the model card's)", gt=0, lt=1
    )
    block: int = _option(BLOCK, "block core size (level px)", ge=64, le=4096, multiple_of=4)
    levels: tuple[str, ...] | None = _option(
        None, "level names of the model to run, comma-separated (default: all)",
        min_length=1, max_length=16,
    )  # fmt: skip
    bands: Bands | None = _option(
        None,
        "scene bands used as red, green, blue: 1-based indexes (3,2,1) or names (colour "
        "interpretation or band description); default: by colour interpretation",
        min_length=3, max_length=3,
    )  # fmt: skip
    asset: str | None = _option(
        None, "for a STAC item: the asset to scan (default: the visual one)"
    )
    aoi: str | os.PathLike[str] | dict[str, Any] | None = _option(
        None,
        "area of interest (a vector file in any format and CRS; for a service job, GeoJSON in "
        "WGS84): scan only there, keep detections centred in it",
    )
    zoom: ZoomChoice = _option(
        "auto",
        "which fine windows get the full-resolution pass: all, gate (coarse evidence), rl (the "
        "model's learned policy), random, none (coarse detections only); auto: what the "
        "model card measured safe (rl or all)",
    )
    budget: float | None = _option(
        None,
        "this share of fine windows, in (0, 1], the highest-ranked (rounded up to whole "
        "windows; those the rl safety rule forces come on top)",
        gt=0,
        le=1,
    )
    precision: PrecisionChoice = _option(
        "auto",
        "arithmetic of the scanning network: fp32, bf16, or auto (bf16 where the device runs it "
        "natively and the model card shows it keeps the model's AP, else fp32)",
    )
    batch: int = _option(2, "blocks per forward pass", service=False)
    threads: int = _option(
        2,
        "torch threads per forward pass (part of the config: equal threads, equal bytes)",
        service=False,
        ge=1,
    )
    rpc_height: float = _option(
        0.0, "height above the ellipsoid (m) for scenes placed by RPCs", service=False
    )

    def __post_init__(self) -> None:
        for name, value in plain_values(self).items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DetectOptions:
        """Options from a mapping (a job's stored options, parsed flags); lists become tuples,
        names that are not options are refused."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown detect option {unknown[0]!r}; options: {sorted(names)}")
        plain: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in values.items()
        }
        return cls(**plain)

    def detect_config(self, card: ModelCard, native: bool | None = None) -> DetectConfig:
        """The stages' settings for these options, with the precision resolved for ``card``
        on a device whose bf16 is ``native`` or not (``None``: this machine's CPU; see
        :func:`resolve_precision`). An option these settings
        leave moot is said to be (:class:`OptionIgnoredWarning`): a ``block`` or ``bf16`` for a
        bundle without a scanning network, a ``budget`` with zoom ``none``."""
        if self.block != BLOCK and not any(lv.detector == FCN for lv in card.levels):
            _ignored(
                f"{option('--block', self.block)}: {card.name} has no scanning network, whose "
                "blocks it sizes; its windows are its card's (window, halo)"
            )
        zoom = resolve_zoom(self.zoom, card)
        native = native_bf16("cpu") if native is None else native
        precision = resolve_precision(self.precision, card, native)
        if self.budget is not None and zoom == "none":
            _ignored(
                f"{option('--budget', self.budget)}: {option('--zoom', 'none')} zooms no window, "
                "so none is capped"
            )
        if self.precision == "bf16" and precision == "fp32":
            _ignored(
                f"{option('--precision', 'bf16')}: {card.name} has no scanning network; it runs in "
                "fp32"
            )
        return DetectConfig(
            core=self.block,
            batch_size=self.batch,
            threads=self.threads,
            score_threshold=self.score_threshold,
            levels=self.levels or None,
            zoom=ZoomConfig(mode=zoom, budget=self.budget),
            precision=precision,
        )

    def moot_given(self, config: DetectConfig) -> None:
        """Say which of these options a ``config`` given beside them overrides (they make the
        settings :meth:`detect_config` builds; set against their defaults, they were dropped
        without a word)."""
        usual = DetectOptions()
        for name in CONFIG_OPTIONS:
            if getattr(self, name) != getattr(usual, name):
                _ignored(f"DetectOptions.{name}: the DetectConfig given decides it; set it there")

    def read_config(self, base: ReadConfig | None = None) -> ReadConfig:
        """``base`` (the caller's read budget and driver rules) with these options' bands,
        STAC asset and RPC height."""
        return dataclasses.replace(
            base or ReadConfig(),
            bands=self.bands or None,
            stac_asset=self.asset,
            rpc_height_m=self.rpc_height,
        )


def _fields_doc() -> str:
    """The options' help texts as the class docstring's ``Attributes`` (``help()`` and IDEs
    show a docstring, not the fields' metadata the command line and the service read)."""
    lines = [f"        {f.name}: {f.metadata['help']}." for f in dataclasses.fields(DetectOptions)]
    return "\n\n    Attributes:\n" + "\n".join(lines) + "\n"


DetectOptions.__doc__ = (DetectOptions.__doc__ or "") + _fields_doc()


CONFIG_OPTIONS = (
    "block", "batch", "threads", "score_threshold", "levels", "zoom", "budget", "precision"
)  # fmt: skip
"""The options :meth:`DetectOptions.detect_config` turns into a :class:`DetectConfig`."""


def option_fields(*, service: bool = False) -> tuple[dataclasses.Field[Any], ...]:
    """The fields of :class:`DetectOptions` (only those a service client may set when
    ``service``), in order; each field's ``metadata`` holds ``help``, ``service``, ``limits``."""
    fields = dataclasses.fields(DetectOptions)
    return tuple(f for f in fields if f.metadata["service"] or not service)
