"""Run work units on long-lived Ray actors that come and go with the cluster's nodes.

Each :class:`ScannerActor` holds the model and reads the windows it needs itself (close to the
data: on a cluster the scene path must be readable from every node). The executor keeps one
unit in flight per actor (backpressure) and only hands work to actors that have answered
``ready`` — so an actor still waiting for a node (a full cluster, or a Kubernetes autoscaler
adding one) costs nothing, and picks up work the moment a node arrives.

Losing a node is handled here rather than by Ray's own actor restarts: a restarted actor with
no node to go to would hold its retried call forever. Actors run with ``max_restarts=0``, so a
lost actor fails its call at once; the unit goes back to the front of the queue (to an actor
that is alive) and a replacement actor is started, which works wherever Ray places it. Units
are keyed and results merged by key, so the output does not depend on where a unit ran.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from geo_hires.config import ReadConfig
from geo_hires.detect.journal import UnitResult
from geo_hires.detect.options import DetectConfig
from geo_hires.detect.plan import Unit
from geo_hires.detect.ray_actor import ScannerActor, native_bf16_here, unwrapped
from geo_hires.detect.ray_local import ensure_ray
from geo_hires.errors import ConfigError, ExecutorError, option
from geo_hires.models.bundle import Bundle
from geo_hires.scene import Scene

__all__ = ["RayConfig", "RayExecutor", "RunStats"]

DRAIN_S = 60.0
"""How long a failed scene waits for its other units in flight (their results are kept)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RayConfig:
    """Ray execution settings.

    Attributes:
        address: ``None`` starts a local offline cluster; ``"auto"`` or ``HOST:PORT`` joins one.
        actors: Scanner actors (one unit in flight each). Actors the cluster cannot place yet
            wait for a node (and ask an autoscaler for one) without holding work.
        num_cpus: CPUs reserved per actor (torch threads follow ``DetectConfig.threads``).
        num_gpus: GPUs per actor; fractional values share a GPU between actors.
        replacements: Dead actors replaced during one scene before the scene fails.
        unit_attempts: Distinct nodes on which one unit may lose its actor before the scene
            fails (a unit that kills every actor it meets, e.g. by exhausting a node's memory,
            must not loop; a node that dies with several actors counts once).
        placement_timeout_s: How long work may wait with no live actor before the scene fails.
        object_store_mb: Object store size of a local cluster.
        device: The actors' torch device type (``cpu``, ``cuda``); ``None``: CUDA where the
            node gives an actor a GPU. Checked on a worker, not on the driver (a GPU-less head).
    """

    address: str | None = None
    actors: int = 2
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    replacements: int = 16
    unit_attempts: int = 3
    placement_timeout_s: float = 600.0
    object_store_mb: int = 512
    device: str | None = None

    def __post_init__(self) -> None:
        if self.device not in (None, "cpu", "cuda"):
            raise ConfigError(f"RayConfig: device {self.device!r}: cpu, cuda or None (auto)")
        if self.device == "cuda" and not self.num_gpus:
            raise ConfigError(
                f"RayConfig: {option('--device', 'cuda')} needs GPUs per actor "
                f"({option('--gpus-per-actor', 1, api='num_gpus')})"
            )
        if self.actors < 1 or self.num_cpus <= 0 or self.num_gpus < 0:
            raise ConfigError("RayConfig: actors >= 1, num_cpus > 0 and num_gpus >= 0 required")
        if self.replacements < 0 or self.unit_attempts < 1 or self.placement_timeout_s <= 0:
            raise ConfigError(
                "RayConfig: replacements >= 0, unit_attempts >= 1 and placement_timeout_s > 0"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunStats:
    """Where the units of the last scene ran, and what node losses cost.

    Attributes:
        per_node: Units finished per Ray node id.
        retried: Units run again because their actor died.
        actors_lost: Actors that died during the scene (each was replaced).
    """

    per_node: Mapping[str, int]
    retried: int
    actors_lost: int

    def plus(self, other: RunStats) -> RunStats:
        """Both runs' counts: one scene's stages."""
        nodes = collections.Counter(self.per_node) + collections.Counter(other.per_node)
        return RunStats(per_node=dict(nodes), retried=self.retried + other.retried,
                        actors_lost=self.actors_lost + other.actors_lost)  # fmt: skip


@dataclasses.dataclass(eq=False)
class _Slot:
    """One actor: ``node`` is ``None`` until its ``ready`` call answers."""

    handle: Any
    ready_ref: Any
    node: str | None = None


@dataclasses.dataclass
class _Scene:
    """Book-keeping of one ``run_units`` call."""

    queue: collections.deque[Unit]
    inflight: dict[Any, tuple[_Slot, Unit]] = dataclasses.field(default_factory=dict)
    attempts: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    per_node: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    lost_on: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    lost: int = 0
    idle_since: float | None = None

    def stats(self) -> RunStats:
        retried = sum(n - 1 for n in self.attempts.values() if n > 1)
        return RunStats(per_node=dict(self.per_node), retried=retried, actors_lost=self.lost)


@dataclasses.dataclass(kw_only=True)
class RayExecutor:
    """The :class:`~geo_hires.detect.executors.Executor` on Ray actors (module docstring).

    ``stats`` describes the last scene run (where its units ran, what node losses cost), all
    its stages: the ``run_units`` calls made with one :class:`Scene` (a cascade's scan and
    refine); ``on_started`` is called with the first actors' handles when they are created.
    """

    config: RayConfig = dataclasses.field(default_factory=RayConfig)
    on_started: Callable[[list[Any]], None] | None = None
    stats: RunStats | None = None
    _slots: list[_Slot] = dataclasses.field(default_factory=list)
    _actor_cls: Any = None
    _args: tuple[Any, ...] = ()
    _state: Any = None  # object ref of the weights, passed with every call
    _key: tuple[Any, ...] | None = None
    _stats_of: Scene | None = None  # the scene ``stats`` describes
    _native: bool | None = None  # what native_bf16 found

    def native_bf16(self) -> bool:
        """Whether the actors' device runs bf16 natively (what ``--precision auto`` needs),
        asked once of a worker placed as an actor is, before actors hold the resources: the
        driver may be a GPU-less head, or a node with another CPU than the workers'."""
        if self._native is None:
            self._native = self._probe()
        return self._native

    def _probe(self) -> bool:
        import ray

        c = self.config
        ensure_ray(c.address, object_store_mb=c.object_store_mb)
        probe = ray.remote(native_bf16_here).options(
            num_cpus=c.num_cpus, num_gpus=c.num_gpus, max_retries=0, scheduling_strategy="SPREAD"
        )
        ref = probe.remote(c.device)
        done, _ = ray.wait([ref], timeout=c.placement_timeout_s)
        if not done:
            ray.cancel(ref, force=True)
            raise ExecutorError(self._unplaced())
        try:
            native = ray.get(ref)
        except ray.exceptions.RayError as exc:  # its cause, not the worker's traceback
            cause = getattr(exc, "cause", None) or type(exc).__name__
            raise ExecutorError(f"the Ray worker asked for its device failed: {cause}") from None
        if native is None:
            raise ConfigError(
                f"{option('--device', 'cuda')}: a Ray worker given {c.num_gpus:g} GPU per actor "
                "has no CUDA device torch can use (a GPU Ray counts on a node without its "
                f"driver?); check the worker nodes' GPUs, or use {option('--device', 'cpu')}"
            )
        return bool(native)

    @property
    def actors(self) -> list[Any]:
        """Handles of the current actors (placed or waiting for a node)."""
        return [s.handle for s in self._slots]

    def _start_actor(self) -> _Slot:
        handle = self._actor_cls.remote(*self._args)
        return _Slot(handle=handle, ready_ref=handle.ready.remote())

    def _fleet(self, bundle: Bundle, cfg: DetectConfig, read_config: ReadConfig | None) -> None:
        import ray

        key = (bundle.identity, bundle.name, cfg, read_config)  # actors hold the card
        if self._key == key:
            return
        self.shutdown()
        c = self.config
        self._actor_cls = ray.remote(ScannerActor).options(
            num_cpus=c.num_cpus,
            num_gpus=c.num_gpus,
            max_restarts=0,  # losses are handled here (module docstring)
            max_task_retries=0,
            scheduling_strategy="SPREAD",
        )
        self._args = (bundle.card, cfg, read_config, c.device)
        self._state = ray.put(bundle.payload())
        self._slots = [self._start_actor() for _ in range(c.actors)]
        self._key = key
        if self.on_started is not None:
            self.on_started(self.actors)

    def run_units(
        self,
        scene: Scene,
        bundle: Bundle,
        units: tuple[Unit, ...],
        cfg: DetectConfig,
        *,
        on_result: Callable[[UnitResult], None],
        read_config: ReadConfig | None,
    ) -> None:
        import ray

        ensure_ray(self.config.address, object_store_mb=self.config.object_store_mb)
        self._fleet(bundle, cfg, read_config)
        run = _Scene(queue=collections.deque(units))
        idle = [s for s in self._slots if s.node is not None]
        model_key = f"{bundle.name}-{bundle.identity}"
        try:
            while run.queue or run.inflight:
                while idle and run.queue:
                    slot, unit = idle.pop(), run.queue.popleft()
                    ref = slot.handle.run.remote(scene, unit, self._state, model_key)
                    run.inflight[ref] = (slot, unit)
                    run.attempts[unit.key] += 1
                waiting = list(run.inflight) + [s.ready_ref for s in self._slots if not s.node]
                done, _ = ray.wait(waiting, num_returns=1, timeout=1.0)
                if not done:
                    self._check_stalled(run)
                    continue
                free = self._settle(done[0], run, on_result)
                idle.extend(s for s in free if s in self._slots)
        except Exception:
            self._drain(run, on_result)
            raise
        finally:
            earlier = self.stats if self._stats_of is scene else None  # this scene's stages
            self.stats = run.stats() if earlier is None else earlier.plus(run.stats())
            self._stats_of = scene

    def _settle(
        self, ref: Any, run: _Scene, on_result: Callable[[UnitResult], None]
    ) -> list[_Slot]:
        """Take one finished call (a unit or a ``ready``); returns the actors now free."""
        import ray

        if ref in run.inflight:
            slot, unit = run.inflight.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # the unit failed; its actor lives on
                raise unwrapped(exc) from None
            except ray.exceptions.RayActorError as exc:
                self._lost(slot, run, exc)
                run.queue.appendleft(unit)  # first in line for a live actor
                nodes = run.lost_on.setdefault(unit.key, set())
                nodes.add(slot.node or "?")
                if len(nodes) >= self.config.unit_attempts:
                    raise ExecutorError(
                        f"work unit {unit.key} lost its Ray actor on {len(nodes)} nodes (last: "
                        f"{exc}); if nodes run out of memory, lower {option('--block')} or "
                        f"{option('--batch')}"
                    ) from exc
                return []
            run.per_node[slot.node or "?"] += 1
            on_result(result)
            return [slot]
        slot = next(s for s in self._slots if s.ready_ref == ref)
        try:
            slot.node = ray.get(ref)
        except ray.exceptions.RayActorError as exc:  # died before it was ever placed
            self._lost(slot, run, exc)
            return []
        return [slot]

    def _drain(self, run: _Scene, on_result: Callable[[UnitResult], None]) -> None:
        """After a failure: take the other units in flight, keeping their results (journalled,
        so ``--resume`` need not redo them) and consuming their errors (Ray prints an error
        nobody took as a traceback, later: in the middle of a batch's next scenes). Units still
        running after :data:`DRAIN_S` stop with their actors."""
        import ray

        if not run.inflight:
            return
        done, left = ray.wait(list(run.inflight), num_returns=len(run.inflight), timeout=DRAIN_S)
        for ref in done:
            slot, _ = run.inflight.pop(ref)
            with contextlib.suppress(Exception):  # the first failure is the one to report
                result = ray.get(ref)
                run.per_node[slot.node or "?"] += 1
                on_result(result)
        if left:
            self.shutdown()
            for ref in left:
                with contextlib.suppress(Exception):
                    ray.get(ref, timeout=10)

    def _lost(self, slot: _Slot, run: _Scene, exc: Exception) -> None:
        """Replace a dead actor (within the replacement budget of this scene)."""
        run.lost += 1
        if run.lost > self.config.replacements:
            raise ExecutorError(
                f"{run.lost} Ray scanner actors died during this scene (last: {exc}); "
                "see the Ray logs of the lost nodes, or raise RayConfig.replacements"
            ) from exc
        self._slots[self._slots.index(slot)] = self._start_actor()

    def _check_stalled(self, run: _Scene) -> None:
        """Fail when work has waited ``placement_timeout_s`` with no actor alive to do it."""
        if run.inflight or any(s.node for s in self._slots):
            run.idle_since = None
            return
        now = time.monotonic()
        run.idle_since = run.idle_since or now
        if now - run.idle_since > self.config.placement_timeout_s:
            raise ExecutorError(self._unplaced())

    def _unplaced(self) -> str:
        c = self.config
        return (
            f"no Ray scanner actor could be placed for {c.placement_timeout_s:.0f} s (each "
            f"needs {c.num_cpus:g} CPU and {c.num_gpus:g} GPU on one node); add nodes, or "
            f"lower {option('--actors')} or {option('--gpus-per-actor', api='num_gpus')}"
        )

    def shutdown(self) -> None:
        """Stop the actors (the cluster stays up)."""
        import ray

        for s in self._slots:
            ray.kill(s.handle, no_restart=True)
        self._slots, self._key, self._state = [], None, None
