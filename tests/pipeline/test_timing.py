"""Where the time goes: each stage's busy seconds reach the result, the batch status and, when
asked, the outputs — and only when asked, so that equal runs write equal bytes."""

from __future__ import annotations

import json

from geo_hires.cli import main
from geo_hires.detect.options import DetectConfig
from geo_hires.models.bundle import load_bundle
from geo_hires.pipeline import detect_scene
from geo_hires.scene import open_scene

STAGES = {"read", "forward", "decode", "merge"}


def test_a_run_accounts_for_read_forward_decode_and_merge(synthetic):
    scene = open_scene(synthetic(1400, 1100, seed=21, nodata=True))
    result = detect_scene(scene, load_bundle("aircraft_lsn"), DetectConfig(core=256))
    t = result.timing()
    assert set(t["busy_s"]) == STAGES == set(t["share_of_wall"])
    assert all(v > 0 for v in t["busy_s"].values())
    assert t["busy_s"]["forward"] < t["wall_s"] and t["wall_s"] == round(result.seconds, 3)
    assert 0 < t["share_of_wall"]["forward"] < 1


def test_timing_is_in_the_outputs_only_when_asked(synthetic, tmp_path, capsys):
    scene = synthetic(900, 700, seed=5)
    plain, timed = tmp_path / "plain.geojson", tmp_path / "timed.geojson"
    assert main(["detect", str(scene), "-o", str(plain)]) == 0
    assert main(["detect", str(scene), "-o", str(timed), "--timing"]) == 0
    assert "timing" not in json.loads(plain.read_text())["geo_hires"]
    timing = json.loads(timed.read_text())["geo_hires"]["timing"]
    assert set(timing["busy_s"]) == STAGES and timing["wall_s"] > 0
    again = tmp_path / "again.geojson"
    assert main(["detect", str(scene), "-o", str(again)]) == 0
    assert again.read_bytes() == plain.read_bytes()


def test_the_batch_status_says_where_the_time_went(synthetic, tmp_path, capsys):
    listing = tmp_path / "one.txt"
    scene = synthetic(900, 700, seed=5)
    listing.write_text(f"{scene}\n")
    assert main(["batch", str(listing), "--out-dir", str(tmp_path / "out")]) == 0
    status = json.loads((tmp_path / "out" / f"{scene.stem}.status.json").read_text())
    assert set(status["timing"]["busy_s"]) == STAGES
