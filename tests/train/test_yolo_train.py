"""YOLO training's honest split (fit / select / validation, by image) and its resume after a
kill, on a tiny model trained for seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_hires.errors import ConfigError
from geo_hires.train.chips import LabelledImage
from geo_hires.train.yolo_run import split_fit_select


def _items(n: int) -> list[LabelledImage]:
    return [
        LabelledImage(
            name=f"{k:02d}.jpg",
            image=torch.zeros((3, 8, 8), dtype=torch.uint8),
            boxes=np.zeros((0, 4)),
            classes=np.zeros(0, np.int64),
        )
        for k in range(n)
    ]


def test_fit_and_select_images_are_disjoint_seeded_and_cover_the_training_images():
    items = _items(81)
    fit, select = split_fit_select(items, select_fraction=0.15, seed=0)
    names = [i.name for i in fit], [i.name for i in select]
    assert len(select) == 12 and len(fit) == 69
    assert not set(names[0]) & set(names[1])
    assert sorted(names[0] + names[1]) == [i.name for i in items]
    same = split_fit_select(items, select_fraction=0.15, seed=0)
    assert ([i.name for i in same[0]], [i.name for i in same[1]]) == names
    other = split_fit_select(items, select_fraction=0.15, seed=1)
    assert [i.name for i in other[1]] != names[1]
    with pytest.raises(ConfigError, match="at least 2 training images"):
        split_fit_select(_items(1), select_fraction=0.15, seed=0)


class _Killed(Exception):
    """Stands for a kill -9 right after ultralytics saved its first ``last.pt``."""


def test_a_killed_training_resumes_in_its_work_folder(tmp_path, monkeypatch):
    from ultralytics.engine.trainer import BaseTrainer

    from geo_hires.train.yolo_data import YoloDataConfig
    from geo_hires.train.yolo_run import YoloTrainConfig, train_yolo_bundle

    job = _tiny_job(tmp_path, str(tmp_path / "yolo"), scenes=4, size=384, name="tiny")
    cfg = YoloTrainConfig(
        arch="yolov8n", minutes=0.08, batch=4, window=256, halo=48, select_fraction=0.34,
        data=YoloDataConfig(chip=96, chips_per_image=4),
    )  # fmt: skip
    work, lines = tmp_path / "work", []
    save = BaseTrainer.save_model

    def save_then_die(self: BaseTrainer) -> bool:
        save(self)
        raise _Killed

    monkeypatch.setattr(BaseTrainer, "save_model", save_then_die)
    with pytest.raises(_Killed):
        train_yolo_bundle(job, cfg, work=work, log=lines.append)
    monkeypatch.undo()
    assert (work / "runs" / "train" / "weights" / "last.pt").is_file()  # kept after the kill
    assert not (tmp_path / "yolo" / "card.json").exists()
    card = train_yolo_bundle(job, cfg, work=work, log=lines.append)
    assert any(line.startswith("resuming") for line in lines)
    assert sum(line.startswith("chips written") for line in lines) == 1  # chips reused
    record = card.extra["training"]
    assert record["report"]["sessions"] == 2 and record["report"]["epochs"] >= 2
    assert [r[0] for r in record["report"]["select_map50_map50_95"]] == list(
        range(1, record["report"]["epochs"] + 1)
    )
    fit, select = record["fit_images"], record["select_images"]
    assert len(fit) == 2 and len(select) == 1 and not set(fit) & set(select)
    assert sorted(fit + select) == ["s0.tif", "s1.tif", "s2.tif"]
    assert record["resampled"] == {}  # the scenes are at the job's GSD
    assert record["val_images"] == ["s3.tif"] and tuple(record["yolo"]["data"]["gsd_range"]) == (
        0.3,
        1.2,
    )
    weights = (tmp_path / "yolo" / "yolo.pt").read_bytes()
    again = train_yolo_bundle(job, cfg, work=work, log=lines.append)  # finished: no training
    assert (tmp_path / "yolo" / "yolo.pt").read_bytes() == weights
    assert again.extra["training"]["report"]["epochs"] == record["report"]["epochs"]
    other = YoloTrainConfig(arch="yolo11n", minutes=0.08, data=cfg.data, select_fraction=0.34)
    with pytest.raises(ConfigError, match=r"other settings \(arch"):
        train_yolo_bundle(job, other, work=work, log=lines.append)
    edited = tmp_path / "labels" / "s0.geojson"  # one box less: its chips are no longer these
    doc = json.loads(edited.read_text())
    edited.write_text(json.dumps({**doc, "features": doc["features"][1:]}))
    with pytest.raises(ConfigError, match=r"other settings \(labels\)"):
        train_yolo_bundle(job, cfg, work=work, log=lines.append)
    plan = json.loads((work / "plan.json").read_text())
    assert plan["fit_images"] == fit and Path(work / "data" / "complete").is_file()


def _tiny_job(tmp_path: Path, out: str, *, scenes: int, size: int, name: str):  # -> TrainJob
    """Dense synthetic scenes with their labels: all but the last to train on, the last to
    validate on."""
    from geo_hires.export import write_geojson
    from geo_hires.scene import Density, SynthSpec, open_scene, write_synthetic
    from geo_hires.train import FitConfig
    from geo_hires.train.run import TrainJob

    (tmp_path / "labels").mkdir(exist_ok=True)
    paths = []
    for seed in range(scenes):
        path = tmp_path / f"s{seed}.tif"
        spec = SynthSpec(width=size, height=size, seed=seed, density=Density.DENSE)
        write_geojson(tmp_path / "labels" / f"s{seed}.geojson", write_synthetic(path, spec),
                      open_scene(path))  # fmt: skip
        paths.append(str(path))
    return TrainJob(
        scenes=tuple(paths[:-1]), val_scenes=(paths[-1],), labels=str(tmp_path / "labels"),
        out=out, name=name, fit=FitConfig(seed=0),
    )  # fmt: skip


def test_init_warm_starts_from_a_bundles_weights_and_refuses_what_cannot(tmp_path):
    from ultralytics.utils.patches import torch_load

    from geo_hires.models.card import bundle_dir
    from geo_hires.train.cascade import make_cascade_bundle
    from geo_hires.train.yolo_data import YoloDataConfig
    from geo_hires.train.yolo_run import FINE_TUNE, YoloTrainConfig, train_yolo_bundle
    from geo_hires.train.yolo_sources import yolo_weights

    shipped = bundle_dir("aircraft_yolo") / "yolo.pt"
    assert yolo_weights("aircraft_yolo") == shipped and yolo_weights(shipped) == shipped
    with pytest.raises(ConfigError, match=r"^--init aircraft_lsn: that bundle has no YOLO weights"):
        yolo_weights("aircraft_lsn")
    with pytest.raises(ConfigError, match=r"^--init .*missing\.pt: no such file"):
        yolo_weights(tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match=r"--refiner .*no YOLO weights"):  # the cascade's twin
        make_cascade_bundle("aircraft_lsn", "aircraft_lsn", tmp_path / "c", name="c")
    job = _tiny_job(tmp_path, str(tmp_path / "warm"), scenes=3, size=256, name="warm")
    data = YoloDataConfig(chip=96, chips_per_image=2)
    cfg = YoloTrainConfig(
        arch="yolov8n", minutes=0.03, batch=2, window=256, halo=48, select_fraction=0.5,
        data=data, init="aircraft_yolo",
    )  # fmt: skip
    card = train_yolo_bundle(job, cfg, work=tmp_path / "work", log=lambda s: None)
    ckpt = torch_load(tmp_path / "warm" / "yolo.pt", map_location="cpu")
    assert Path(ckpt["train_args"]["model"]) == shipped  # ultralytics trained on from it
    # ... at the fine-tuning rate, not from-scratch's (which undid the init's first epochs)
    assert {k: ckpt["train_args"][k] for k in FINE_TUNE} == FINE_TUNE == {
        "optimizer": "SGD", "lr0": 0.002, "warmup_epochs": 1.0}  # fmt: skip
    assert card.extra["training"]["yolo"]["init"] == "aircraft_yolo"
    assert card.extra["training"]["yolo"]["fine_tune"] == FINE_TUNE
    eleven = YoloTrainConfig(arch="yolo11n", minutes=0.03, data=data, init="aircraft_yolo",
                             select_fraction=0.5)  # fmt: skip
    with pytest.raises(ConfigError, match="is a yolov8n; give --arch yolov8n"):
        train_yolo_bundle(job, eleven, work=tmp_path / "work11", log=lambda s: None)
    assert not (tmp_path / "work11").exists()  # said before any chip was made


@pytest.mark.parametrize("yaml_name", ["yolov8s.yaml", "yolov8n-seg.yaml"])
def test_an_init_geo_hires_cannot_train_on_from_says_so_first(tmp_path, yaml_name):
    """A yolov8s was told "give --arch yolov8s", which the command refuses; a segmentation
    model reached ultralytics' traceback; both after every chip was written."""
    import torch
    from ultralytics import YOLO

    from geo_hires.models.yolo import ultralytics_env
    from geo_hires.train.yolo_sources import check_init

    pt = tmp_path / yaml_name.replace(".yaml", ".pt")
    with ultralytics_env():
        torch.manual_seed(0)
        YOLO(yaml_name).save(str(pt))
    says = "is a yolov8s; geo_hires trains yolov8n, yolo11n, yolov8n-obb, yolo11n-obb"
    if "seg" in yaml_name:
        says = "'segment' model; geo_hires runs ultralytics"
    with pytest.raises(ConfigError, match=says):
        check_init(pt, "yolov8n")


def test_validation_images_must_exist_and_stay_apart_from_the_training_images(tmp_path):
    import dataclasses

    from geo_hires.train.yolo_run import YoloTrainConfig, train_yolo_bundle

    job = _tiny_job(tmp_path, str(tmp_path / "yolo"), scenes=3, size=128, name="t")
    cfg = YoloTrainConfig(arch="yolov8n", minutes=0.01)
    shared = dataclasses.replace(job, val_scenes=(job.scenes[1], job.val_scenes[0]))
    with pytest.raises(ConfigError, match=r"^validation scenes are also training scenes: \['s1"):
        train_yolo_bundle(shared, cfg, log=lambda s: None)
    unheld = dataclasses.replace(job, val_scenes=(), val_fraction=0.0)
    with pytest.raises(ConfigError, match=r"needs validation images: --val-fraction > 0$"):
        train_yolo_bundle(unheld, cfg, log=lambda s: None)
    assert not (tmp_path / "yolo").exists()  # refused before anything was written


def test_a_relative_work_folder_holds_the_run(tmp_path, monkeypatch):
    """ultralytics put a relative project under its own runs_dir (the repository's runs/), so
    the run was not where a resume looks: a re-run trained again from scratch."""
    from geo_hires.train.yolo_data import YoloDataConfig
    from geo_hires.train.yolo_run import YoloTrainConfig, train_yolo_bundle

    job = _tiny_job(tmp_path, str(tmp_path / "yolo"), scenes=3, size=256, name="rel")
    cfg = YoloTrainConfig(
        arch="yolov8n", minutes=0.03, batch=4, window=256, halo=48, select_fraction=0.5,
        data=YoloDataConfig(chip=96, chips_per_image=2),
    )  # fmt: skip
    monkeypatch.chdir(tmp_path)
    train_yolo_bundle(job, cfg, work="wk", log=lambda _s: None)
    assert (tmp_path / "wk" / "runs" / "train" / "weights" / "last.pt").is_file()
