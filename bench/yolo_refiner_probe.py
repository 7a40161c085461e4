"""How far YOLO gets in a few CPU minutes as a 256-px *refiner* (issue #11's design question).

Exports 256-px chips around the aircraft of the training split (the shipped LSN's split: its
card's validation images are held out) with ``geo_hires.train.yolo_data``, trains YOLOv8n from
its yaml (offline, CPU, no pretrained weights) for ``--minutes``, and reports chips/s, epochs
and ultralytics' own validation mAP on the held-out images' chips. Not yet the pipeline's AP:
that needs the YOLO adapter, the next piece of #11.

    python bench/yolo_refiner_probe.py ../shared/data/aircraft/train \\
        ../shared/data/aircraft/annotations.csv --minutes 10 | tail -n 13  # the JSON
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from geo_hires.models.card import load_card
from geo_hires.models.yolo import ultralytics_env
from geo_hires.train.chips import load_labelled
from geo_hires.train.yolo_data import YoloDataConfig, export_yolo_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images")
    ap.add_argument("labels")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--chip", type=int, default=256)
    ap.add_argument("--chips-per-image", type=int, default=40)
    ap.add_argument("--arch", default="yolov8n.yaml")
    args = ap.parse_args()
    card = load_card("aircraft_lsn")
    val_names = set(card.val_images)
    class_map = card.extra["training"]["class_map"]
    scenes = sorted(str(p) for p in Path(args.images).iterdir() if p.suffix == ".jpg")
    items, names = load_labelled(scenes, args.labels, class_map=class_map)
    train = [i for i in items if i.name not in val_names]
    val = [i for i in items if i.name in val_names]
    work = Path(tempfile.mkdtemp(prefix="yolo-probe-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # nothing left in /tmp
    cfg = YoloDataConfig(chip=args.chip, chips_per_image=args.chips_per_image)
    start = time.perf_counter()
    data = export_yolo_dataset(train, val, names, work / "data", config=cfg)
    export_s = time.perf_counter() - start
    threads = torch.get_num_threads()
    with ultralytics_env(work / "cfg"):
        from ultralytics import YOLO

        model = YOLO(args.arch)
        start = time.perf_counter()
        model.train(
            data=str(data), imgsz=args.chip, epochs=1000, time=args.minutes / 60, batch=16,
            device="cpu", workers=0, amp=False, plots=False, seed=0, deterministic=True,
            project=str(work / "runs"), name="probe", verbose=False, val=True,
        )  # fmt: skip
        train_s = time.perf_counter() - start
        torch.set_num_threads(threads)
        metrics = model.val(
            data=str(data), imgsz=args.chip, device="cpu", plots=False, verbose=False
        )
    epochs = int(getattr(model.trainer, "epoch", -1)) + 1
    n_train = len(list((work / "data" / "train" / "images").iterdir()))
    out = {
        "arch": args.arch,
        "chip": args.chip,
        "train_chips": n_train,
        "val_chips": len(list((work / "data" / "val" / "images").iterdir())),
        "export_s": round(export_s, 1),
        "train_s": round(train_s, 1),
        "epochs": epochs,
        "chips_per_s": round(epochs * n_train / train_s, 2),  # train_s holds each epoch's val
        "train_s_includes_validation": True,
        "val_map50": round(float(metrics.box.map50), 4),
        "val_map50_95": round(float(metrics.box.map), 4),
        "measured": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
