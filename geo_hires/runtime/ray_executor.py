"""Run work units on long-lived Ray actors.

Each :class:`ScannerActor` holds the model and reads the windows it needs itself (close to the
data: on a cluster the scene path must be readable from every node). Units go through a
``ray.util.ActorPool``, so at most one unit per actor is in flight (backpressure) and results
stream back as they finish. Actors restart when killed (``max_restarts``) and Ray retries the
lost call (``max_task_retries``); units are keyed, so a retried unit is counted once.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import torch

from geo_hires.config import ReadConfig
from geo_hires.errors import ConfigError
from geo_hires.journal import UnitResult
from geo_hires.models.fcn import FCNDetector, fold_batchnorm
from geo_hires.models.registry import ModelCard
from geo_hires.pipeline import DetectConfig, Unit, UnitRunner
from geo_hires.runtime.ray_local import ensure_ray
from geo_hires.scene import Scene, SceneReader

__all__ = ["RayConfig", "RayExecutor", "ScannerActor"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RayConfig:
    """Ray execution settings.

    Attributes:
        address: ``None`` starts a local offline cluster; ``"auto"`` or ``HOST:PORT`` joins one.
        actors: Scanner actors (one unit in flight each).
        num_cpus: CPUs reserved per actor (torch threads follow ``DetectConfig.threads``).
        num_gpus: GPUs per actor; fractional values share a GPU between actors.
        max_restarts: Restarts of a killed actor.
        max_task_retries: Retries of a call lost with its actor.
        object_store_mb: Object store size of a local cluster.
    """

    address: str | None = None
    actors: int = 2
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_restarts: int = 3
    max_task_retries: int = 3
    object_store_mb: int = 512

    def __post_init__(self) -> None:
        if self.actors < 1 or self.num_cpus <= 0 or self.num_gpus < 0:
            raise ConfigError("RayConfig: actors >= 1, num_cpus > 0 and num_gpus >= 0 required")


class ScannerActor:
    """Reads and runs units of any scene; readers are cached per scene, the model per weights.

    The weights arrive with every call (an object-store reference Ray resolves from the local
    store) rather than through the constructor: Ray cannot always re-fetch constructor
    arguments when it restarts a killed actor, while call arguments are held by the driver
    for as long as the call may be retried.
    """

    def __init__(self, card: ModelCard, cfg: DetectConfig, read_config: ReadConfig | None) -> None:
        self.card, self.cfg, self.read_config = card, cfg, read_config
        self._model: FCNDetector | None = None
        self._model_key: str | None = None
        self._runners: dict[str, tuple[SceneReader, UnitRunner]] = {}

    def pid(self) -> int:
        return os.getpid()

    def _runner(self, scene: Scene, state: dict[str, torch.Tensor], model_key: str) -> UnitRunner:
        if self._model is None or self._model_key != model_key:
            model = fold_batchnorm(FCNDetector(self.card.arch))
            model.load_state_dict(state)
            self._model, self._model_key = model, model_key
            self._close()
        entry = self._runners.get(scene.path)
        if entry is None:
            self._close()
            reader = SceneReader(scene, config=self.read_config).__enter__()
            entry = (reader, UnitRunner(reader, self._model, self.card, self.cfg))
            self._runners = {scene.path: entry}
        return entry[1]

    def _close(self) -> None:
        for reader, _ in self._runners.values():
            reader.__exit__(None, None, None)
        self._runners = {}

    def run(
        self, scene: Scene, unit: Unit, state: dict[str, torch.Tensor], model_key: str
    ) -> UnitResult:
        # OpenMP thread counts are per calling thread, and Ray may call methods on another
        # thread than __init__: set it here so the numerics match a local run
        torch.set_num_threads(self.cfg.threads)
        return self._runner(scene, state, model_key).run(unit)


@dataclasses.dataclass(kw_only=True)
class RayExecutor:
    """The :class:`~geo_hires.pipeline.Executor` on Ray actors (see module docstring)."""

    config: RayConfig = dataclasses.field(default_factory=RayConfig)
    on_started: Callable[[list[Any]], None] | None = None
    _actors: list[Any] = dataclasses.field(default_factory=list)
    _state: Any = None  # object ref of the weights, passed with every call
    _key: tuple[Any, ...] | None = None

    def _pool(
        self, model: FCNDetector, card: ModelCard, cfg: DetectConfig, read_config: ReadConfig | None
    ) -> Any:
        import ray
        from ray.util import ActorPool

        key = (id(model), card.name, cfg, read_config)
        if self._key != key:
            self.shutdown()
            c = self.config
            actor_cls = ray.remote(ScannerActor).options(
                num_cpus=c.num_cpus,
                num_gpus=c.num_gpus,
                max_restarts=c.max_restarts,
                max_task_retries=c.max_task_retries,
            )
            self._state = ray.put({k: v.cpu() for k, v in model.state_dict().items()})
            self._actors = [actor_cls.remote(card, cfg, read_config) for _ in range(c.actors)]
            self._key = key
            if self.on_started is not None:
                self.on_started(self._actors)
        return ActorPool(self._actors)

    def run_units(
        self,
        scene: Scene,
        model: FCNDetector,
        card: ModelCard,
        units: tuple[Unit, ...],
        cfg: DetectConfig,
        *,
        on_result: Callable[[UnitResult], None],
        read_config: ReadConfig | None,
    ) -> None:
        ensure_ray(self.config.address, object_store_mb=self.config.object_store_mb)
        pool = self._pool(model, card, cfg, read_config)
        model_key = f"{card.name}-{id(model)}"
        for unit in units:
            if not pool.has_free():  # bounded in-flight: wait for one before submitting more
                on_result(pool.get_next_unordered())
            pool.submit(lambda a, u: a.run.remote(scene, u, self._state, model_key), unit)
        while pool.has_next():
            on_result(pool.get_next_unordered())

    def shutdown(self) -> None:
        """Stop the actors (the cluster stays up)."""
        import ray

        for a in self._actors:
            ray.kill(a, no_restart=True)
        self._actors, self._key, self._state = [], None, None
