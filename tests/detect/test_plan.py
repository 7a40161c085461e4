"""The one planner: block cores partition each level exactly once, levels follow the GSD,
units are stable, nodata and the AOI leave blocks out — and ``geo-hires plan`` prints exactly
what ``detect`` runs."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geo_hires.cli import main
from geo_hires.detect.blocks import batch_blocks, halo_for, plan_blocks
from geo_hires.detect.levels import level_downsample, level_scales
from geo_hires.detect.options import DetectConfig, ZoomConfig
from geo_hires.detect.plan import mask_lookup, plan_units
from geo_hires.errors import ConfigError, LevelSkippedWarning
from geo_hires.models.bundle import load_bundle
from geo_hires.models.card import load_card
from geo_hires.pipeline import detect_scene
from geo_hires.scene import open_scene


@settings(max_examples=100, deadline=None)
@given(
    width=st.integers(1, 1500),
    height=st.integers(1, 1500),
    stride=st.sampled_from([2, 4, 8, 16]),
    core_cells=st.integers(8, 64),
    halo_cells=st.integers(0, 16),
)
def test_block_cores_partition_the_level_exactly_once(
    width, height, stride, core_cells, halo_cells
):
    core, halo = core_cells * stride, halo_cells * stride
    blocks = plan_blocks(width, height, core=core, halo=halo, stride=stride)
    cover = np.zeros((height, width), np.int32)
    for b in blocks:
        cover[b.cy0 : b.cy1, b.cx0 : b.cx1] += 1
        # the input is the core widened by the halo and clipped to the level
        assert (b.x0, b.y0) == (max(0, b.cx0 - halo), max(0, b.cy0 - halo))
        assert (b.x1, b.y1) == (min(width, b.cx1 + halo), min(height, b.cy1 + halo))
        assert b.cx0 % stride == 0 and b.cy0 % stride == 0 and b.x0 % stride == 0
    assert (cover == 1).all()
    batches = batch_blocks(blocks, 3)
    assert sorted(b.index for batch in batches for b in batch) == sorted(b.index for b in blocks)
    assert all(len({b.shape for b in batch}) == 1 and len(batch) <= 3 for batch in batches)


def test_bad_blocks_and_the_halo_rule():
    with pytest.raises(ConfigError, match="multiples of the network stride 4"):
        plan_blocks(100, 100, core=30, halo=8, stride=4)
    assert halo_for(127, 4) == 68  # 63 px of receptive field + one cell for the peak test


@pytest.mark.parametrize(
    ("gsd", "expected"),
    [(0.5, (1, 2)), (0.25, (2, 4)), (0.7, (1, 1)), (1.0, (0.5, 1)), (1.5, (math.inf, 0.5)),
     (None, (1, 2))],
)  # fmt: skip
def test_shipped_levels_follow_gsd(fake_scene, gsd, expected):
    card = load_card("aircraft_lsn")
    scene = fake_scene(4000, 3000, gsd=gsd)
    assert tuple(level_downsample(r, scene, card) for r in card.levels) == expected


def test_units_cover_every_block_once_and_keys_are_stable(fake_scene):
    card = load_card("aircraft_lsn")
    scene = fake_scene(3000, 2100, gsd=0.5)
    units, runs = plan_units(scene, card, DetectConfig(core=512, batch_size=3))
    again, _ = plan_units(scene, card, DetectConfig(core=512, batch_size=3))
    assert [u.key for u in units] == [u.key for u in again]
    for li, run in enumerate(runs):
        blocks = [b for u in units if u.level == li for b in u.blocks]
        assert len(blocks) == len({b.index for b in blocks}) == run.blocks
        assert all(len({b.shape for b in u.blocks}) == 1 and len(u.blocks) <= 3 for u in units)
    assert {u.kind for u in units} == {"scan"}
    # a geographic scene at ~0.25 m gets the factors of a 0.25 m projected one
    geo = dataclasses.replace(scene, gsd_m=0.2501)
    assert [r.downsample for r in plan_units(geo, card, DetectConfig())[1]] == [2, 4]
    with pytest.raises(ConfigError, match="has no level 'fine'; its levels"):
        plan_units(scene, card, DetectConfig(levels=("fine",)))


def test_blocks_wholly_in_nodata_are_left_out_and_counted(fake_scene):
    card = load_card("aircraft_lsn")
    scene = fake_scene(2048, 2048, gsd=0.5)
    valid = np.zeros((100, 100), bool)
    valid[:, 60:] = True  # the right 40 % holds data
    cfg = DetectConfig(core=256, levels=("full",))
    units, (run,) = plan_units(scene, card, cfg, has_data=mask_lookup(valid, scene))
    kept = [b for u in units for b in u.blocks]
    assert run.blocks == 64 and run.skipped_nodata + len(kept) == 64
    assert run.skipped_nodata == 32  # the four leftmost block columns hold no data
    # a block reaching the mask border by its halo is kept (the test is conservative)
    assert min(b.cx0 for b in kept) == 1024


def _plan_levels(text: str) -> dict[str, dict[str, int]]:
    """``{level: {blocks|zoom windows, skipped(nodata), skipped(AOI), units}}`` of the output."""
    found = {}
    for line in text.splitlines():
        m = re.match(r"\s+level (\S+)\s+x(\d+)", line)  # levels read at x1, x2...
        if m:
            nums = dict(re.findall(r"(blocks|zoom windows|skipped\(nodata\)|skipped\(AOI\)|units)"
                                   r"\s+(\d+)", line))  # fmt: skip
            found[m.group(1)] = {k: int(v) for k, v in nums.items()} | {"x": int(m.group(2))}
    return found


@pytest.mark.parametrize("zoom", ["all", "gate"])
def test_plan_prints_what_detect_runs(synthetic, tmp_path, capsys, zoom):
    """Same scene (with nodata), AOI, model and options: the plan's levels, block counts, skips
    and units are those the run has."""
    import rasterio
    from pyproj import Transformer

    from geo_hires.aoi import load_aoi
    from geo_hires.detect.executors import LocalExecutor

    path = tmp_path / "half_empty.tif"  # a synthetic scene whose left 700 columns are nodata
    with rasterio.open(synthetic(1500, 1200, seed=9)) as src:
        data, profile = src.read(), {**src.profile, "nodata": 0}
    data[:, :, :700] = 0
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    scene = open_scene(path)
    ring_px = np.array([[0, 0], [1000, 0], [1000, 700], [0, 700], [0, 0]], float)
    to_wgs84 = Transformer.from_crs(scene.crs_wkt, "EPSG:4326", always_xy=True)
    ring = [list(to_wgs84.transform(*(scene.transform @ (x, y)))) for x, y in ring_px]
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    assert main(["plan", str(path), "--block", "256", "--aoi", str(aoi), "--zoom", zoom]) == 0
    printed = _plan_levels(capsys.readouterr().out)

    ran: list[str] = []

    class Counting(LocalExecutor):
        def run_units(self, scene, bundle, units, cfg, **kw):  # type: ignore[override]
            ran.extend(u.key for u in units)
            super().run_units(scene, bundle, units, cfg, **kw)

    cfg = DetectConfig(core=256, zoom=ZoomConfig(mode=zoom))
    result = detect_scene(scene, load_bundle("aircraft_lsn"), cfg, aoi=load_aoi(aoi, scene),
                          executor=Counting())  # fmt: skip
    assert set(printed) == {lv.name for lv in result.levels}
    names = [lv.name for lv in result.levels]
    for lv in result.levels:
        p = printed[lv.name]
        assert (p["x"], p["skipped(nodata)"], p["skipped(AOI)"]) == (
            lv.downsample, lv.skipped_nodata, lv.skipped_aoi)  # fmt: skip
        if lv.windows is not None:  # a zoomed level: the windows the zoom chose among
            assert p["zoom windows"] == lv.windows and len(lv.cores) <= lv.windows
        else:
            li = ["full", "coarse"].index(lv.name)
            assert p["blocks"] == lv.blocks
            assert p["units"] == sum(k.startswith(f"L{li}-") for k in ran)
    assert names == ["full", "coarse"]
    assert any(lv.skipped_nodata for lv in result.levels)
    assert any(lv.skipped_aoi for lv in result.levels)


def test_no_two_levels_read_the_same_pixels_at_one_scale(fake_scene):
    """0.7 m: both levels would read x1, so coarse is folded into full (its sizes with it);
    1.0 m: full is upsampled x2 and coarse reads x1; 1.5 m: full would need x3 and is left out
    with a warning, coarse is upsampled x2."""
    card = load_card("aircraft_lsn")
    full, coarse = card.levels
    at = {}
    for gsd in (0.7, 1.0, 1.5):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            at[gsd] = (level_scales(card, fake_scene(3000, 2000, gsd=gsd), DetectConfig()), caught)
    (one,), _ = at[0.7]
    assert (one.index, one.downsample, one.folded) == (0, 1, ("coarse",))
    assert (one.rule.min_size, one.rule.max_size) == (full.min_size, coarse.max_size)
    scales, caught = at[1.0]
    assert [(s.index, s.downsample, s.folded) for s in scales] == [(0, 0.5, ()), (1, 1, ())]
    assert not caught
    (only,), caught = at[1.5]
    assert (only.index, only.downsample) == (1, 0.5)
    (w,) = [w for w in caught if issubclass(w.category, LevelSkippedWarning)]
    assert "level 'full' (0.5 m) is not scanned: the scene's 1.50 m pixels" in str(w.message)


def test_a_coarse_scene_runs_each_scale_once_and_zooms_into_the_finest(demo_crop, tmp_path):
    """The demo crop written at 1.0 m: the run reads the fine level upsampled x2 and the coarse
    at x1, and a zoomed run chooses windows of the fine (upsampled) level."""
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling

    src_path = demo_crop(1024, 512, 2048, 1536)
    path = tmp_path / "one_metre.tif"
    with rasterio.open(src_path) as src:  # the real 0.5 m pixels averaged to 1.0 m
        t = src.transform
        data = src.read(out_shape=(3, 768, 1024), resampling=Resampling.average)
        profile = {**src.profile, "width": 1024, "height": 768,
                   "transform": Affine(1.0, 0, t.c, 0, -1.0, t.f)}  # fmt: skip
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
    scene = open_scene(path)
    assert scene.gsd_m == pytest.approx(1.0)
    bundle = load_bundle("aircraft_lsn")
    result = detect_scene(scene, bundle, DetectConfig(core=512, score_threshold=0.3))
    assert [(lv.name, lv.downsample) for lv in result.levels] == [("full", 0.5), ("coarse", 1)]
    assert "full: 12 blocks (up x2), coarse: 4 blocks (x1)" in result.summary("s.tif", ["o"])
    assert len(result.detections) >= 10 and 0 in result.detections.levels  # found upsampled
    zoomed = detect_scene(scene, bundle, DetectConfig(zoom=ZoomConfig(mode="gate")))
    fine = zoomed.levels[0]
    assert fine.name == "full" and fine.windows is not None and fine.downsample == 0.5
    assert zoomed.levels[1].windows is None  # the coarse level is scanned whole


def test_streamed_reads_of_an_upsampled_level_equal_the_whole_level(synthetic, tmp_path):
    """The exactness rule holds at x2 upsampling too: blocks read on their own (halo and
    bilinear interpolation across their edges) equal slices of the level read at once."""
    import rasterio
    from affine import Affine

    from geo_hires.detect.runner import UnitRunner
    from geo_hires.scene import SceneReader

    path = tmp_path / "coarse.tif"
    with rasterio.open(synthetic(700, 530, seed=4)) as src:
        t = src.transform
        profile = {**src.profile, "transform": Affine(1.0, 0, t.c, 0, -1.0, t.f)}
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read())
    scene = open_scene(path)
    bundle = load_bundle("aircraft_lsn")
    cfg = DetectConfig(core=256, levels=("full",))
    units, (run,) = plan_units(scene, bundle.card, cfg)
    assert run.downsample == 0.5 and len(units) > 2
    with SceneReader(scene) as reader:
        whole = UnitRunner(reader, bundle, cfg)
        stream = UnitRunner(reader, bundle, dataclasses.replace(cfg, whole_read_pixels=1))
        for unit in units:
            for (b, img_w, ok_w), (_, img_s, ok_s) in zip(
                whole.read(unit), stream.read(unit), strict=True
            ):
                assert img_s.shape == (3, *b.shape)
                np.testing.assert_array_equal(ok_s, ok_w)
                np.testing.assert_allclose(img_s, img_w, atol=1e-6)


def test_a_block_size_for_a_bundle_without_a_scanning_network_is_said_to_be_moot():
    import warnings

    from geo_hires.detect.options import DetectOptions
    from geo_hires.errors import OptionIgnoredWarning
    from geo_hires.models.card import load_card

    yolo, lsn = load_card("aircraft_yolo"), load_card("aircraft_lsn")
    with pytest.warns(OptionIgnoredWarning, match="^block=512: aircraft_yolo has no scanning"):
        assert DetectOptions(block=512).detect_config(yolo).core == 512
    with warnings.catch_warnings():
        warnings.simplefilter("error", OptionIgnoredWarning)
        DetectOptions(block=512).detect_config(lsn)  # its blocks: used
        DetectOptions().detect_config(yolo)  # not asked for: nothing to say


def test_plan_refuses_and_warns_as_detect_does(demo_crop, capsys, tmp_path):
    """``plan --zoom rl`` of a model without a policy printed a plan detect refuses, and a
    one-level model's ``--zoom gate`` went unremarked."""
    import shutil

    from geo_hires.models.card import bundle_dir

    crop = str(demo_crop(0, 0, 512, 512))
    assert main(["plan", crop, "--model", "aircraft_yolo", "--zoom", "rl"]) == 2
    err = capsys.readouterr().err
    assert "has no zoom policy; train one with geo-hires train-zoom, or leave --zoom out" in err
    assert main(["plan", crop, "--model", "aircraft_yolo", "--zoom", "gate"]) == 0
    assert "nothing to zoom into; every window is scanned" in capsys.readouterr().err
    assert main(["plan", crop, "--model", "aircraft_lsn", "--zoom", "rl"]) == 0  # its policy
    capsys.readouterr()
    bare = tmp_path / "bare"  # two levels, no policy: gate is the way to zoom
    shutil.copytree(bundle_dir("aircraft_lsn"), bare)
    card = json.loads((bare / "card.json").read_text())
    card.pop("zoom_policy")
    (bare / "card.json").write_text(json.dumps(card))
    assert main(["plan", crop, "--model", str(bare), "--zoom", "rl"]) == 2
    assert "or use --zoom gate" in capsys.readouterr().err
