"""The library called the wrong way (what a type checker would catch, for an untyped caller):
one clear ``ConfigError`` saying what to pass, not an IndexError, AttributeError or a torch
error from deep inside, after the model was loaded and the scene opened."""

from __future__ import annotations

import pytest

from geo_hires.detect.options import DetectConfig, DetectOptions, ZoomConfig
from geo_hires.errors import ConfigError
from geo_hires.models.bundle import load_bundle
from geo_hires.pipeline import detect_scene, run_detect
from geo_hires.scene import open_scene


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"zoom": "rl"}, r"DetectConfig.zoom is a ZoomConfig \(e.g. ZoomConfig\(mode='rl'\)\)"),
        ({"levels": "full"}, "levels: a tuple naming at least one level"),
        ({"iou_threshold": 2.0}, r"iou_threshold in \(0, 1\]"),
        ({"iou_threshold": 0.0}, r"iou_threshold in \(0, 1\]"),
        ({"max_per_block": 0}, "max_per_block >= 1"),
        ({"whole_read_pixels": -1}, "whole_read_pixels >= 0"),
    ],
)
def test_a_bad_detect_config_is_refused_where_it_is_made(kwargs, says):
    with pytest.raises(ConfigError, match=says):
        DetectConfig(**kwargs)


def test_detect_scene_says_what_it_takes(demo_crop):
    scene, bundle = open_scene(demo_crop(1024, 512, 256, 256)), load_bundle("aircraft_lsn")
    with pytest.raises(ConfigError, match="takes a DetectConfig, not a DetectOptions"):
        detect_scene(scene, bundle, DetectOptions())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="aoi: an AreaOfInterest"):
        detect_scene(scene, bundle, aoi={"type": "Polygon"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="resume needs the journal"):
        detect_scene(scene, bundle, resume=True)
    assert detect_scene(scene, bundle, DetectConfig(zoom=ZoomConfig(mode="none"))).levels


def test_run_detect_without_outputs_is_refused_before_any_work(demo_crop):
    with pytest.raises(ConfigError, match="name at least one output file"):
        run_detect(demo_crop(1024, 512, 256, 256), [])


def test_rl_without_a_usable_policy_is_refused_before_the_coarse_pass(demo_crop, tmp_path):
    """It was refused only once the coarse level had been scanned: minutes on a large scene."""
    import shutil

    from geo_hires.models.card import bundle_dir, update_card

    folder = tmp_path / "lsn"
    shutil.copytree(bundle_dir("aircraft_lsn"), folder)
    update_card(folder, {"zoom_policy": None})
    scene, seen = open_scene(demo_crop(0, 0, 2048, 2048)), []
    cfg = DetectConfig(zoom=ZoomConfig(mode="rl"))
    with pytest.raises(ConfigError, match="has no zoom policy"):
        detect_scene(scene, load_bundle(folder), cfg, on_progress=lambda *a: seen.append(a))
    assert seen == []


def test_options_a_given_config_overrides_are_said(demo_crop, tmp_path):
    """run_detect(options, config=...) dropped the options' threshold and zoom without a word."""
    from geo_hires.errors import OptionIgnoredWarning

    opts = DetectOptions(model="aircraft_lsn", score_threshold=0.9, zoom="none", bands=(1, 2, 3))
    with pytest.warns(OptionIgnoredWarning) as said:
        run_detect(demo_crop(1024, 512, 256, 256), tmp_path / "o.geojson", opts,
                   config=DetectConfig())  # fmt: skip
    text = [str(w.message) for w in said]
    assert len(text) == 2 and "DetectOptions.score_threshold" in text[0] and "zoom" in text[1]


def test_detect_config_bounds_hold_at_their_edges():
    """The edges a caller meets first (survivors of the mutation run: the old checks were
    tested only through the CLI, outside this file's functions' selection)."""
    DetectConfig(core=16, batch_size=1, prefetch=1, threads=1, score_threshold=0.001)
    with pytest.raises(ConfigError, match=r"^block=15: give a block core of 16 px or more"):
        DetectConfig(core=15)
    for kw in ({"batch_size": 0}, {"prefetch": 0}):
        with pytest.raises(ConfigError, match="give 1 or more of each"):
            DetectConfig(**kw)
    with pytest.raises(ConfigError, match=r"^threads=0: give 1 or more"):
        DetectConfig(threads=0)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ConfigError, match=r"score threshold must be in \(0, 1\)"):
            DetectConfig(score_threshold=bad)
    DetectConfig(iou_threshold=1.0, max_per_block=1, whole_read_pixels=0)


def test_a_batch_runs_on_a_callers_frozen_executor_with_stats(tmp_path, synthetic):
    """run_batch cleared an executor's ``stats`` between scenes by assignment: a frozen one
    (a caller's own, counting as Ray's does) failed every scene."""
    import dataclasses

    from geo_hires.detect.executors import LocalExecutor
    from geo_hires.pipeline import run_batch

    @dataclasses.dataclass(frozen=True)
    class Counting:
        stats: object = None

        def run_units(self, *args, **kw):  # type: ignore[no-untyped-def]
            LocalExecutor().run_units(*args, **kw)

    (tmp_path / "l.txt").write_text(f"{synthetic(512, 512, seed=5)}\n")
    report = run_batch(tmp_path / "l.txt", tmp_path / "o", DetectOptions(model="aircraft_lsn"),
                       executor=Counting())  # fmt: skip
    assert report.failed == 0 and report.done == 1, report


def test_a_scene_in_gdals_memory_file_system_is_read(tmp_path, synthetic):
    """/vsimem/ paths (rasterio's MemoryFile) were refused as missing: Path.exists said no."""
    from rasterio.io import MemoryFile

    from geo_hires.errors import SceneNotFoundError
    from geo_hires.models.bundle import load_bundle
    from geo_hires.pipeline import detect_scene
    from geo_hires.scene import open_scene

    on_disk = detect_scene(open_scene(synthetic(640, 512, seed=3)), load_bundle("aircraft_lsn"))
    with MemoryFile(synthetic(640, 512, seed=3).read_bytes(), filename="s.tif") as mem:
        scene = open_scene(mem.name)
        assert scene.path.startswith("/vsimem/") and (scene.width, scene.height) == (640, 512)
        found = detect_scene(scene, load_bundle("aircraft_lsn"))
    assert found.detections.boxes.tolist() == on_disk.detections.boxes.tolist()
    with pytest.raises(SceneNotFoundError, match=r"scene not found: /vsimem/none\.tif"):
        open_scene("/vsimem/none.tif")
