"""``geo-hires batch``: many scenes, one status file each, a bad scene fails alone.

Each scene's outcome is written to ``<name>.status.json`` (``done`` with counts, or ``failed``
with the error) next to its GeoJSON, atomically. With ``resume`` finished scenes are skipped and
an interrupted scene continues from its journal. This is what the Kubernetes batch job runs.

The list, its scenes and the output folder may be in object storage (``s3://``; scenes also
``http(s)://``): status files and journals then live in the bucket, so a resumed run on another
machine (a retried RayJob on a new cluster) finds them.
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
from geo_hires.errors import ConfigError
from geo_hires.export.remote import check_destination, exists, join, read_text, write_text
from geo_hires.models.bundle import Bundle, load_bundle
from geo_hires.pipeline.outputs import run_detect
from geo_hires.scene import remote

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


def _scene_ref(line: str, listing: str | os.PathLike[str]) -> str | Path:
    """A line of a list: a URL or absolute path as is, else relative to the list."""
    if remote.is_remote(line) or Path(line).is_absolute():
        return line if remote.is_remote(line) else Path(line)
    url = remote.Url.parse(listing)
    return url.join(line).public if url is not None else Path(listing).parent / line


def read_scene_list(path: str | os.PathLike[str]) -> list[str | Path]:
    """Scenes, one per line (blank lines and ``#`` comments ignored; relative to the list):
    paths, or URLs; the list itself may be an object in a bucket."""
    if not remote.is_remote(path) and not Path(path).is_file():
        raise ConfigError(f"scene list not found: {path}")
    scenes: list[str | Path] = []
    for line in read_text(path).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            scenes.append(_scene_ref(line, path))
    if not scenes:
        raise ConfigError(f"{remote.public(path)} lists no scenes")
    return scenes


def _stem(scene: str | Path) -> str:
    return Path(remote.public(scene)).stem


def _names(scenes: list[str | Path]) -> list[str]:
    """One output name per scene: its stem, or ``stem_N`` for a repeated stem, N the first
    that no other scene's name takes (a scene may itself be called ``x_1``)."""
    stems = [_stem(s) for s in scenes]
    taken: set[str] = set()
    names = []
    for stem in stems:
        name, n = stem, 0
        while name in taken or (n and name in stems):
            n += 1
            name = f"{stem}_{n}"
        taken.add(name)
        names.append(name)
    return names


def _status(path: str | os.PathLike[str], **fields: Any) -> None:
    write_text(path, json.dumps(fields, indent=2, sort_keys=True) + "\n")


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


def _options(opts: DetectOptions) -> dict[str, Any]:
    """The options as their status file records them (what a resumed batch compares)."""
    return dict(json.loads(json.dumps(dataclasses.asdict(opts))))


def _finished(
    status: str | os.PathLike[str], output: str | os.PathLike[str], scene: str, opts: DetectOptions
) -> bool:
    """Whether ``status`` says this scene was done with these options and its output is there
    (a status of another scene under the same name, or of other options, is not)."""
    try:
        st = json.loads(read_text(status))
        ours = st["scene"] == remote.public(scene) and st.get("options") == _options(opts)
        return st["state"] == "done" and ours and exists(output)
    except (FileNotFoundError, ValueError, KeyError):  # no status yet; a cut or foreign file
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
    if remote.is_remote(out_dir):
        check_destination([join(out_dir, "x.geojson")])
    else:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    loaded = bundle or load_bundle(opts.model)
    done = failed = skipped = 0
    for scene, name in tqdm(
        list(zip(scenes, _names(scenes), strict=True)),
        desc="batch",
        unit="scene",
        disable=not progress,
    ):
        output, status = join(out_dir, f"{name}.geojson"), join(out_dir, f"{name}.status.json")
        if resume and _finished(status, output, str(scene), opts):
            skipped += 1
            continue
        start = time.perf_counter()
        recorded = {"scene": remote.public(scene), "options": _options(opts)}
        _status(status, state="running", **recorded)  # an earlier "done" no longer holds
        try:
            result = run_detect(
                scene, output, opts, bundle=loaded, read_config=read_config,
                executor=executor, resume=resume,
            )  # fmt: skip
        except Exception as exc:  # one scene's failure, whatever it is, is its own
            failed += 1
            _status(status, state="failed", error=f"{type(exc).__name__}: {exc}", **recorded)
            log(f"{remote.public(scene)}: failed: {exc}")
            continue
        done += 1
        _status(
            status,
            state="done",
            **recorded,
            output=f"{name}.geojson",
            detections=len(result.detections),
            units_resumed=result.resumed_units,
            seconds=round(time.perf_counter() - start, 2),
            timing=result.timing(),
            **_where(executor),
        )
        log(f"{remote.public(scene)}: {len(result.detections)} detections")
    return BatchReport(done=done, failed=failed, skipped=skipped)
