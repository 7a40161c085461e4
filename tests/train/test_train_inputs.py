"""Training inputs that could not make a usable model are refused before any training (the
training review): a GSD that is not a size, labels with no object, one file name twice, zoom
settings out of range; and what was trained matches what the card says (the LSN's levels at
the data's GSD, a zoom policy's weights not the machine's thread count)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from geo_hires.cli import main
from geo_hires.errors import ConfigError
from geo_hires.train.run import TrainJob


def _job(**kw):
    return TrainJob(scenes=("a.tif",), labels="l", out="o", name="n", **kw)


def test_the_lsn_levels_run_at_the_datas_gsd():
    """--gsd 0.3 wrote a card whose levels ran at 0.5 and 1.0 m: the network never saw 0.3 m
    pixels, not even on its own training scenes."""
    assert [lv.target_gsd_m for lv in _job().plan] == [0.5, 1.0]
    plan = _job(gsd_m=0.3).plan
    assert [round(lv.target_gsd_m, 9) for lv in plan] == [0.3, 0.6]
    assert [(lv.min_size, lv.max_size) for lv in plan] == [(0.0, 80.0), (32.0, 1e9)]  # level px
    with pytest.raises(ConfigError, match=r"finest level runs at 0\.5 m but the data is at 0\.3 m"):
        _job(gsd_m=0.3, levels=_job().plan)
    with pytest.raises(ConfigError, match="at least one level"):
        _job(levels=())
    for bad in (math.nan, 0.0, -1.0):
        with pytest.raises(ConfigError, match="metres per pixel of the data, above 0"):
            _job(gsd_m=bad)


def test_labels_without_objects_and_names_given_twice_are_refused(tmp_path, synthetic):
    from geo_hires.train.chips import load_labelled

    scene = synthetic(256, 256, seed=4)
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(ConfigError, match="hold no object in these 1 scenes"):
        load_labelled([scene], empty)  # wrote a 0-class bundle detect crashed on
    from geo_hires.export import write_geojson
    from geo_hires.scene import Density, SynthSpec, open_scene, write_synthetic

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / "x.tif"
        truth = write_synthetic(
            path, SynthSpec(width=128, height=128, seed=1, density=Density.DENSE)
        )
        write_geojson(tmp_path / "x.geojson", truth, open_scene(path))
    with pytest.raises(ConfigError, match=r"two scenes are named x\.tif"):
        load_labelled([tmp_path / "a" / "x.tif", tmp_path / "b" / "x.tif"], tmp_path)


def test_zoom_training_settings_out_of_range_are_refused(capsys):
    from geo_hires.train.zoom import ZoomTrainConfig

    for kw, says in [
        ({"epochs": 0}, "--epochs >= 1"),
        ({"samples": 0}, "samples >= 1"),
        ({"lr": 0.0}, "lr > 0"),
        ({"cost": -5.0}, "--cost >= 0"),
        ({"safety_recall": 1.5}, r"--safety-recall 1.5: a share, in \(0, 1\]"),
        ({"safety_recall": -0.5}, "--safety-recall -0.5"),
    ]:
        with pytest.raises(ConfigError, match=says):
            ZoomTrainConfig(**kw)
    edge = ZoomTrainConfig(epochs=1, samples=1, cost=0.0, safety_recall=1.0)  # the bounds hold
    assert (edge.epochs, edge.cost, edge.safety_recall) == (1, 0.0, 1.0)
    rc = main(["train-zoom", "imgs", "--labels", "l", "--out", "o", "--window", "256"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "detect zooms 512-px windows" in err[0], err


def test_a_zoom_policy_is_the_same_whatever_the_callers_thread_count():
    from geo_hires.models.zoom_policy import PolicySpec
    from geo_hires.train.zoom import ZoomTrainConfig, fit_policy

    rng = np.random.default_rng(0)
    feats = rng.random((64, 3, 24, 24), dtype=np.float32)
    gains = rng.random(64) * (rng.random(64) < 0.3)
    cfg, spec = ZoomTrainConfig(window=128, epochs=30), PolicySpec(window=128, detector="d")
    caller = torch.get_num_threads()
    weights = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            policy, _ = fit_policy(feats, gains, cfg, spec)
            weights.append(torch.cat([p.detach().flatten() for p in policy.parameters()]))
            assert torch.get_num_threads() == threads  # and the caller's count is restored
    finally:
        torch.set_num_threads(caller)
    assert torch.equal(weights[0], weights[1])


def test_zoom_training_resamples_an_image_from_its_own_gsd(tmp_path):
    """--gsds took every image to be at the card's GSD: a 0.3 m scene 'at 0.6 m' was really
    at 0.36 m (and its truth scaled wrongly with it)."""
    import rasterio

    from geo_hires.export import write_geojson
    from geo_hires.models.card import load_card
    from geo_hires.scene import Density, SynthSpec, open_scene, write_synthetic
    from geo_hires.train.zoom import _items

    (tmp_path / "img").mkdir()
    path = tmp_path / "img" / "fine.tif"
    spec = SynthSpec(width=300, height=200, seed=2, density=Density.DENSE, gsd_m=0.3)
    write_geojson(tmp_path / "fine.geojson", write_synthetic(path, spec), open_scene(path))
    card = dataclasses.replace(load_card("aircraft_lsn"), classes=("aircraft", "vehicle"))  # 0.5 m
    ((copy, _),) = _items(["fine.tif"], str(tmp_path / "img"), str(tmp_path), card, (0.6,),
                          tmp_path / "work")  # fmt: skip
    with rasterio.open(copy) as src:
        assert (src.width, src.height) == (150, 100) and src.res == (0.6, 0.6)


def test_yolo_only_flags_given_to_the_lsn_are_refused(tmp_path, capsys, fixtures):
    """--train-device 0 trained the LSN on the CPU, --val-scenes were not its validation."""
    base = ["train", str(fixtures / "OSBS_029.tif"), "--labels", str(fixtures / "OSBS_029.csv"),
            "--out", str(tmp_path / "b"), "--arch", "lsn"]  # fmt: skip
    for extra in (["--train-device", "0"], ["--val-scenes", "x.tif"], ["--work", "w"]):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert f"{extra[0]}: for YOLO training" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()
