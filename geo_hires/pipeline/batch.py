"""``geo-hires batch``: many scenes, one status file each, a bad scene fails alone.

Each scene's outcome is written to ``<name>.status.json`` (``done`` with counts, or ``failed``
with the error) next to its GeoJSON, atomically. With ``resume`` finished scenes are skipped and
an interrupted scene continues from its journal. This is what the Kubernetes batch job runs.

The list, its scenes and the output folder may be in object storage (``s3://``; scenes also
``http(s)://``): status files and journals then live in the bucket, so a resumed run on another
machine (a retried RayJob on a new cluster) finds them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from geo_hires.config import ReadConfig
from geo_hires.detect.executors import Executor
from geo_hires.detect.options import DetectOptions
from geo_hires.errors import ConfigError
from geo_hires.export.geojson import sweep_temporaries
from geo_hires.export.remote import (
    check_destination,
    check_writable,
    exists,
    join,
    read_text,
    write_text,
)
from geo_hires.models.bundle import Bundle, load_bundle
from geo_hires.pipeline.outputs import run_detect, run_identity
from geo_hires.scene import remote

__all__ = ["BatchReport", "read_scene_list", "run_batch"]

PathLike = str | os.PathLike[str]


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
    try:
        text = read_text(path)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{remote.public(path)}: not UTF-8 text ({exc}); save it so") from exc
    scenes: list[str | Path] = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            scenes.append(_scene_ref(line, path))
    if not scenes:
        raise ConfigError(f"{remote.public(path)} lists no scenes")
    return scenes


def _stem(scene: str | Path) -> str:
    return Path(remote.public(scene)).stem


def _ref(scene: str | Path) -> str:
    """A scene as status files and the name map record it: its URL, or its absolute path."""
    return remote.public(scene) if remote.is_remote(scene) else os.path.abspath(scene)


def _names(scenes: list[str | Path], known: dict[str, str] | None = None) -> list[str]:
    """One output name per scene: the name an earlier run in this folder gave it (``known``,
    scene → name: its outputs, status and journal are there), else its stem, or ``stem_N``
    for a stem already taken, N the first that no other scene's name takes (a scene may itself
    be called ``x_1``). So a list edited between runs never hands a finished scene's name to
    another scene."""
    known = known or {}
    stems = [_stem(s) for s in scenes]
    taken = set(known.values())
    names = []
    for scene, stem in zip(scenes, stems, strict=True):
        name = known.get(_ref(scene))
        if name is None or name in names:  # a scene listed twice gets a second name
            name, n = stem, 0
            while name in taken or (n and name in stems):
                n += 1
                name = f"{stem}_{n}"
        taken.add(name)
        names.append(name)
    return names


@contextlib.contextmanager
def _claimed(out_dir: PathLike, name: str, log: Callable[[str], None]) -> Iterator[None]:
    """Hold the scene's lock (``.NAME.lock`` in a local output folder) while it runs.

    Two batches writing one folder (a retried job whose old driver has not yet stopped, a
    command run twice) each ran every scene, and one could record ``done`` with options the
    other's output was made with. The second now waits for the first to finish the scene,
    then skips it (``--resume``) or runs it again. The lock is the kernel's (``flock``): a
    killed holder releases it. Temporary files a killed writer left are removed under it.
    A bucket has no such lock: two batches writing one prefix are not kept apart."""
    if remote.is_remote(out_dir):
        yield
        return
    with _locked(Path(out_dir), name, log) as locked:
        if locked:
            for output in (f"{name}.geojson", f"{name}.status.json"):
                sweep_temporaries(Path(out_dir) / output)
        yield


@contextlib.contextmanager
def _locked(out_dir: Path, name: str, log: Callable[[str], None]) -> Iterator[bool]:
    """Hold ``.NAME.lock`` in ``out_dir`` (waiting, and saying so, while another run holds
    it); yields ``False`` on a filesystem that cannot lock (some FUSE mounts), unguarded."""
    path = out_dir / f".{name}.lock"  # read-only: another user's lock file locks too
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{name}: another run is writing it in {out_dir}; waiting for that run")
            fcntl.flock(fh, fcntl.LOCK_EX)
        except OSError as exc:
            log(f"{name}: {out_dir} cannot lock files ({exc.strerror}); running it unguarded")
            yield False
            return
        yield True


@dataclasses.dataclass
class _Quarters:
    """An ``on_progress`` that logs a scene's units at each quarter (and at their start). The
    total grows when a zoomed run plans its fine units after the coarse pass: the quarters
    start again from there (it said "13/13 units", then nothing for the fine stage)."""

    log: Callable[[str], None]
    where: str
    said: int = -1
    total: int = 0

    def __call__(self, done: int, total: int) -> None:
        if total != self.total:
            self.total, self.said = total, 4 * done // max(total, 1) - 1 if done else -1
        quarter = 4 * done // max(total, 1)
        if quarter > self.said:
            self.said = quarter
            self.log(f"{self.where}: {done}/{total} units" + (" (starting)" if not done else ""))


NAMES = "batch-names.json"
"""The output folder's scene → name map, so that names outlive edits of the list."""


def _named(out_dir: PathLike, scenes: list[str | Path], log: Callable[[str], None]) -> list[str]:
    """Each scene's output name, recorded in :data:`NAMES` with the names earlier batches gave.
    Batches of other lists writing one folder at once read the record under a lock (both
    named their own ``a/dup.tif`` and ``b/dup.tif`` "dup", the second overwriting the first's
    results); a bucket has no lock."""
    with contextlib.ExitStack() as stack:
        if not remote.is_remote(out_dir):
            stack.enter_context(_locked(Path(out_dir), NAMES, log))
        known = _known_names(out_dir)
        names = _names(scenes, known)
        for scene, name in zip(scenes, names, strict=True):
            known.setdefault(_ref(scene), name)
        write_text(join(out_dir, NAMES), json.dumps(known, indent=2, sort_keys=True) + "\n")
    return names


def _known_names(out_dir: str | os.PathLike[str]) -> dict[str, str]:
    try:
        known = json.loads(read_text(join(out_dir, NAMES)))
    except (FileNotFoundError, ValueError):  # a first run; a cut file names nothing
        return {}
    return {str(k): str(v) for k, v in known.items()} if isinstance(known, dict) else {}


def _status(path: str | os.PathLike[str], **fields: Any) -> None:
    write_text(path, json.dumps(fields, indent=2, sort_keys=True) + "\n")


def _where(executor: Executor | None) -> dict[str, Any]:
    """Where the scene's units ran, for executors that report it (Ray: per node, retries);
    nowhere for a scene whose units all came from its journal."""
    if not hasattr(executor, "stats"):
        return {}
    stats = getattr(executor, "stats", None)
    return {
        "units_per_node": {} if stats is None else dict(sorted(stats.per_node.items())),
        "units_retried": 0 if stats is None else stats.retried,
        "actors_lost": 0 if stats is None else stats.actors_lost,
    }


def _options(opts: DetectOptions) -> dict[str, Any]:
    """The options as their status file records them (what a resumed batch compares)."""
    return _as_json(dataclasses.asdict(opts))


def _as_json(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as it reads back from JSON (tuples as lists), to compare with a status."""
    return dict(json.loads(json.dumps(value)))


def _done_before(
    status: str | os.PathLike[str], output: str | os.PathLike[str], recorded: dict[str, Any]
) -> dict[str, Any] | None:
    """The status, when it says this scene was done with these options (``recorded``) and its
    output is there; else ``None`` (no status yet, a cut or foreign file, another scene's)."""
    try:
        st = json.loads(read_text(status))
        ours = all(st.get(k) == v for k, v in recorded.items())
        return st if st["state"] == "done" and ours and exists(output) else None
    except (FileNotFoundError, ValueError, KeyError):
        return None


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
        check_writable(Path(out_dir) / NAMES)  # a file where the folder should be: one line
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    job = _Batch(out_dir, opts, bundle or load_bundle(opts.model), read_config, executor,
                 resume=resume, log=log)  # fmt: skip
    names = _named(out_dir, scenes, log)
    counts = dict.fromkeys(("done", "failed", "skipped"), 0)
    pairs = list(zip(scenes, names, strict=True))
    for i, (scene, name) in enumerate(tqdm(pairs, desc="batch", unit="scene",
                                            disable=not progress), start=1):  # fmt: skip
        where = f"[{i}/{len(pairs)}] {remote.public(scene)}"
        outcome = job.run(scene, name, where, quarters=not progress)
        counts[outcome] += 1
        if outcome == "skipped":
            log(f"{where}: skipped (done before with these options)")
    return BatchReport(**counts)


@dataclasses.dataclass(frozen=True)
class _Batch:
    """What every scene of a batch shares: where results go, the options and the model."""

    out_dir: str | os.PathLike[str]
    opts: DetectOptions
    bundle: Bundle
    read_config: ReadConfig | None
    executor: Executor | None
    resume: bool
    log: Callable[[str], None]

    def run(self, scene: str | Path, name: str, where: str = "", *, quarters: bool = False) -> str:
        """Run one scene (or skip it, done before): ``done``, ``failed`` or ``skipped``.

        ``where`` names it in log lines (``[i/N] scene``); with ``quarters`` its progress is
        logged at each quarter of its units, for a log without a terminal (a pod's), where a
        long scene otherwise said nothing for an hour."""
        output = join(self.out_dir, f"{name}.geojson")
        status = join(self.out_dir, f"{name}.status.json")
        label = where or remote.public(scene)
        said = _Quarters(self.log, label) if quarters else None
        with _claimed(self.out_dir, name, self.log):
            return self._run(scene, (name, label), output, status, said)

    def _run(
        self, scene: str | Path, names: tuple[str, str], output: PathLike, status: PathLike,
        said: _Quarters | None,
    ) -> str:  # fmt: skip
        name, label = names
        start = time.perf_counter()
        recorded: dict[str, Any] = {"scene": _ref(scene), "options": _options(self.opts)}
        try:
            if self.resume and self._finished(scene, status, output, recorded):
                return "skipped"
            _status(status, state="running", **recorded)  # an earlier "done" no longer holds
            if hasattr(self.executor, "stats"):  # the last scene's, until this one runs a unit
                with contextlib.suppress(AttributeError):  # a caller's frozen executor: as is
                    setattr(self.executor, "stats", None)  # noqa: B010 (not in the protocol)
            result = run_detect(
                scene, output, self.opts, bundle=self.bundle, read_config=self.read_config,
                executor=self.executor, resume=self.resume, on_progress=said,
            )  # fmt: skip
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the batch stops; --resume goes on
            with contextlib.suppress(Exception):  # a status that cannot be written: as it was
                _status(status, state="interrupted", **recorded)
            raise
        except Exception as exc:  # one scene's failure, whatever it is, is its own
            _status(status, state="failed", error=f"{type(exc).__name__}: {exc}", **recorded)
            self.log(f"{label}: failed: {exc}")
            return "failed"
        _status(
            status,
            state="done",
            **recorded,
            identity=dict(result.identity),
            output=f"{name}.geojson",
            detections=len(result.detections),
            units_resumed=result.resumed_units,
            seconds=round(time.perf_counter() - start, 2),
            timing=result.timing(),
            **_where(self.executor),
        )
        self.log(f"{label}: {len(result.detections)} detections")
        return "done"

    def _finished(
        self, scene: str | Path, status: PathLike, output: PathLike, recorded: dict[str, Any]
    ) -> bool:
        """Whether the scene was done as this run would do it: the same options, and the same
        identity (scene file, model, settings, AOI content), asked of the scene only when the
        status could stand (a scene to run anyway is opened once, by the run)."""
        st = _done_before(status, output, recorded)
        if st is None:
            return False
        now = run_identity(scene, output, self.opts, bundle=self.bundle,
                           read_config=self.read_config, executor=self.executor)  # fmt: skip
        return bool(st.get("identity") == _as_json(now))
