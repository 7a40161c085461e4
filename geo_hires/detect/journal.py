"""A per-scene journal of finished work units, so a killed run resumes where it stopped.

The journal is a JSON-lines file beside the output: a header naming what the results belong to
(scene fingerprint, model, config identity), then one line per finished unit with its
detections. Each line is written whole with a single ``write`` and flushed with ``fsync``; a
line cut by a crash fails to parse and is ignored, so the unit simply runs again. Floats are
written with ``repr`` and read back bit-exactly, so a resumed run gives byte-identical output.
Keys make it idempotent: a unit recorded twice (a retried task) counts once.

For an output in a bucket the journal is kept in a local work folder and copied whole to
``<output>.journal`` in the bucket (:class:`MirroredJournal`), at most every
``$GEO_HIRES_JOURNAL_MIRROR_S`` seconds (default 30): a resumed run on another machine starts
from that copy, and a crash never leaves part of an object (each copy is one whole upload).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geo_hires.config import config_id
from geo_hires.detect.options import DetectConfig
from geo_hires.errors import (
    ConfigError,
    DiscardedJournalWarning,
    ForeignJournalWarning,
    LeftoverWarning,
    StorageError,
    option,
)
from geo_hires.scene import Scene, objects, remote

if TYPE_CHECKING:
    from geo_hires.aoi import AreaOfInterest
    from geo_hires.models.bundle import Bundle

__all__ = ["Journal", "MirroredJournal", "UnitResult", "journal_for"]


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class UnitResult:
    """Detections of one work unit (a batch of blocks of one level), level-0 pixels.

    Attributes:
        key: Unit key, unique within a run (``L{level}-U{index}``).
        level: Level index.
        boxes: ``(N, 4)`` float64 xyxy.
        scores: ``(N,)`` float64.
        classes: ``(N,)`` int64.
        corners: ``(N, 4, 2)`` float64 corners of oriented boxes (``boxes``: their
            envelopes), or ``None``.
        evidence: ``(M, 5)`` float64 coarse peaks ``x, y, score, width, height`` (any size)
            of a zoomed run's coarse level, or ``None``.
        seconds: Where the unit's time went: ``read``, ``forward``, ``decode`` (busy seconds
            of the process that ran it); not part of the detections.
    """

    key: str
    level: int
    boxes: npt.NDArray[np.float64]
    scores: npt.NDArray[np.float64]
    classes: npt.NDArray[np.int64]
    corners: npt.NDArray[np.float64] | None = None
    evidence: npt.NDArray[np.float64] | None = None
    seconds: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {
            "key": self.key,
            "level": self.level,
            "boxes": self.boxes.tolist(),
            "scores": self.scores.tolist(),
            "classes": self.classes.tolist(),
        }
        if self.corners is not None:
            out["corners"] = self.corners.tolist()
        if self.evidence is not None:
            out["evidence"] = self.evidence.tolist()
        if self.seconds:
            out["seconds"] = dict(self.seconds)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> UnitResult:
        return cls(
            key=str(d["key"]),
            level=int(d["level"]),
            boxes=np.asarray(d["boxes"], np.float64).reshape(-1, 4),
            scores=np.asarray(d["scores"], np.float64),
            classes=np.asarray(d["classes"], np.int64),
            corners=np.asarray(d["corners"], np.float64).reshape(-1, 4, 2)
            if "corners" in d
            else None,
            evidence=np.asarray(d["evidence"], np.float64).reshape(-1, 5)
            if "evidence" in d
            else None,
            seconds={str(k): float(v) for k, v in d.get("seconds", {}).items()},
        )


class Journal:
    """Append-only record of finished units for one (scene, model, config)."""

    def __init__(self, path: str | os.PathLike[str], identity: dict[str, Any]) -> None:
        self.path = Path(path)
        self.identity = identity

    def load(self, *, aside: bool = True) -> dict[str, UnitResult]:
        """Finished units of a previous run with the same identity (else nothing).

        A journal of another scene, model or config is never reused: its units would merge
        into the wrong output. It is reported with a :class:`ForeignJournalWarning` naming what
        differs, and the run starts afresh; with ``aside`` the journal is first moved to
        ``<journal>.foreign``, so that a resume run by mistake with other settings does not
        erase hours of another run's work.
        """
        if not self.path.is_file():
            return {}
        lines = self.path.read_bytes().splitlines()  # a line of any bytes is one bad line
        header = _parse(lines[0]) if lines else None
        if header != {"identity": self.identity}:
            theirs = header.get("identity") if isinstance(header, dict) else None
            theirs = theirs if isinstance(theirs, dict) else {}
            differ = sorted(k for k in self.identity if theirs.get(k) != self.identity[k])
            keep = aside and len(lines) > 1  # units of another run: keep them
            kept = self._set_aside() if keep else ""
            warnings.warn(
                f"{self._where()} belongs to another run (differs in: {', '.join(differ)}); "
                "not resuming from it, starting afresh"
                + (f" (it is kept as {kept})" if keep else ""),
                ForeignJournalWarning,
                stacklevel=3,
            )
            return {}
        return _units(lines[1:])

    def _where(self) -> str:
        return str(self.path)

    def _set_aside(self) -> str:
        """Keep a foreign journal as ``<journal>.foreign``; the name it is kept as."""
        kept = self.path.with_name(f"{self.path.name}.foreign")
        os.replace(self.path, kept)
        return kept.name

    def start(self, *, resume: bool) -> dict[str, UnitResult]:
        """Begin a run: keep and return finished units when resuming, else start afresh
        (saying so when an interrupted run of the same scene and settings had finished some:
        a forgotten ``--resume`` threw hours away without a word)."""
        done = self.load() if resume else {}
        if not resume and (earlier := self._earlier_units()):
            warnings.warn(
                f"{self._where()}: an earlier run that did not finish had done {earlier} "
                f"units of this scene; starting afresh "
                f"({option('--resume', api='resume=True')} goes on from them)",
                DiscardedJournalWarning,
                stacklevel=3,
            )
        # rewrite whole: drops a line a crash may have cut, so appends start on a fresh line;
        # through a new file, so that a crash while writing leaves the old journal whole
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"identity": self.identity})]
        lines += [json.dumps(r.to_json(), separators=(",", ":")) for r in done.values()]
        fresh = Journal(self.path.with_name(f"{self.path.name}.partial"), self.identity)
        fresh._write("\n".join(lines) + "\n", mode="w")
        os.replace(fresh.path, self.path)
        return done

    def _earlier_units(self) -> int:
        """Finished units in this path's journal of the same run, if any (0 for another's)."""
        try:
            lines = self.path.read_bytes().splitlines()
        except OSError:
            return 0
        if not lines or _parse(lines[0]) != {"identity": self.identity}:
            return 0
        return len(_units(lines[1:]))

    def record(self, result: UnitResult) -> None:
        """Append one finished unit (one write, flushed to disk)."""
        self._write(json.dumps(result.to_json(), separators=(",", ":")) + "\n", mode="a")

    def remove(self) -> None:
        """Delete the journal once the output is safely written."""
        self.path.unlink(missing_ok=True)

    def _write(self, text: str, *, mode: str) -> None:
        with self.path.open(mode, encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


class MirroredJournal(Journal):
    """A journal kept in a local work folder and copied whole to ``remote`` (an object in a
    bucket) after at most ``every_s`` seconds of new units; resuming merges both copies."""

    def __init__(
        self, path: str | os.PathLike[str], identity: dict[str, Any], *, remote_url: str,
        every_s: float,
    ) -> None:  # fmt: skip
        super().__init__(path, identity)
        self.remote_url, self.every_s = remote_url, every_s
        self._mirrored = 0.0

    def load(self, *, aside: bool = True) -> dict[str, UnitResult]:
        """Finished units of this machine's copy and of the bucket's (another machine's)."""
        done = super().load(aside=aside)
        if not objects.exists(self.remote_url):
            return done
        copy = self.path.with_name(self.path.name + ".bucket")
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(objects.read_bytes(self.remote_url, limit=1 << 34))
        try:
            theirs = _BucketCopy(copy, self.identity, self.remote_url).load(aside=aside)
        finally:
            copy.unlink(missing_ok=True)
        return {**theirs, **done}

    def start(self, *, resume: bool) -> dict[str, UnitResult]:
        done = super().start(resume=resume)
        self._mirror()
        return done

    def record(self, result: UnitResult) -> None:
        super().record(result)
        if time.monotonic() - self._mirrored >= self.every_s:
            self._mirror()

    def remove(self) -> None:
        """Delete both copies; a bucket copy the credentials may not delete is said, not
        fatal: the run's outputs are written by then."""
        try:
            objects.delete(self.remote_url)
        except StorageError as exc:
            warnings.warn(
                f"the finished run's journal {remote.public(self.remote_url)} is left in the "
                f"bucket ({exc}); it is no longer needed: delete it with other credentials",
                LeftoverWarning,
                stacklevel=2,
            )
        super().remove()

    def _mirror(self) -> None:
        objects.put_file(self.path, self.remote_url)
        self._mirrored = time.monotonic()


class _BucketCopy(Journal):
    """A local copy of the bucket's journal, read to resume: named by its URL, and kept in
    the bucket as ``<journal>.foreign`` when it is another run's (the fresh journal that
    this run mirrors would overwrite it)."""

    def __init__(self, path: Path, identity: dict[str, Any], remote_url: str) -> None:
        super().__init__(path, identity)
        self.remote_url = remote_url

    def _where(self) -> str:
        return remote.public(self.remote_url)

    def _set_aside(self) -> str:
        kept = f"{self.remote_url}.foreign"
        objects.put_file(self.path, kept)
        return remote.public(kept)


def _parse(line: bytes) -> Any:
    """A journal line's JSON; ``None`` for one a crash cut, or a disk or a hand corrupted."""
    try:
        return json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def _units(lines: list[bytes]) -> dict[str, UnitResult]:
    """The unit records of a journal's lines by key (the last of a key wins), bad lines left."""
    units = (_unit(_parse(line)) for line in lines)
    return {u.key: u for u in units if u is not None}


def _unit(record: Any) -> UnitResult | None:
    """A unit record as a result; ``None`` for anything else (its unit runs again: a bad
    line made every resume of the scene fail, until someone deleted the journal)."""
    if not isinstance(record, dict) or "key" not in record:
        return None
    try:
        unit = UnitResult.from_json(record)
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError):
        return None
    n = len(unit.boxes)  # rows that disagree failed the merge of every resume
    rows = [len(unit.scores), len(unit.classes)]
    rows += [] if unit.corners is None else [len(unit.corners)]
    if any(r != n for r in rows) or (n and unit.classes.min() < 0):
        return None
    return unit


def _scene_identity(scene: Scene) -> dict[str, Any]:
    """The scene file's identity: path, size and mtime; for a remote scene URL, size, ETag."""
    if scene.remote:
        info = objects.stat(remote.Url.of_gdal(scene.gdal_path))
        return {"scene": scene.path, "size": info.size, "etag": info.etag}
    st = os.stat(scene.path)
    return {"scene": os.path.abspath(scene.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _mirror_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"GEO_HIRES_JOURNAL_MIRROR_S={text!r}: give seconds (0 or more)")
    return value


def journal_for(
    output: str | os.PathLike[str],
    scene: Scene,
    bundle: Bundle,
    cfg: DetectConfig,
    aoi: AreaOfInterest | None = None,
) -> Journal:
    """The journal beside ``output``, tied to the scene file, the model (weights, plan,
    policy), config, bands and AOI (for an output in a bucket: in the work folder, mirrored
    beside it in the bucket)."""
    identity = {
        **_scene_identity(scene),
        "weights": bundle.digest,
        "model": bundle.identity,
        "config_id": config_id(cfg),
        "bands": list(scene.rgb_bands),
        "aoi": aoi.digest if aoi is not None else None,
    }
    target = os.fspath(output)
    if not remote.is_remote(target):
        return Journal(f"{target}.journal", identity)
    name = remote.public(target)
    local = remote.work_dir() / "journals" / hashlib.sha256(name.encode()).hexdigest()[:24]
    every = _mirror_interval(os.environ.get("GEO_HIRES_JOURNAL_MIRROR_S", "30"))
    return MirroredJournal(
        local / f"{Path(name).name}.journal", identity, remote_url=f"{name}.journal", every_s=every
    )
