"""A model bundle, loaded: its card and every network the card names, as one value.

Every stage after loading (planning, units, executors, journal) takes a :class:`Bundle`,
because a card may give each level its own detector (YOLT: one model for small objects at full
resolution, another for large ones on a downsampled level), may add a cascade refiner and a
learned zoom policy. The value also says how to ship itself to a Ray actor (:meth:`payload`:
the FCN's state dict and the ``.pt`` files' bytes, so a worker node needs no copy of the
bundle), what identifies its weights (:attr:`digest`) and what identifies all that decides its
results (:attr:`identity`, for journals). Card I/O alone is
:mod:`geo_hires.models.card`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import numbers
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geo_hires.config import config_id
from geo_hires.errors import ConfigError, option
from geo_hires.models.card import Level, ModelCard, bundle_dir, load_card, save_card

if TYPE_CHECKING:
    import torch

    from geo_hires.models.fcn import FCNDetector
    from geo_hires.models.yolo import YoloModel
    from geo_hires.models.zoom_policy import ZoomPolicy

__all__ = ["Bundle", "load_bundle", "load_pt", "save_bundle"]


def _digest(net: torch.nn.Module | None, files: Mapping[str, bytes]) -> str:
    h = hashlib.sha256()
    if net is not None:
        for tensor in net.state_dict().values():
            h.update(tensor.detach().cpu().numpy().tobytes())
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name])
    return h.hexdigest()[:16]


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Bundle:
    """The card and the loaded networks of one bundle.

    Attributes:
        card: What the bundle declares (levels, classes, GSD, cascade, threshold).
        fcn: The folded scanning network, or ``None`` when no level runs it.
        yolo: ultralytics models by the file name the card uses.
        files: Those files' bytes (what :meth:`payload` ships).
        digest: Identity of all the weights (16 hex digits).
        policy: The learned zoom policy, when the card names one (``zoom_policy``); it runs
            where zoom decisions are made (the driver), so it is not in :meth:`payload`.
    """

    card: ModelCard
    fcn: FCNDetector | None
    yolo: Mapping[str, YoloModel] = dataclasses.field(default_factory=dict)
    files: Mapping[str, bytes] = dataclasses.field(default_factory=dict)
    digest: str = ""
    policy: ZoomPolicy | None = None

    @classmethod
    def of_network(cls, fcn: FCNDetector, card: ModelCard) -> Bundle:
        """A scanning network and its card as a bundle (a network being trained, a test's)."""
        return cls(card=card, fcn=fcn, digest=_digest(fcn, {}))

    @property
    def name(self) -> str:
        return self.card.name

    @functools.cached_property
    def identity(self) -> str:
        """What of the bundle decides a run's units and boxes (a journal's tie to its model):
        the weights, the card without its records (levels, GSD, thresholds, cascade: a bare
        ``.pt`` given another ``--model-gsd`` or ``--window`` has the same weights but other
        units) and the zoom policy, which chooses the fine units. Computed once per value (the
        Ray executor asks for it on every scene; a changed bundle is a new value)."""
        policy = None if self.policy is None else (_digest(self.policy, {}), self.policy.spec)
        return config_id(self.digest, dataclasses.replace(self.card, extra={}), policy)

    @property
    def fcn_digest(self) -> str:
        """Identity of the scanning network alone (what a zoom policy is trained for)."""
        return _digest(self.fcn, {})

    def network(self) -> FCNDetector:
        """The scanning network; a clear error for cards whose levels need one but lack it."""
        if self.fcn is None:
            raise ConfigError("this bundle has no scanning network ('arch' and weights.pt)")
        return self.fcn

    def model(self, name: str) -> YoloModel:
        """The ultralytics model the card calls ``name``."""
        if name not in self.yolo:
            raise ConfigError(f"the bundle has no ultralytics model {name!r}")
        return self.yolo[name]

    def payload(self) -> dict[str, Any]:
        """What a Ray actor needs to rebuild this value (see :meth:`from_payload`)."""
        state = None if self.fcn is None else {k: v.cpu() for k, v in self.fcn.state_dict().items()}
        return {"fcn": state, "files": dict(self.files), "digest": self.digest}

    @classmethod
    def from_payload(cls, card: ModelCard, payload: Mapping[str, Any]) -> Bundle:
        """Rebuild on an actor: the FCN from its state, each ``.pt`` from its bytes."""
        fcn = None
        if payload["fcn"] is not None and card.arch is not None:
            fcn = _network(card)
            fcn.load_state_dict(payload["fcn"])
            fcn = fcn.eval()
        # ultralytics loads from a file; the copies go once loaded (an actor per run, per
        # replacement, per settings change: a long-lived node would fill its disk with them)
        with tempfile.TemporaryDirectory(prefix="geo-hires-models-") as tmp:
            for name, data in payload["files"].items():  # names the card checked: inside
                (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / name).write_bytes(data)
            yolo = _load_yolos(Path(tmp), card)
        return cls(card=card, fcn=fcn, yolo=yolo, files=payload["files"], digest=payload["digest"])


def _network(card: ModelCard) -> FCNDetector:
    """The card's scanning architecture, BatchNorm folded (the form weights are saved in)."""
    from geo_hires.models.fcn import FCNDetector, fold_batchnorm

    if card.arch is None:
        raise ConfigError(f"model {card.name!r} has no scanning network ('arch')")
    return fold_batchnorm(FCNDetector(card.arch))


def _weights(fcn: FCNDetector, path: Path) -> FCNDetector:
    """``fcn`` with the state dict saved at ``path``, in eval mode. Only tensors are unpickled
    (``weights_only``): a bundle folder may come from anyone, and a pickle can run code."""
    import pickle

    import torch

    if not path.is_file():
        raise ConfigError(f"{path} not found: a card with an 'arch' needs its network's weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        if "Unsupported global" in str(exc):  # a pickle of more than tensors
            raise ConfigError(
                f"{path} holds objects other than tensors, which geo_hires does not unpickle "
                "(a pickle can run code); save the network's state_dict with torch.save"
            ) from exc
        raise ConfigError(
            f"{path} is not a weights file torch loads ({type(exc).__name__}); save the "
            "network's state_dict with torch.save"
        ) from exc
    try:
        fcn.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{path} does not fit the card's 'arch' ({first})") from exc
    return fcn.eval()


def _load_yolos(folder: Path, card: ModelCard) -> dict[str, YoloModel]:
    if not card.yolo_files:
        return {}
    from geo_hires.models.yolo import load_yolo

    return {f: load_yolo(folder / f, class_names=card.classes) for f in card.yolo_files}


def load_bundle(name_or_path: str | os.PathLike[str]) -> Bundle:
    """Load every network of a bundle (shipped name or folder); eval mode, on the CPU."""
    folder = bundle_dir(name_or_path)
    card = load_card(folder)
    fcn = None
    if card.arch is not None:
        fcn = _weights(_network(card), folder / "weights.pt")
    files = {f: (folder / f).read_bytes() for f in card.yolo_files}
    policy_file = card.extra.get("zoom_policy")
    policy = None
    if policy_file:
        from geo_hires.models.zoom_policy import load_policy

        policy = load_policy(folder / policy_file, detector=_digest(fcn, {}))
    return Bundle(
        card=card,
        fcn=fcn,
        yolo=_load_yolos(folder, card),
        files=files,
        digest=_digest(fcn, files),
        policy=policy,
    )


def save_bundle(folder: str | os.PathLike[str], fcn: FCNDetector, card: ModelCard) -> Path:
    """Fold BatchNorm and write ``weights.pt`` + ``card.json`` into ``folder``."""
    import torch

    from geo_hires.models.fcn import fold_batchnorm

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(fold_batchnorm(fcn).cpu().state_dict(), out / "weights.pt")
    save_card(out, card)
    return out


def load_pt(
    path: str | os.PathLike[str], *, gsd_m: float, window: int = 640, halo: int | None = None
) -> Bundle:
    """A bare ultralytics ``.pt`` as a one-level bundle: class names from the model, the GSD
    it was trained at from the caller (the file does not know it), windows of ``window`` px
    with ``halo`` px of overlap at the level whose GSD is ``gsd_m`` (default: 96, or the
    largest a smaller window allows, see :class:`~geo_hires.models.card.Level`).

    Run it with ``run_detect(scene, outputs, bundle=load_pt(path, gsd_m=0.5))``."""
    from geo_hires.models.yolo import load_yolo

    p = Path(path)
    if isinstance(gsd_m, bool) or not isinstance(gsd_m, numbers.Real) or not 0 < gsd_m < 1e3:
        raise ConfigError(
            f"a bare .pt needs the metres per pixel it was trained at "
            f"({option('--model-gsd', api='gsd_m')}) in (0, 1000), got {gsd_m!r}"
        )
    gsd_m = float(gsd_m)
    if halo is None:  # a 128 px window (imgsz 128) was refused for the fixed 96
        halo = min(96, max(0, (window - 33) // 2 // 16 * 16))
    yolo = load_yolo(p)
    level = Level(
        name="full", target_gsd_m=gsd_m, downsample=1, detector=p.name, window=window, halo=halo
    )
    card = ModelCard(
        name=p.stem, arch=None, classes=yolo.class_names, gsd_m=gsd_m, levels=(level,),
        score_threshold=0.25, extra={"source": str(p.resolve())},
    )  # fmt: skip
    files = {p.name: p.read_bytes()}
    return Bundle(card=card, fcn=None, yolo={p.name: yolo}, files=files,
                  digest=_digest(None, files))  # fmt: skip
