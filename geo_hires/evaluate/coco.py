"""Score predictions against ground truth with pycocotools' COCO evaluation.

AP50 and AP50:95 are COCO's (101-point interpolated, averaged over classes). Precision and
recall at best F1 are read off COCO's own per-detection matches at the chosen IoU: detections of
all classes (or of one class) are ranked by score and the operating point with the highest F1 is
reported. Each image is evaluated in one common frame (scene pixels, or metres of a local UTM
zone for two map-space files), cut into groups of boxes that overlap only each other
(:mod:`geo_hires.evaluate.islands`), so a scene of tens of thousands of objects is not a
quadratic Python loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from geo_hires.detections import PixelDetections
from geo_hires.errors import ConfigError, option
from geo_hires.evaluate.islands import islands

__all__ = ["ClassScore", "EvalResult", "OperatingPoint", "evaluate", "evaluate_images"]

_STANDARD_IOUS = np.round(np.linspace(0.5, 0.95, 10), 2)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassScore:
    """Scores of one class (or of all classes together)."""

    ap50: float
    ap50_95: float
    precision: float
    recall: float
    f1: float
    n_truth: int
    n_pred: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperatingPoint:
    """Precision and recall of the predictions scoring ``threshold`` or more (all classes)."""

    threshold: float
    precision: float
    recall: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalResult:
    """Overall and per-class scores; ``iou`` is the threshold of precision/recall;
    ``operating``: precision and recall at a chosen score threshold, when asked."""

    iou: float
    overall: ClassScore
    per_class: dict[str, ClassScore]
    operating: OperatingPoint | None = None

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` object: ``ap50, ap50_95, precision, recall, per_class`` (and more)."""
        o = dataclasses.asdict(self.overall)
        out = {
            **o,
            "iou": self.iou,
            "per_class": {k: dataclasses.asdict(v) for k, v in self.per_class.items()},
        }
        if self.operating is not None:
            out["operating"] = dataclasses.asdict(self.operating)
        return out


def _coco(
    sets: Sequence[PixelDetections], names: list[str], *, with_scores: bool
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for image_id, dets in enumerate(sets, start=1):
        out.extend(_coco_one(dets, names, image_id, len(out), with_scores=with_scores))
    return out


def _coco_one(
    dets: PixelDetections, names: list[str], image_id: int, first: int, *, with_scores: bool
) -> list[dict[str, Any]]:
    out = []
    for i, (b, c, s) in enumerate(zip(dets.boxes, dets.classes, dets.scores, strict=True)):
        w, h = float(b[2] - b[0]), float(b[3] - b[1])
        ann: dict[str, Any] = {
            "id": first + i + 1,
            "image_id": image_id,
            "category_id": names.index(dets.class_names[int(c)]) + 1,
            "bbox": [float(b[0]), float(b[1]), w, h],
            "area": w * h,
            "iscrowd": 0,
        }
        if with_scores:
            ann["score"] = float(s)
        out.append(ann)
    return out


def _run_cocoeval(
    pairs: Sequence[tuple[PixelDetections, PixelDetections]], names: list[str], iou: float
) -> COCOeval:
    images = [{"id": i + 1} for i in range(len(pairs))]
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    preds = _coco([p for p, _ in pairs], names, with_scores=True)
    gt = COCO()
    gt.dataset = {
        "images": images,
        "categories": categories,
        "annotations": _coco([t for _, t in pairs], names, with_scores=False),
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if preds:
            dt = gt.loadRes(preds)
        else:
            dt = COCO()
            dt.dataset = {"images": images, "categories": categories, "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.iouThrs = np.unique(np.r_[_STANDARD_IOUS, iou])
        ev.params.maxDets = [max(1, max(len(p) for p, _ in pairs))]
        ev.params.areaRng = [[0.0, 1e18]]
        ev.params.areaRngLbl = ["all"]
        ev.evaluate()
        ev.accumulate()
    return ev


def _ap(ev: COCOeval, k: int | None, ious: np.ndarray) -> float:
    t = [int(np.argmin(np.abs(ev.params.iouThrs - v))) for v in ious]
    prec = ev.eval["precision"][t, :, :, 0, -1]
    prec = prec if k is None else prec[:, :, k]
    valid = prec[prec > -1]
    return float(valid.mean()) if valid.size else 0.0


def _matches(ev: COCOeval, k: int | None, iou: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores and true-positive flags of the detections, best first, and the truth count."""
    t = int(np.argmin(np.abs(ev.params.iouThrs - iou)))
    scores, tps, n_truth = [], [], 0
    for e in ev.evalImgs:
        if e is None or (k is not None and e["category_id"] != ev.params.catIds[k]):
            continue
        ignore = np.asarray(e["dtIgnore"][t], bool)
        scores.append(np.asarray(e["dtScores"])[~ignore])
        tps.append(np.asarray(e["dtMatches"][t])[~ignore] > 0)
        n_truth += int((~np.asarray(e["gtIgnore"], bool)).sum())
    s = np.concatenate(scores) if scores else np.zeros(0)
    tp = np.concatenate(tps) if tps else np.zeros(0, bool)
    order = np.argsort(-s, kind="stable")
    return s[order], tp[order], n_truth


def _best_f1(ev: COCOeval, k: int | None, iou: float) -> tuple[float, float, float, int, int]:
    s, tp, n_truth = _matches(ev, k, iou)
    if not s.size or not n_truth:
        return 0.0, 0.0, 0.0, n_truth, int(s.size)
    ctp = np.cumsum(tp)
    prec = ctp / np.arange(1, ctp.size + 1)
    rec = ctp / n_truth
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0.0)
    f1[:-1][s[1:] == s[:-1]] = -1.0  # inside a run of equal scores: no threshold stops there
    i = int(np.argmax(f1))
    return float(prec[i]), float(rec[i]), float(f1[i]), n_truth, int(s.size)


def _operating(ev: COCOeval, iou: float, threshold: float) -> OperatingPoint:
    s, tp, n_truth = _matches(ev, None, iou)
    kept = tp[s >= threshold]
    precision = float(kept.mean()) if kept.size else 0.0
    recall = float(kept.sum() / n_truth) if n_truth else 0.0
    return OperatingPoint(threshold=threshold, precision=precision, recall=recall)


def _score(ev: COCOeval, k: int | None, iou: float) -> ClassScore:
    p, r, f1, nt, npred = _best_f1(ev, k, iou)
    return ClassScore(
        ap50=_ap(ev, k, np.array([0.5])),
        ap50_95=_ap(ev, k, _STANDARD_IOUS),
        precision=p,
        recall=r,
        f1=f1,
        n_truth=nt,
        n_pred=npred,
    )


def evaluate(
    pred: PixelDetections,
    truth: PixelDetections,
    *,
    iou: float = 0.5,
    threshold: float | None = None,
) -> EvalResult:
    """COCO AP50, AP50:95 and precision/recall at best F1, overall and per class, and the
    precision and recall of the predictions scoring ``threshold`` or more when it is given.

    Classes are matched by name. Both sets must be in the same frame (see
    :func:`geo_hires.evaluate.frames.common_frame`).
    """
    return evaluate_images([(pred, truth)], iou=iou, threshold=threshold)


def evaluate_images(
    pairs: Sequence[tuple[PixelDetections, PixelDetections]],
    *,
    iou: float = 0.5,
    threshold: float | None = None,
) -> EvalResult:
    """Like :func:`evaluate` over several images at once: ``(pred, truth)`` per image."""
    if not 0.05 <= iou <= 0.95:
        raise ConfigError(f"{option('--iou')} must be in [0.05, 0.95], got {iou}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:  # NaN too
        raise ConfigError(f"{option('--threshold', threshold)}: a detection score, in [0, 1]")
    if not pairs:
        raise ConfigError("nothing to evaluate")
    truth_names = {t.class_names[c] for _, t in pairs for c in set(t.classes.tolist())}
    names = sorted(truth_names | {n for p, _ in pairs for n in p.class_names})
    ev = _run_cocoeval([part for p, t in pairs for part in islands(p, t)], names, iou)
    per = {n: _score(ev, i, iou) for i, n in enumerate(names) if n in truth_names}
    point = _operating(ev, iou, threshold) if threshold is not None else None
    return EvalResult(iou=iou, overall=_score(ev, None, iou), per_class=per, operating=point)
