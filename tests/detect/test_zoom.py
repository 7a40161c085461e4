"""Selective zoom in runs: none/all equal coarse-only/full runs, windows not
zoomed read no full-resolution pixels, budgets hold, resume and provenance."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_hires.cli import main
from geo_hires.detect.journal import journal_for
from geo_hires.detect.options import DetectConfig, ZoomConfig
from geo_hires.detect.zoom import choose, zoom_select
from geo_hires.errors import ConfigError
from geo_hires.models.bundle import load_bundle
from geo_hires.pipeline import detect_scene
from geo_hires.scene import SceneReader, open_scene

CFG = DetectConfig(score_threshold=0.2, whole_read_pixels=0)  # every block read on its own


@pytest.fixture(scope="module")
def crop(demo_crop) -> Path:
    """2048x1536 of the demo scene (real Pléiades pixels, 0.5 m): aircraft in part of it."""
    return demo_crop(1024, 512, 2048, 1536)


def test_rl_selection_reads_every_coarse_units_evidence_at_the_scenes_gsd(zoom_evidence):
    """``zoom_select`` feeds the policy the evidence of all coarse units (some have none), sized
    for the scene's GSD against the card's (a coarser scene shows smaller objects), and zooms
    what ``choose`` makes of the policy's probabilities; with no evidence at all, nothing."""
    from types import SimpleNamespace

    bundle = load_bundle("aircraft_lsn")
    cores, ev = zoom_evidence
    units = [SimpleNamespace(evidence=ev[:30]), SimpleNamespace(evidence=None),
             SimpleNamespace(evidence=ev[30:])]  # fmt: skip
    rl = ZoomConfig(mode="rl", window=bundle.policy.spec.window)

    def picked(coarse, gsd, zoom=rl):
        return zoom_select(zoom, coarse, bundle, gsd)(1, cores).astype(int).tolist()

    assert picked(units, None) == picked(units, 0.5) == [1, 1, 1, 0, 1, 1]  # as pinned above
    assert picked(units, 1.0) == [0, 0, 0, 0, 1, 0]
    assert picked(units, 0.25) == [1, 1, 1, 1, 1, 1]
    assert picked([], None, ZoomConfig(mode="gate")) == [0] * 6
    assert picked([SimpleNamespace(evidence=None)], 0.5) == picked([], 0.5)
    with pytest.raises(ConfigError, match="decides on 512-px windows, the run asks for 1024"):
        zoom_select(ZoomConfig(mode="rl", window=1024), units, bundle, None)


def _reads(monkeypatch) -> list[tuple[int, int, int, int]]:
    """Full-resolution reads (output as large as the window) as level-0 x0, y0, x1, y1."""
    full: list[tuple[int, int, int, int]] = []
    real = SceneReader.read

    def read(self, window, *, out_size=None):
        if out_size is None or out_size == (int(window.height), int(window.width)):
            x0, y0 = int(window.col_off), int(window.row_off)
            full.append((x0, y0, x0 + int(window.width), y0 + int(window.height)))
        return real(self, window, out_size=out_size)

    monkeypatch.setattr(SceneReader, "read", read)
    return full


def _run(scene, zoom: ZoomConfig, **kw):
    model = load_bundle("aircraft_lsn")
    return detect_scene(scene, model, config=dataclasses.replace(CFG, zoom=zoom, **kw))


def test_none_is_the_coarse_level_alone_and_all_is_the_full_run(crop, monkeypatch):
    scene = open_scene(crop)
    full = _reads(monkeypatch)
    none = _run(scene, ZoomConfig(mode="none"))
    assert full == []  # not one full-resolution pixel read
    coarse = _run(scene, ZoomConfig(), levels=("coarse",))
    assert np.array_equal(none.detections.boxes, coarse.detections.boxes)
    assert np.array_equal(none.detections.scores, coarse.detections.scores)
    everything = _run(scene, ZoomConfig(mode="all", budget=1.0))  # zoomed path, every window
    today = _run(scene, ZoomConfig())
    assert len(everything.detections) == len(today.detections) > 0
    np.testing.assert_allclose(everything.detections.boxes, today.detections.boxes, atol=1e-3)
    z = everything.zoom()
    assert z["fine_windows_fraction"] == 1.0 and z["fine_pixels_fraction"] == 1.0


def test_gate_reads_full_resolution_only_in_chosen_windows(crop, monkeypatch):
    scene = open_scene(crop)
    full = _reads(monkeypatch)
    zoom = ZoomConfig(mode="gate", gate_threshold=0.3)
    result = _run(scene, zoom)
    fine = result.levels[0]
    assert fine.name == "full" and fine.windows is not None
    assert 0 < len(fine.cores) < fine.windows  # some windows zoomed, not all
    assert fine.skipped_nodata == 0  # windows not chosen are not nodata
    for x0, y0, x1, y1 in full:  # every full-resolution read is a chosen window's block
        assert any(cx0 >= x0 and cy0 >= y0 and cx1 <= x1 and cy1 <= y1
                   for cx0, cy0, cx1, cy1 in fine.cores)  # fmt: skip
    assert len(full) == len(fine.cores)
    scanned = len(fine.cores) + result.levels[1].blocks  # the summary counts what was read
    assert result.summary("s.tif", ["o"]).startswith(f"s.tif: {scanned} windows [full: ")
    capped = _run(scene, dataclasses.replace(zoom, budget=0.1))
    assert len(capped.levels[0].cores) == int(np.ceil(0.1 * fine.windows))


def test_zoomed_run_resumes_with_the_same_choice(crop, tmp_path):
    scene = open_scene(crop)
    model = load_bundle("aircraft_lsn")
    cfg = dataclasses.replace(CFG, zoom=ZoomConfig(mode="gate"))
    journal = journal_for(tmp_path / "o.geojson", scene, model, cfg)
    first = detect_scene(scene, model, config=cfg, journal=journal)
    again = detect_scene(scene, model, config=cfg, journal=journal, resume=True)
    assert again.resumed_units == len(journal.start(resume=True)) > 0
    assert np.array_equal(first.detections.boxes, again.detections.boxes)
    assert again.levels == first.levels


def test_detect_cli_records_the_zoom(crop, tmp_path, capsys):
    out = tmp_path / "z.geojson"
    assert main(["detect", str(crop), "-o", str(out), "--zoom", "gate", "--budget", "0.5"]) == 0
    z = json.loads(out.read_text())["geo_hires"]["zoom"]
    assert z["mode"] == "gate" and z["budget"] == 0.5
    assert 0 < z["fine_windows_fraction"] <= 0.5 and 0 < z["fine_pixels_fraction"] < 1
    assert "zoom gate:" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A tiny LSN trained in the suite on synthetic labelled scenes (with its split)."""
    from geo_hires.export import write_geojson
    from geo_hires.models.card import Level
    from geo_hires.scene import Density, SynthSpec, write_synthetic
    from geo_hires.train import ChipSampler, FitConfig
    from geo_hires.train.run import TrainJob, train_bundle

    root = tmp_path_factory.mktemp("tiny-zoom")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for seed in range(4):
        path = root / "images" / f"s{seed}.tif"
        spec = SynthSpec(width=640, height=640, seed=seed, density=Density.DENSE)
        write_geojson(root / "labels" / f"s{seed}.geojson", write_synthetic(path, spec),
                      open_scene(path))  # fmt: skip
    job = TrainJob(
        scenes=tuple(str(p) for p in sorted((root / "images").iterdir())),
        labels=str(root / "labels"), out=str(root / "lsn"), name="tiny", val_fraction=0.25,
        sampler=ChipSampler(chip=128, scale_range=(0.5, 1.0)),
        fit=FitConfig(steps=60, minutes=1, batch_size=8, lr=5e-3),
        levels=(Level(name="full", target_gsd_m=0.5, downsample=1, max_size=40.0),
                Level(name="coarse", target_gsd_m=1.0, downsample=2, min_size=15.0)),
    )  # fmt: skip
    train_bundle(job, log=lambda _s: None)
    return {"root": root, "lsn": root / "lsn"}


def test_policy_trains_changes_its_decisions_and_runs_as_rl(tiny, tmp_path):
    from geo_hires.models.zoom_policy import PolicySpec, ZoomPolicy
    from geo_hires.train.zoom import ZoomTrainConfig, fit_policy, table, train_zoom_policy

    root = tiny["root"]
    cfg = ZoomTrainConfig(window=128, epochs=60, cost=1.5)  # dear: not every window pays
    record = train_zoom_policy(str(tiny["lsn"]), str(root / "images"), str(root / "labels"),
                               str(tmp_path / "zoomed"), cfg)  # fmt: skip
    assert (tmp_path / "zoomed" / "zoom.pt").is_file() and record["windows"] > 0
    assert {k.split("/")[1] for k in record["validation"]} == {
        "rl", "all", "none", "random_same_share"}  # fmt: skip
    # the decisions move: fitted vs the same network before training
    model = load_bundle(tiny["lsn"])
    card = model.card
    from geo_hires.train.zoom import _items
    from geo_hires.train.zoom_replay import record_images

    names = card.extra["training"]["train_images"]
    items = _items(names, str(root / "images"), str(root / "labels"), card, (), tmp_path)
    replays = record_images(items, model, 128)
    _no_crs_image_records_in_silence(items[0], model, tmp_path)
    spec = PolicySpec(window=128, detector=model.fcn_digest)
    feats, gains = table(replays, card, cfg, spec)
    torch.manual_seed(cfg.seed)  # the initialisation fit_policy starts from
    before = ZoomPolicy(spec).probabilities(feats) >= 0.5
    policy, curve = fit_policy(feats, gains, cfg, spec)
    after = policy.probabilities(feats) >= 0.5
    assert (before != after).any()
    value = gains - cfg.cost
    assert (value * after).sum() >= (value * before).sum() and len(curve) >= 3
    # the trained bundle runs with --zoom rl
    scene = open_scene(root / "images" / card.extra["training"]["val_images"][0])
    zm = load_bundle(tmp_path / "zoomed")
    rl = detect_scene(scene, zm, config=DetectConfig(zoom=ZoomConfig(mode="rl", window=128)))
    assert rl.levels[0].windows is not None


def _no_crs_image_records_in_silence(item, model, tmp_path) -> None:
    """Training images without a CRS are the rule (the Airbus JPEGs): ``train-zoom`` printed
    one "no CRS" warning per image, 95 lines, and nothing else for four minutes."""
    import warnings

    import rasterio
    from affine import Affine

    from geo_hires.train.zoom_replay import record_images

    bare = tmp_path / "bare.tif"
    with rasterio.open(item[0]) as src:
        profile, pixels = src.profile, src.read()
    profile.update(crs=None, transform=Affine.identity())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rasterio's own, at the write
        with rasterio.open(bare, "w", **profile) as dst:
            dst.write(pixels)
    said: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        record_images([(str(bare), item[1])] * 11, model, 128, said.append)
    assert said == ["recorded 10 of 11 scenes"]


def test_rl_without_a_policy_or_with_another_detectors_is_refused(tiny, tmp_path, crop):
    import shutil

    from geo_hires.models.card import bundle_dir

    scene = open_scene(crop)
    model = load_bundle(tiny["lsn"])
    with pytest.raises(ConfigError, match="has no zoom policy; train one with geo-hires"):
        detect_scene(scene, model, config=DetectConfig(zoom=ZoomConfig(mode="rl")))
    other = tmp_path / "other"
    shutil.copytree(bundle_dir("aircraft_lsn"), other)
    from geo_hires.models.zoom_policy import PolicySpec, ZoomPolicy, save_policy

    save_policy(other, ZoomPolicy(PolicySpec(window=512, detector="0123456789abcdef")))
    doc = json.loads((other / "card.json").read_text())
    doc["zoom_policy"] = "zoom.pt"
    (other / "card.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="trained on the evidence of another detector"):
        load_bundle(other)


@pytest.mark.ray
def test_zoomed_run_on_ray_gives_the_local_bytes(crop, local_equals_ray):
    cfg = dataclasses.replace(CFG, zoom=ZoomConfig(mode="gate", gate_threshold=0.3))
    local = local_equals_ray(open_scene(crop), load_bundle("aircraft_lsn"), cfg)
    assert local.levels[0].windows is not None and len(local.levels[0].cores) > 0


def test_the_safety_rule_zooms_forced_windows_whatever_the_policy_and_budget_say():
    probs = np.array([0.1, 0.2, 0.9, 0.8, 0.7, 0.0])
    forced = np.array([False, True, False, False, False, True])
    rl = ZoomConfig(mode="rl")
    assert choose(rl, probs, forced).tolist() == [False, True, True, True, True, True]
    # a budget of 0.5 of 6 windows: 3, of which the 2 forced ones: one more, the most probable
    capped = choose(dataclasses.replace(rl, budget=0.5), probs, forced)
    assert capped.tolist() == [False, True, True, False, False, True]
    # forced windows go beyond the budget; 'none' zooms them too
    assert choose(dataclasses.replace(rl, budget=0.1), probs, forced).sum() == 2
    assert choose(ZoomConfig(mode="none"), probs, forced).tolist() == forced.tolist()
    assert choose(rl, probs).tolist() == (probs >= 0.5).tolist()  # no rule: as before


def test_a_safety_rule_on_the_shipped_policy_only_ever_adds_windows(crop):
    scene = open_scene(crop)
    bundle = load_bundle("aircraft_lsn")
    policy = bundle.policy
    assert policy is not None
    cfg = dataclasses.replace(CFG, zoom=ZoomConfig(mode="rl"))
    bare = dataclasses.replace(
        bundle, policy=policy.with_spec(dataclasses.replace(policy.spec, safe_score=None))
    )
    safe = dataclasses.replace(
        bundle, policy=policy.with_spec(dataclasses.replace(policy.spec, safe_score=0.05))
    )
    plain, guarded = detect_scene(scene, bare, cfg), detect_scene(scene, safe, cfg)
    chosen_plain, chosen_safe = set(plain.levels[0].cores), set(guarded.levels[0].cores)
    assert chosen_plain < chosen_safe  # more windows, and every one the policy chose


def test_train_zoom_keeps_only_gsds_where_the_bundle_zooms(tiny, tmp_path):
    """At 3 m the tiny bundle's 0.5 m level would need x6 upsampling (skipped), so one level
    is scanned and nothing can be zoomed: that GSD is left out, and one alone is refused."""
    from geo_hires.train.zoom import ZoomTrainConfig, train_zoom_policy, zoomable_gsds

    root, card = tiny["root"], load_bundle(tiny["lsn"]).card
    sample = str(root / "images" / card.extra["training"]["train_images"][0])
    assert zoomable_gsds((0.5, 3.0, 0.6), card, sample, tmp_path) == ((0.5, 0.6), (3.0,))
    with pytest.raises(ConfigError, match="scans one level at every GSD of --gsds"):
        cfg = ZoomTrainConfig(window=128, gsds=(3.0,))
        train_zoom_policy(str(tiny["lsn"]), str(root / "images"), str(root / "labels"),
                          str(tmp_path / "z"), cfg)  # fmt: skip


def test_the_replays_gain_counts_truth_found_at_iou_half_by_boxes_at_the_threshold():
    """``_found``, the number each window's recall gain is a difference of: a truth box counts
    once when a detection scoring at least the threshold overlaps it at IoU 0.5 or more."""
    from geo_hires.detections import PixelDetections
    from geo_hires.train.zoom_replay import _found

    truth = np.array([[0, 0, 10, 10], [100, 100, 110, 110], [200, 200, 210, 210],
                      [400, 400, 410, 410]], float)  # fmt: skip
    boxes = np.array([[0, 0, 10, 10],  # A, scoring exactly the threshold
                      [100, 100, 110, 120],  # B at IoU exactly 0.5
                      [200, 200, 210, 210],  # C, under the threshold
                      [400, 400, 410, 410], [401, 400, 411, 410]], float)  # D twice  # fmt: skip
    dets = PixelDetections.build(boxes, np.array([0.3, 0.9, 0.29, 0.8, 0.7]),
                                 np.zeros(5, np.int64), class_names=("aircraft",))  # fmt: skip
    assert _found(dets, truth, 0.3) == 3
    assert _found(dets, truth[:0], 0.3) == 0
    assert _found(dets, truth, 0.95) == 0  # truth, but nothing kept


def test_a_run_of_one_level_says_there_is_nothing_to_zoom_and_scans_every_window(synthetic):
    from geo_hires.errors import NothingToZoomWarning

    scene = open_scene(synthetic(640, 520, seed=4))
    yolo = load_bundle("aircraft_yolo")  # one level: nothing coarser to choose from
    base = DetectConfig(core=256, score_threshold=0.05)
    every = detect_scene(scene, yolo, config=base)
    gated = dataclasses.replace(base, zoom=ZoomConfig(mode="gate", budget=0.1))
    with pytest.warns(NothingToZoomWarning, match=r"^zoom='gate': aircraft_yolo scans one level"):
        got = detect_scene(scene, yolo, config=gated)
    assert got.zoom()["mode"] == "all" and got.zoom()["budget"] is None  # what it did
    assert "zoom" not in got.summary("s.tif", ["o.geojson"])
    assert got.blocks == every.blocks
    assert np.array_equal(got.detections.boxes, every.detections.boxes)
    with pytest.raises(ConfigError, match="has no zoom policy"):  # was accepted and ignored
        detect_scene(scene, yolo, config=dataclasses.replace(base, zoom=ZoomConfig(mode="rl")))
