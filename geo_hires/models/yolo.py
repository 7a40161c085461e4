"""ultralytics YOLO models as geo_hires detectors: loading, checks, offline use, prediction.

A model file is loaded only if it really is
an ultralytics ``detect`` or ``obb`` model whose class names agree with its card, with
ultralytics kept offline (no downloads, no settings written outside a folder we name) and
without its side effect on torch's thread count, which would otherwise make every later forward
pass in the process single-threaded and break the byte-identity rule (equal threads, equal
bytes). :mod:`geo_hires.detect.kinds` runs such models over a level's windows or a cascade's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import os
import shutil
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from geo_hires.errors import ConfigError

__all__ = ["TASKS", "Prediction", "YoloModel", "load_yolo", "ultralytics_env"]

TASKS = ("detect", "obb")
Prediction = tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.int64],
    npt.NDArray[np.float64] | None,
]
"""Boxes ``(N, 4)`` xyxy, scores, classes, and oriented corners ``(N, 4, 2)`` or ``None``."""


_ULTRALYTICS = threading.RLock()


_TORCH_PRINT = ("precision", "threshold", "edgeitems", "linewidth", "sci_mode")


@contextlib.contextmanager
def _process_state_kept() -> Iterator[None]:
    """Undo what importing or running ultralytics does to the host process: numpy's and
    torch's print options (a 320-column line, numpy floats as ``{:11.5g}``) and OpenCV's
    thread count; its first import writes to stderr (its logger and its "Creating new
    Ultralytics Settings" banner would write to the host's stdout, which may be a protocol)."""
    import cv2

    printing = np.get_printoptions()
    opts = torch._tensor_str.PRINT_OPTS  # torch has a setter and no getter for these
    tensors = {k: getattr(opts, k) for k in _TORCH_PRINT}
    cv2_threads = cv2.getNumThreads()
    try:
        if "ultralytics" not in sys.modules:
            with contextlib.redirect_stdout(sys.stderr):
                import ultralytics  # noqa: F401
        yield
    finally:
        np.set_printoptions(**printing)
        torch.set_printoptions(**tensors)
        cv2.setNumThreads(cv2_threads)


@contextlib.contextmanager
def ultralytics_env(config_dir: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """ultralytics offline for a ``with`` block: no downloads, no auto-installs, its settings in
    ``config_dir`` (with the font it would otherwise download), torch threads restored after.

    Blocks take turns in a process (ultralytics' settings and predictors are the process's;
    two blocks at once left each other's variables behind), and the environment is restored
    whole after: importing ultralytics sets ``OMP_NUM_THREADS=1`` and others, which every
    subprocess the host starts afterwards would inherit; so are numpy's, torch's and OpenCV's
    settings it changes (:func:`_process_state_kept`)."""
    folder = Path(config_dir or Path(tempfile.gettempdir()) / "geo-hires-ultralytics")
    font = folder / "Ultralytics" / "Arial.ttf"
    if not font.exists():
        import matplotlib

        font.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", font)
    values = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", "YOLO_CONFIG_DIR": str(folder)}
    with _ULTRALYTICS:
        before = dict(os.environ)
        threads = torch.get_num_threads()
        os.environ.update(values)
        try:
            with _process_state_kept():
                yield folder
        finally:
            torch.set_num_threads(threads)
            for k in [k for k in os.environ if k not in before]:
                del os.environ[k]
            os.environ.update({k: v for k, v in before.items() if os.environ.get(k) != v})


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class YoloModel:
    """A loaded ultralytics model and what geo_hires needs to know of it."""

    model: Any
    task: str
    class_names: tuple[str, ...]
    path: str

    def predict(
        self,
        images: Sequence[npt.NDArray[np.uint8]],
        *,
        imgsz: int,
        threshold: float,
        threads: int,
        device: str = "cpu",
    ) -> list[Prediction]:
        """Boxes (xyxy, window pixels), scores, classes and, for ``obb`` models, the oriented
        boxes' ``(N, 4, 2)`` corners (``boxes`` are then their envelopes), per ``HxWx3`` uint8
        RGB image.

        Every image is seen at its own scale (:func:`_padded`), whatever its size. ultralytics
        expects BGR arrays (OpenCV's order), so channels are flipped here; torch's thread count
        is set for the call and restored after (ultralytics sets its own).
        """
        side = _side(images, imgsz)
        old = torch.get_num_threads()
        try:
            with ultralytics_env(), _no_nms_time_limit():
                self._set_up(device)
                torch.set_num_threads(threads)
                results = self.model.predict(
                    [np.ascontiguousarray(_padded(im, side)[..., ::-1]) for im in images],
                    imgsz=side,
                    conf=threshold,
                    device=device,
                    verbose=False,
                )
        finally:
            torch.set_num_threads(old)
        return [
            _inside(_prediction(r, oriented=self.task == "obb"), im.shape[:2])
            for r, im in zip(results, images, strict=True)
        ]

    def _set_up(self, device: str) -> None:
        """Build ultralytics' predictor for ``device`` before the real call, if it has none.

        ultralytics sets torch's thread count to its own choice while it builds a predictor
        (on the first call, or for a new device) and runs that call's forward pass with it. A
        process's first prediction would then sum differently from its later ones, and a
        service actor reused by a second job would not give a fresh ``geo-hires detect``'s
        bytes. A call on a blank 32-pixel image takes that first place instead, so every real
        call runs at the caller's thread count.
        """
        p = self.model.predictor
        if p is None or str(p.args.device) != device:
            self.model.predict(
                np.zeros((32, 32, 3), np.uint8), imgsz=32, device=device, verbose=False
            )


@contextlib.contextmanager
def _no_nms_time_limit() -> Iterator[None]:
    """ultralytics' NMS without its time limit, for a ``with`` block (inside
    :func:`ultralytics_env`, whose blocks take turns).

    Past 2 s + 50 ms an image, its NMS stops and returns no box at all for the batch's other
    images, saying so only in a log line: a model of many classes at a low threshold, or a
    busy machine, lost whole windows' detections, differently from run to run. ultralytics
    has no setting for it (``predict`` does not pass ``max_time_img`` on)."""
    from ultralytics.utils import nms

    limited = nms.non_max_suppression
    if "max_time_img" not in inspect.signature(limited).parameters:  # another ultralytics
        yield
        return
    nms.non_max_suppression = functools.partial(limited, max_time_img=math.inf)
    try:
        yield
    finally:
        nms.non_max_suppression = limited


def _no_warmup_on_cpu(predictor: Any) -> None:
    """Mark ultralytics' predictor warmed up before its first batch when it runs on the CPU.

    On the CPU its warmup of a ``.pt`` model runs no forward pass: all it does is import
    torchvision, to make its NMS call torchvision's kernel. That import costs 1.3–1.8 s of
    every process's start (mostly ``torch._dynamo``, pulled in by ``torchvision.ops.roi_align``),
    more than the whole refine stage on a small scene. Without it ultralytics runs its own NMS
    (its choice is made per call: torchvision's when the package is in ``sys.modules``). The two
    compute the same IoUs and thresholds and differ only in how boxes with exactly equal scores
    are ordered; ``scripts/same_outputs.py`` found every output of every bundle and scene
    byte-identical. No geo_hires path (CLI, batch, training, service, Ray actors) imports
    torchvision's Python package.
    """
    if predictor.device.type == "cpu":
        predictor.done_warmup = True


STRIDE = 32
"""The largest stride of the YOLO architectures geo_hires trains (v8, 11): input sides are
multiples of it."""
PAD = 114
"""ultralytics' letterbox grey, what its models see around an image in training."""


def _side(images: Sequence[npt.NDArray[np.uint8]], imgsz: int) -> int:
    """The input size of one call: ``imgsz``, or a larger image's longer side (a multiple of
    :data:`STRIDE`)."""
    longest = max((max(im.shape[:2]) for im in images), default=0)
    return max(imgsz, -(-longest // STRIDE) * STRIDE)


def _padded(image: npt.NDArray[np.uint8], side: int) -> npt.NDArray[np.uint8]:
    """``image`` with its longer side padded (grey, at the bottom or right) to ``side``.

    Why: ultralytics letterboxes each image so that its longer side becomes ``imgsz``, scaling
    a smaller one *up* (a scene's corner window, a small level) and a larger one down (a
    refiner window grown around a large candidate): the model would see objects at another
    GSD than its level's. With the longer side at ``side`` it scales nothing.
    """
    h, w = image.shape[:2]
    if max(h, w) == side:
        return image
    shape = (h, side) if w >= h else (side, w)
    canvas = np.full((*shape, 3), PAD, np.uint8)
    canvas[:h, :w] = image
    return canvas


def _inside(pred: Prediction, hw: tuple[int, ...]) -> Prediction:
    """The boxes centred on the image itself (not its padding); axis-aligned ones clipped to
    it, as ultralytics clips them to the image it was given (oriented ones are left whole,
    as it leaves them, so that ``boxes`` stay their corners' envelopes)."""
    boxes, scores, classes, corners = pred
    h, w = float(hw[0]), float(hw[1])
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    keep = (cx < w) & (cy < h)
    if corners is not None:
        return boxes[keep], scores[keep], classes[keep], corners[keep]
    return np.clip(boxes[keep], 0.0, [w, h, w, h]), scores[keep], classes[keep], None


def _prediction(result: Any, *, oriented: bool) -> Prediction:
    b = result.obb if oriented else result.boxes
    scores = b.conf.cpu().numpy().astype(np.float64)
    classes = b.cls.cpu().numpy().astype(np.int64)
    if not oriented:
        return b.xyxy.cpu().numpy().astype(np.float64).reshape(-1, 4), scores, classes, None
    corners = b.xyxyxyxy.cpu().numpy().astype(np.float64).reshape(-1, 4, 2)
    env = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    return env, scores, classes, corners


def _looks_like_torch_file(path: Path) -> bool:
    if not path.is_file():
        return False
    if zipfile.is_zipfile(path):
        return True
    with path.open("rb") as fh:  # legacy (pre-zip) torch.save format starts with a pickle
        return fh.read(2) == b"\x80\x02"


def _check_intact(path: Path) -> None:
    """Refuse a zip-format model file a member of which fails its checksum: torch reads such a
    file without a word, and the damaged weights give other boxes (a copy cut or flipped in
    transit). The check reads the file once (6 MB for a yolov8n)."""
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        try:
            bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            bad = f"({exc})"
    if bad is not None:
        raise ConfigError(f"{path} is damaged (its part {bad} fails its checksum); copy it again")


def load_yolo(
    path: str | os.PathLike[str], *, class_names: Sequence[str] | None = None
) -> YoloModel:
    """Load an ultralytics model file, refusing what geo_hires cannot run (messages say what
    to change): not a model file, not an ultralytics model, a task other than detect/obb, or
    class names that disagree with the card's."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"YOLO model not found: {p}")
    if not _looks_like_torch_file(p):
        raise ConfigError(f"{p} is not a PyTorch model file; give an ultralytics .pt")
    _check_intact(p)
    try:
        with ultralytics_env():
            from ultralytics import YOLO

            model = YOLO(str(p))
            model.add_callback("on_predict_start", _no_warmup_on_cpu)
    except ImportError as exc:
        raise ConfigError(
            f"YOLO models need ultralytics, a dependency of geo_hires: reinstall it ({exc})"
        ) from exc
    except Exception as exc:  # ultralytics raises many types for files it cannot use
        raise ConfigError(f"{p} is not an ultralytics model ({type(exc).__name__}: {exc})") from exc
    task = str(getattr(model, "task", ""))
    if task not in TASKS:
        raise ConfigError(
            f"{p} is a {task or 'unknown'!r} model; geo_hires runs ultralytics 'detect' and 'obb' "
            "models (export or train one of those)"
        )
    names = tuple(str(n) for _, n in sorted(model.names.items()))
    if class_names is not None and tuple(class_names) != names:
        raise ConfigError(
            f"{p} predicts classes {list(names)[:8]}{'…' if len(names) > 8 else ''} but its card "
            f"says {list(class_names)}; fix the card's 'classes' (same names, same order)"
        )
    return YoloModel(model=model, task=task, class_names=names, path=str(p))
