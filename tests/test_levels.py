"""Level plans follow the scene's ground sample distance, not its pixel count."""

from __future__ import annotations

import dataclasses

import pytest

from geo_hires.models.registry import load_model
from geo_hires.pipeline import DetectConfig, level_downsample, plan_units
from tests.test_tiling import fake_scene


@pytest.mark.parametrize(
    ("gsd", "expected"), [(0.5, (1, 2)), (0.25, (2, 4)), (1.0, (1, 1)), (None, (1, 2))]
)
def test_shipped_levels_follow_gsd(gsd, expected):
    _, card = load_model("aircraft_lsn")
    scene = fake_scene(4000, 3000, gsd=gsd)
    assert tuple(level_downsample(r, scene, card) for r in card.levels) == expected


def test_units_cover_every_block_once_and_keys_are_stable():
    model, card = load_model("aircraft_lsn")
    scene = fake_scene(3000, 2100, gsd=0.5)
    units, runs = plan_units(scene, model, card, DetectConfig(core=512, batch_size=3))
    again, _ = plan_units(scene, model, card, DetectConfig(core=512, batch_size=3))
    assert [u.key for u in units] == [u.key for u in again]
    for li, run in enumerate(runs):
        blocks = [b for u in units if u.level == li for b in u.blocks]
        assert len(blocks) == len({b.index for b in blocks}) == run.blocks
        assert all(len({b.shape for b in u.blocks}) == 1 and len(u.blocks) <= 3 for u in units)
    # a geographic scene at ~0.25 m gets the factors of a 0.25 m projected one
    geo = dataclasses.replace(scene, gsd_m=0.2501)
    assert [r.downsample for r in plan_units(geo, model, card, DetectConfig())[1]] == [2, 4]
