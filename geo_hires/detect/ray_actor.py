"""What runs on a Ray worker: the scanner actor, the probe of its device, and the errors its
calls raise, unwrapped for a user (:mod:`geo_hires.detect.ray_executor` drives them)."""

from __future__ import annotations

import os
from typing import Any

import torch

from geo_hires.config import ReadConfig
from geo_hires.detect.journal import UnitResult
from geo_hires.detect.options import DetectConfig
from geo_hires.detect.plan import Unit
from geo_hires.detect.runner import UnitRunner
from geo_hires.errors import GeoHiresError
from geo_hires.models.bundle import Bundle
from geo_hires.models.card import ModelCard
from geo_hires.scene import Scene, SceneReader

__all__ = ["ScannerActor", "native_bf16_here", "unwrapped"]


class ScannerActor:
    """Reads and runs units of any scene; readers are cached per scene, the model per weights.

    The weights arrive with every call (an object-store reference Ray resolves from the local
    store) rather than through the constructor, so an actor started to replace a lost one
    needs nothing from the driver but its constructor's small arguments.
    """

    def __init__(
        self, card: ModelCard, cfg: DetectConfig, read_config: ReadConfig | None,
        device: str | None = None,
    ) -> None:  # fmt: skip
        self.card, self.cfg, self.read_config = card, cfg, read_config
        self.device = torch.device(device) if device else None
        self._model: Bundle | None = None
        self._model_key: str | None = None
        self._runners: dict[str, tuple[SceneReader, UnitRunner]] = {}

    def pid(self) -> int:
        return os.getpid()

    def ready(self) -> str:
        """The id of the node this actor runs on (answering at all means it was placed)."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def _runner(self, scene: Scene, payload: dict[str, Any], model_key: str) -> UnitRunner:
        if self._model is None or self._model_key != model_key:
            self._model = Bundle.from_payload(self.card, payload)
            self._model_key = model_key
            self._close()
        entry = self._runners.get(scene.path)
        if entry is None:
            self._close()
            reader = SceneReader(scene, config=self.read_config).__enter__()
            entry = (reader, UnitRunner(reader, self._model, self.cfg, self.device))
            self._runners = {scene.path: entry}
        return entry[1]

    def _close(self) -> None:
        for reader, _ in self._runners.values():
            reader.__exit__(None, None, None)
        self._runners = {}

    def run(self, scene: Scene, unit: Unit, payload: dict[str, Any], model_key: str) -> UnitResult:
        # OpenMP thread counts are per calling thread, and Ray may call methods on another
        # thread than __init__: set it here so the numerics match a local run
        torch.set_num_threads(self.cfg.threads)
        return self._runner(scene, payload, model_key).run(unit)


def native_bf16_here(device: str | None) -> bool | None:
    """On a Ray worker: whether the device an actor placed like it would run on has native
    bf16; ``None`` when ``device`` is ``cuda`` and the worker has no CUDA device."""
    from geo_hires.detect.options import native_bf16

    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        return None
    return native_bf16(kind)


def unwrapped(exc: Exception) -> Exception:
    """The error raised in a unit on an actor, unwrapped where the CLI reports it as one line
    (the library's errors, and ``OSError``: a full disk): Ray's ``RayTaskError`` subclasses
    it, but its text is the actor's traceback, which must not reach a user."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, GeoHiresError | OSError) else exc
