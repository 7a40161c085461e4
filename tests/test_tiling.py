"""Window planning: cores partition the scene exactly once per level."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from geo_hires.config import ScaleLevel, SmallScenePolicy, TilingConfig
from geo_hires.errors import ConfigError, TilingError
from geo_hires.scene.open import Scene
from geo_hires.tiling import axis_cores, axis_offsets, plan_tiles


def fake_scene(width: int, height: int, gsd: float | None = 0.5) -> Scene:
    return Scene(
        path="mem.tif",
        width=width,
        height=height,
        count=3,
        dtype="uint8",
        crs_wkt=None,
        transform=Affine.identity(),
        nodata=None,
        colorinterp=("red", "green", "blue"),
        has_mask=False,
        gsd_m=gsd,
        overviews=(),
    )


@settings(max_examples=120, deadline=None)
@given(
    width=st.integers(16, 2000),
    height=st.integers(16, 2000),
    window=st.integers(8, 700),
    overlap=st.floats(0.0, 0.9),
    downsample=st.integers(1, 5),
)
def test_cores_partition_scene_exactly_once(width, height, window, overlap, downsample):
    level = ScaleLevel(name="l", window=window, overlap=overlap, downsample=downsample)
    cfg = TilingConfig(levels=(level,), small_scene=SmallScenePolicy.PAD)
    (plan,) = plan_tiles(fake_scene(width, height), cfg)
    cover = np.zeros((height, width), np.int32)
    for t in plan.tiles:
        c, w = t.core, t.window
        cover[c.row_off : c.row_off + c.height, c.col_off : c.col_off + c.width] += 1
        # the core lies inside its window; the window has the level's full size
        assert w.col_off <= c.col_off and c.col_off + c.width <= w.col_off + w.width
        assert w.row_off <= c.row_off and c.row_off + c.height <= w.row_off + w.height
        assert w.width == w.height == window * downsample
        assert t.out_size == (window, window)
        assert w.col_off % downsample == 0 and w.row_off % downsample == 0
    assert (cover == 1).all()
    lw, lh = -(-width // downsample), -(-height // downsample)
    if window <= min(lw, lh):  # windows fit: shifted inward, never past the level's edge
        assert all(t.window.col_off + t.window.width <= lw * downsample for t in plan.tiles)


@given(length=st.integers(8, 5000), window=st.integers(8, 600), stride=st.integers(1, 600))
def test_axis_offsets_cover_and_end_on_edge(length, window, stride):
    if window > length:
        return
    stride = min(stride, window)
    offs = axis_offsets(length, window, stride)
    assert offs[0] == 0 and offs[-1] + window == length
    assert all(0 < b - a <= stride for a, b in itertools.pairwise(offs))
    cores = axis_cores(offs, window, length)
    assert cores[0][0] == 0 and cores[-1][1] == length
    assert all(a[1] == b[0] for a, b in itertools.pairwise(cores))


def test_target_gsd_sets_downsample_from_ground_size():
    lv = ScaleLevel(name="coarse", window=256, target_gsd_m=2.0)
    (p_half,) = plan_tiles(fake_scene(4000, 4000, gsd=0.5), TilingConfig(levels=(lv,)))
    (p_one,) = plan_tiles(fake_scene(4000, 4000, gsd=1.0), TilingConfig(levels=(lv,)))
    assert p_half.downsample == 4 and p_one.downsample == 2


def test_small_scene_policies():
    lv = ScaleLevel(name="big", window=1024)
    scene = fake_scene(800, 600)
    with pytest.raises(TilingError, match="larger than the scene"):
        plan_tiles(scene, TilingConfig(levels=(lv,)))
    (skip,) = plan_tiles(scene, TilingConfig(levels=(lv,), small_scene=SmallScenePolicy.SKIP))
    assert skip.tiles == ()
    (pad,) = plan_tiles(scene, TilingConfig(levels=(lv,), small_scene=SmallScenePolicy.PAD))
    assert len(pad.tiles) == 1 and pad.tiles[0].core.width == 800


def test_windows_wholly_in_nodata_are_skipped():
    valid = np.zeros((100, 100), bool)
    valid[:, 60:] = True  # right 40% valid
    cfg = TilingConfig(levels=(ScaleLevel(name="l", window=100, overlap=0.0),))
    (plan,) = plan_tiles(fake_scene(1000, 1000), cfg, valid=valid)
    assert plan.skipped_nodata == 50 and len(plan.tiles) == 50
    assert min(t.window.col_off for t in plan.tiles) == 500  # the mask border window is kept


def test_config_validation_messages():
    with pytest.raises(ConfigError, match="overlap"):
        ScaleLevel(name="x", window=64, overlap=1.0)
    with pytest.raises(ConfigError, match="unique"):
        TilingConfig(levels=(ScaleLevel(name="a", window=64), ScaleLevel(name="a", window=32)))
