"""Where units run: the executor protocol, the in-process executor, and the journalled loop.

An executor runs a scene's units and hands back each result once, in any order — in this
process (:class:`LocalExecutor`) or on Ray actors (:mod:`geo_hires.detect.ray_executor`).
:class:`UnitLoop` sits between the pipeline and an executor: it reuses journalled results,
records new ones, reports progress, and refuses to go on when an executor lost a unit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import torch

from geo_hires.config import ReadConfig
from geo_hires.detect.forward import read_ahead
from geo_hires.detect.journal import Journal, UnitResult
from geo_hires.detect.options import DetectConfig
from geo_hires.detect.plan import Unit
from geo_hires.detect.runner import UnitRunner
from geo_hires.errors import ConfigError, option
from geo_hires.models.bundle import Bundle
from geo_hires.scene import Scene, SceneReader

__all__ = ["Executor", "LocalExecutor", "UnitLoop", "torch_threads"]


class Executor(Protocol):
    """Runs the units of a scene and returns their results (any order, each unit once)."""

    def run_units(
        self,
        scene: Scene,
        bundle: Bundle,
        units: tuple[Unit, ...],
        cfg: DetectConfig,
        *,
        on_result: Callable[[UnitResult], None],
        read_config: ReadConfig | None,
    ) -> None: ...


_THREADS = threading.Lock()
_running = {"blocks": 0, "saved": 0}  # torch's setting is the process's: one count for all


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch threads, restoring the caller's setting when the last
    block running in this process ends (blocks overlapping on several threads, each restoring
    what it found, left the process at another block's count). Overlapping blocks share
    torch's one setting, so concurrent runs should ask for equal threads (equal bytes)."""
    with _THREADS:
        if _running["blocks"] == 0:
            _running["saved"] = torch.get_num_threads()
        _running["blocks"] += 1
        torch.set_num_threads(n)
    try:
        yield
    finally:
        with _THREADS:
            _running["blocks"] -= 1
            if _running["blocks"] == 0:
                torch.set_num_threads(_running["saved"])


@dataclasses.dataclass(frozen=True, kw_only=True)
class LocalExecutor:
    """In-process execution, reads running ``cfg.prefetch`` units ahead on a thread.

    ``device``: where the networks run (``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a
    ``torch.device``; default: CUDA when there is one)."""

    device: torch.device | str | None = None

    def __post_init__(self) -> None:
        device = self.device
        if isinstance(device, str):
            try:
                device = torch.device(device)
            except RuntimeError as exc:
                raise ConfigError(f"device {self.device!r}: {exc}; give cpu or cuda") from None
            object.__setattr__(self, "device", device)
        cuda = isinstance(device, torch.device) and device.type == "cuda"
        if cuda and not torch.cuda.is_available():
            raise ConfigError(
                f"{option('--device', 'cuda')} asked for, but no CUDA device is available; use "
                f"{option('--device', 'cpu')}"
            )

    @property
    def torch_device(self) -> torch.device | None:
        """:attr:`device`, typed as it is once made (a name given was turned into one)."""
        assert not isinstance(self.device, str)  # __post_init__
        return self.device

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
        with torch_threads(cfg.threads), SceneReader(scene, config=read_config) as reader:
            runner = UnitRunner(reader, bundle, cfg, self.torch_device)
            for unit, items in read_ahead(runner.read, units, cfg.prefetch):
                on_result(runner.compute(unit, items))


@dataclasses.dataclass(kw_only=True, eq=False)
class UnitLoop:
    """Runs planned units of one scene through an executor, with journal, resume and progress.

    ``done``: results a journal already holds (reused, not run again). ``on_progress`` is
    called with ``(units done, units planned so far)`` before the first unit and after each;
    an exception it raises stops the run, which is how a service cancels a job.
    """

    executor: Executor
    scene: Scene
    bundle: Bundle
    cfg: DetectConfig
    read_config: ReadConfig | None
    done: dict[str, UnitResult]
    journal: Journal | None = None
    on_progress: Callable[[int, int], None] | None = None
    bar: Any = None
    finished: int = 0
    total: int = 0
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    """Busy seconds of the units this loop ran (``read``, ``forward``, ``decode``)."""

    def run(self, units: tuple[Unit, ...]) -> list[UnitResult]:
        """Results of ``units`` (those journalled reused): every unit once, or an error."""
        keys = {u.key for u in units}
        results = {k: r for k, r in self.done.items() if k in keys}
        self._advance(len(results), planned=len(units))
        todo = tuple(u for u in units if u.key not in results)

        def on_result(r: UnitResult) -> None:
            if r.key in results:  # a retried unit is counted once
                return
            results[r.key] = r
            self.add_seconds(r.seconds)
            if self.journal is not None:
                self.journal.record(r)
            self._advance(1)
            if self.on_progress is not None:
                self.on_progress(self.finished, self.total)

        if self.on_progress is not None:
            self.on_progress(self.finished, self.total)
        if todo:
            self.executor.run_units(self.scene, self.bundle, todo, self.cfg,
                                    on_result=on_result, read_config=self.read_config)  # fmt: skip
        missing = keys - results.keys()
        if missing:
            raise ConfigError(
                f"executor lost {len(missing)} work units (e.g. {sorted(missing)[0]}); "
                f"rerun with {option('--resume', api='resume=True')}"
            )
        return list(results.values())

    def add_seconds(self, seconds: Mapping[str, float]) -> None:
        """Add busy seconds per stage (a unit's, or the merge's)."""
        for stage, value in seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + value

    def _advance(self, n: int, *, planned: int = 0) -> None:
        self.total += planned
        self.finished += n
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.update(n)
