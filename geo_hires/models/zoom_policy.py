"""The learned zoom policy: a small CNN over a window's coarse evidence and its neighbours'.

Input per fine window: the coarse level's peaks (any size, :mod:`geo_hires.detect.zoom` evidence)
rasterised on a grid of ``grid x grid`` cells per window over the window and its 8 neighbours,
three channels per cell — the strongest score of *small* peaks (box side under ``split_px``
level-0 pixels: objects the coarse level's size rule leaves to the fine pass), the strongest
score of larger peaks (which the coarse level reports itself), and the number of peaks (log1p).
Output: the
probability that zooming the window pays (a Bernoulli policy, trained with REINFORCE in
:mod:`geo_hires.train.zoom`). Pure tensor code, so the decision is the same in every process
for a given thread count.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from geo_hires.errors import ConfigError

__all__ = [
    "CHANNELS",
    "PolicySpec",
    "ZoomPolicy",
    "load_policy",
    "policy_features",
    "save_policy",
    "small_evidence",
]

CHANNELS = 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolicySpec:
    """What a policy was built and trained for.

    Attributes:
        window: Fine window side (fine-level pixels) the policy decides on.
        grid: Evidence cells per window side.
        detector: Digest of the scanning network whose evidence it learned to read.
        split_px: Box side (level-0 pixels of a scene at the bundle's GSD) below which a peak
            counts as small; on a scene of another GSD it scales with the pixel size.
        safe_score: The safety rule: a window whose strongest small peak reaches this score is
            zoomed whatever the policy says (``None``: no rule).
        extra: Training record (data, reward weights, curve).
    """

    window: int
    grid: int = 8
    detector: str = ""
    split_px: float = 64.0
    safe_score: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def split_for(self, card_gsd: float, scene_gsd: float | None) -> float:
        """:attr:`split_px` in the level-0 pixels of a scene of ``scene_gsd`` metres."""
        return self.split_px * card_gsd / scene_gsd if scene_gsd and card_gsd else self.split_px


class ZoomPolicy(nn.Module):
    """Conv 3→16→32 over the 3x3-window neighbourhood, global pooling, one logit."""

    def __init__(self, spec: PolicySpec) -> None:
        super().__init__()
        self.spec = spec
        self.net = nn.Sequential(
            nn.Conv2d(CHANNELS, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, stride=2), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(64 + CHANNELS, 1)
        # start undecided (p = 0.5 everywhere): both actions are sampled and the greedy
        # baseline sits on the boundary, so REINFORCE has a gradient from the first step
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N,)`` for features ``(N, 3, 3 * grid, 3 * grid)``."""
        h = self.net(x)
        g = self.spec.grid
        centre = x[:, :, g : 2 * g, g : 2 * g].amax(dim=(2, 3))  # the window's own evidence
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3)), centre], dim=1)
        return self.head(pooled)[:, 0]

    def with_spec(self, spec: PolicySpec) -> ZoomPolicy:
        """The same weights under another spec (a calibrated safety rule)."""
        other = ZoomPolicy(spec)
        other.load_state_dict(self.state_dict())
        return other.eval()

    def forced(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
        """Windows the safety rule zooms (their small evidence reaches ``safe_score``)."""
        if self.spec.safe_score is None:
            return np.zeros(len(features), bool)
        return small_evidence(features, self.spec.grid) >= self.spec.safe_score

    def decide(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
        """The policy's greedy choice (probability >= 0.5) or the safety rule's."""
        return (self.probabilities(features) >= 0.5) | self.forced(features)

    @torch.inference_mode()
    def probabilities(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Zoom probability per window."""
        if not len(features):
            return np.zeros(0)
        return torch.sigmoid(self.eval()(torch.from_numpy(features))).double().numpy()


def policy_features(
    evidence: npt.NDArray[np.float64],
    cores: npt.NDArray[np.float64],
    grid: int,
    split_px: float = 64.0,
) -> npt.NDArray[np.float32]:
    """``(N, 3, 3 * grid, 3 * grid)`` features of each window (level-0 ``cores``) from the
    coarse ``evidence`` rows ``x, y, score, width, height``: the window and its neighbours,
    each ``grid`` cells a side (cells sized from the window's own core)."""
    n = len(cores)
    out = np.zeros((n, CHANNELS, 3 * grid, 3 * grid), np.float32)
    if not n or not len(evidence):
        return out
    x, y, s = evidence[:, 0], evidence[:, 1], evidence[:, 2]
    small = np.maximum(evidence[:, 3], evidence[:, 4]) < split_px
    for i, (x0, y0, x1, y1) in enumerate(cores):
        cw, ch = max(x1 - x0, 1.0) / grid, max(y1 - y0, 1.0) / grid
        gx = np.floor((x - (x0 - grid * cw)) / cw).astype(int)
        gy = np.floor((y - (y0 - grid * ch)) / ch).astype(int)
        ok = (gx >= 0) & (gx < 3 * grid) & (gy >= 0) & (gy < 3 * grid)
        if not ok.any():
            continue
        gx, gy, sc, sm = gx[ok], gy[ok], s[ok].astype(np.float32), small[ok]
        np.maximum.at(out[i, 0], (gy[sm], gx[sm]), sc[sm])
        np.maximum.at(out[i, 1], (gy[~sm], gx[~sm]), sc[~sm])
        np.add.at(out[i, 2], (gy, gx), 1.0)
    out[:, 2] = np.log1p(out[:, 2])
    return out


def small_evidence(features: npt.NDArray[np.float32], grid: int) -> npt.NDArray[np.float32]:
    """The strongest small peak inside each window itself (not its neighbours)."""
    if not len(features):
        return np.zeros(0, np.float32)
    return features[:, 0, grid : 2 * grid, grid : 2 * grid].max(axis=(1, 2))


def save_policy(folder: str | os.PathLike[str], policy: ZoomPolicy, name: str = "zoom.pt") -> Path:
    """Write the policy's weights and spec (``name`` and ``name.json``) into ``folder``."""
    out = Path(folder)
    torch.save(policy.state_dict(), out / name)
    spec = dataclasses.asdict(policy.spec)
    (out / f"{name}.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    return out / name


def load_policy(path: str | os.PathLike[str], *, detector: str) -> ZoomPolicy:
    """Load a policy, refusing one trained on another scanning network's evidence."""
    p = Path(path)
    meta = Path(f"{p}.json")
    if not p.is_file() or not meta.is_file():
        raise ConfigError(f"zoom policy not found: {p} (and its {meta.name})")
    spec = PolicySpec(**json.loads(meta.read_text()))
    if spec.detector != detector:
        raise ConfigError(
            f"{p} was trained on the evidence of another detector ({spec.detector}, this "
            f"bundle's is {detector}); retrain it with geo-hires train-zoom"
        )
    policy = ZoomPolicy(spec)
    policy.load_state_dict(torch.load(p, map_location="cpu", weights_only=True))
    return policy.eval()
