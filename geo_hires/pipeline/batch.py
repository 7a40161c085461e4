"""``geo-hires batch``: many scenes, one status file each, a bad scene fails alone.

Each scene's outcome is written to ``<name>.status.json`` (``done`` with counts, or ``failed``
with the error) next to its GeoJSON, atomically. With ``resume`` finished scenes are skipped and
an interrupted scene continues from its journal. This is what the Kubernetes batch job runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from geo_hires.config import ReadConfig
from geo_hires.detect.executors import Executor
from geo_hires.detect.options import DetectOptions
from geo_hires.errors import ConfigError, GeoHiresError
from geo_hires.export.geojson import write_text_atomic
from geo_hires.models.bundle import Bundle, load_bundle
from geo_hires.pipeline.outputs import run_detect

__all__ = ["BatchReport", "read_scene_list", "run_batch"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchReport:
    """Counts of a batch run."""

    done: int
    failed: int
    skipped: int

    @property
    def total(self) -> int:
        return self.done + self.failed + self.skipped


def read_scene_list(path: str | os.PathLike[str]) -> list[Path]:
    """Scene paths, one per line (blank lines and ``#`` comments ignored; relative to the list)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"scene list not found: {p}")
    base = p.parent
    scenes = []
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            scenes.append(Path(line) if Path(line).is_absolute() else base / line)
    if not scenes:
        raise ConfigError(f"{p} lists no scenes")
    return scenes


def _names(scenes: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for s in scenes:
        n = seen.get(s.stem, 0)
        seen[s.stem] = n + 1
        names.append(s.stem if n == 0 else f"{s.stem}_{n}")
    return names


def _status(path: Path, **fields: Any) -> None:
    write_text_atomic(path, json.dumps(fields, indent=2, sort_keys=True) + "\n")


def _where(executor: Executor | None) -> dict[str, Any]:
    """Where the scene's units ran, for executors that report it (Ray: per node, retries)."""
    stats = getattr(executor, "stats", None)
    if stats is None:
        return {}
    return {
        "units_per_node": dict(sorted(stats.per_node.items())),
        "units_retried": stats.retried,
        "actors_lost": stats.actors_lost,
    }


def _finished(status: Path, output: Path) -> bool:
    try:
        return json.loads(status.read_text())["state"] == "done" and output.is_file()
    except (OSError, ValueError, KeyError):
        return False


def run_batch(
    list_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: DetectOptions | None = None,
    *,
    bundle: Bundle | None = None,
    read_config: ReadConfig | None = None,
    executor: Executor | None = None,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = lambda _s: None,
) -> BatchReport:
    """Detect in every scene of ``list_path`` with ``options``; write outputs and status files
    to ``out_dir``.

    The bundle is loaded once (or given), so a Ray executor keeps its actors (and their cached
    model) from scene to scene instead of starting new ones for each.
    """
    opts = options or DetectOptions()
    scenes = read_scene_list(list_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = bundle or load_bundle(opts.model)
    done = failed = skipped = 0
    for scene, name in tqdm(
        list(zip(scenes, _names(scenes), strict=True)),
        desc="batch",
        unit="scene",
        disable=not progress,
    ):
        output, status = out / f"{name}.geojson", out / f"{name}.status.json"
        if resume and _finished(status, output):
            skipped += 1
            continue
        start = time.perf_counter()
        try:
            result = run_detect(
                scene, output, opts, bundle=loaded, read_config=read_config,
                executor=executor, resume=resume,
            )  # fmt: skip
        except (GeoHiresError, OSError, ValueError) as exc:
            failed += 1
            _status(status, state="failed", scene=str(scene), error=f"{type(exc).__name__}: {exc}")
            log(f"{scene}: failed: {exc}")
            continue
        done += 1
        _status(
            status,
            state="done",
            scene=str(scene),
            output=output.name,
            detections=len(result.detections),
            seconds=round(time.perf_counter() - start, 2),
            timing=result.timing(),
            **_where(executor),
        )
        log(f"{scene}: {len(result.detections)} detections")
    return BatchReport(done=done, failed=failed, skipped=skipped)
