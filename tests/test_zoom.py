"""Selective zoom: deterministic choices, none/all equal coarse-only/full runs, windows not
zoomed read no full-resolution pixels, budgets hold, resume and provenance (issue #12)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geo_hires.cli import main
from geo_hires.errors import ConfigError
from geo_hires.models import load_bundle
from geo_hires.pipeline import DetectConfig, detect_scene, journal_for
from geo_hires.scene import SceneReader, open_scene
from geo_hires.zoom import ZoomConfig, choose, window_evidence

DEMO = Path(__file__).resolve().parents[1] / "demo" / "airports.tif"
CFG = DetectConfig(score_threshold=0.2, whole_read_pixels=0)  # every block read on its own


@pytest.fixture(scope="module")
def crop(tmp_path_factory) -> Path:
    """2048x1536 of the demo scene (real Pléiades pixels, 0.5 m): aircraft in part of it."""
    path = tmp_path_factory.mktemp("zoom") / "crop.tif"
    with rasterio.open(DEMO) as src:
        win = Window(1024, 512, 2048, 1536)
        profile = {**src.profile, "width": 2048, "height": 1536,
                   "transform": src.window_transform(win)}  # fmt: skip
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read(window=win))
    return path


def test_choices_are_deterministic_and_respect_the_budget():
    scores = np.array([0.9, 0.1, 0.5, 0.0, 0.3, 0.7])
    assert choose(ZoomConfig(mode="gate", gate_threshold=0.3), scores).tolist() == [
        True, False, True, False, True, True]  # fmt: skip
    capped = choose(ZoomConfig(mode="gate", budget=0.5, gate_threshold=0.3), scores)
    assert capped.tolist() == [True, False, True, False, False, True]  # the 3 strongest
    assert choose(ZoomConfig(mode="none"), scores).sum() == 0
    assert choose(ZoomConfig(mode="all"), scores).all()
    a = choose(ZoomConfig(mode="random", budget=0.34, seed=3), scores)
    assert (
        a.sum() == 3 and (a == choose(ZoomConfig(mode="random", budget=0.34, seed=3), scores)).all()
    )
    ev = np.array([[10.0, 10.0, 0.4, 9, 9], [15.0, 12.0, 0.8, 9, 9], [300.0, 5.0, 0.2, 9, 9]])
    cores = np.array([[0, 0, 100, 100], [100, 0, 400, 100], [0, 100, 100, 200]], float)
    assert window_evidence(ev, cores).tolist() == [0.8, 0.2, 0.0]


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"budget": 0.0}, "in \\(0, 1\\]"), ({"budget": 1.5}, "in \\(0, 1\\]"),
     ({"mode": "rl"}, "choose one of"), ({"window": 100}, "multiple of 32")],
)  # fmt: skip
def test_bad_zoom_settings_are_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        ZoomConfig(**kw)


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
    model, card = load_bundle("aircraft_lsn")
    return detect_scene(scene, model, card, config=dataclasses.replace(CFG, zoom=zoom, **kw))


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
    z = everything.zoom(ZoomConfig(mode="all", budget=1.0))
    assert z["fine_windows_fraction"] == 1.0 and z["fine_pixels_fraction"] == 1.0


def test_gate_reads_full_resolution_only_in_chosen_windows(crop, monkeypatch):
    scene = open_scene(crop)
    full = _reads(monkeypatch)
    zoom = ZoomConfig(mode="gate", gate_threshold=0.3)
    result = _run(scene, zoom)
    fine = result.levels[0]
    assert fine.name == "full" and fine.windows is not None
    assert 0 < len(fine.cores) < fine.windows  # some windows zoomed, not all
    for x0, y0, x1, y1 in full:  # every full-resolution read is a chosen window's block
        assert any(cx0 >= x0 and cy0 >= y0 and cx1 <= x1 and cy1 <= y1
                   for cx0, cy0, cx1, cy1 in fine.cores)  # fmt: skip
    assert len(full) == len(fine.cores)
    capped = _run(scene, dataclasses.replace(zoom, budget=0.1))
    assert len(capped.levels[0].cores) == int(np.ceil(0.1 * fine.windows))


def test_zoomed_run_resumes_with_the_same_choice(crop, tmp_path):
    scene = open_scene(crop)
    model, card = load_bundle("aircraft_lsn")
    cfg = dataclasses.replace(CFG, zoom=ZoomConfig(mode="gate"))
    journal = journal_for(tmp_path / "o.geojson", scene, model, cfg)
    first = detect_scene(scene, model, card, config=cfg, journal=journal)
    again = detect_scene(scene, model, card, config=cfg, journal=journal, resume=True)
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
