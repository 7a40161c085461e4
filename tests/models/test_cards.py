"""A card.json written by hand (your own YOLO's, docs/models.md): each value a card cannot
run is refused when the card is read, in one line naming the key; they surfaced as a
ZeroDivisionError, a TypeError or ultralytics' own ValueError mid-run, or ran to an empty
result (a level keeping no size, a class per character of a string)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from geo_hires.errors import ConfigError
from geo_hires.models.bundle import Bundle, load_bundle
from geo_hires.models.card import bundle_dir, load_card


def _yolo_card() -> dict:
    return json.loads((bundle_dir("aircraft_yolo") / "card.json").read_text())


def _level(**changes) -> dict:
    card = _yolo_card()
    return {**card, "levels": [{**card["levels"][0], **changes}]}


@pytest.mark.parametrize(
    "doc, says",
    [
        (_level(target_gsd_m=0), r"level 'full': 'target_gsd_m' must be a number > 0, got 0"),
        (_level(target_gsd_m="0.5"), r"'target_gsd_m' must be a number > 0, got '0.5'"),
        (_level(target_gsd_m=float("nan")), r"'target_gsd_m' must be a number > 0, got nan"),
        (_level(window=512.5), r"'window' must be a whole number, got 512.5"),
        (_level(halo="96"), r"'halo' must be a whole number, got '96'"),
        (_level(downsample=0), r"'downsample' must be a whole number > 0"),
        (_level(min_size=90, max_size=30), r"0 <= 'min_size' <= 'max_size' .* got 90/30"),
        (_level(detector="../x.pt"), r"'detector' '../x.pt' must be 'fcn' or .* without '..'"),
        (_level(detector="/abs/x.pt"), r"'detector' '/abs/x.pt' must be 'fcn' or an ultralytics"),
        (_level(detector="sub\\x.pt"), r"'detector' 'sub\\\\x.pt' must be 'fcn' or an"),
        ({**_yolo_card(), "score_threshold": 2}, r"'score_threshold' in \(0, 1\), got 2"),
        ({**_yolo_card(), "score_threshold": 0}, r"'score_threshold' in \(0, 1\), got 0"),
        ({**_yolo_card(), "score_threshold": 1}, r"'score_threshold' in \(0, 1\), got 1"),
        (
            {**_yolo_card(), "gsd_m": 0},
            r"model 'aircraft_yolo': 'gsd_m' must be a number > 0, got 0",
        ),
        ({**_yolo_card(), "classes": [1]}, r"'classes' is a list of names, got \[1\]"),
        (
            {**_yolo_card(), "cascade": {"detector": "../r.pt"}},
            r"cascade: 'detector' '../r.pt' must be 'fcn' or an ultralytics .pt's path inside the "
            r"bundle folder \(relative, without '..'\)",
        ),
        (
            _level(detector="fcn"),
            r"a level runs the scanning network \('detector': 'fcn'\) but "
            r"the card has no 'arch'",
        ),
        ({**_yolo_card(), "classes": "Airplane"}, r"/card.json: 'classes' and 'levels' are lists$"),
        ({**_yolo_card(), "classes": [0]}, r"'classes' is a list of names, got \[0\]"),
        ({**_yolo_card(), "levels": []}, r"'levels' names no level"),
        ({**_yolo_card(), "input_bands": ["red", "nir"]}, r"'input_bands' names the three bands"),
        ([_yolo_card()], r"/card.json: a JSON list, not an object$"),
        (
            {k: v for k, v in _yolo_card().items() if k != "score_threshold"},
            r"/card.json: no 'score_threshold' \(see docs/models.md for a card\)$",
        ),
    ],
)
def test_a_card_that_cannot_run_is_refused_naming_the_key(tmp_path, doc, says):
    (tmp_path / "card.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=says):
        load_card(tmp_path)


def test_a_detector_in_a_subfolder_travels_to_an_actor(tmp_path, monkeypatch):
    """``"detector": "sub/dir/small.pt"`` ran locally; an actor rebuilt the bundle in a folder
    without ``sub`` and failed with "No such file or directory"."""
    folder = tmp_path / "b"
    shutil.copytree(bundle_dir("aircraft_yolo"), folder)
    (folder / "sub" / "dir").mkdir(parents=True)
    (folder / "yolo.pt").rename(folder / "sub" / "dir" / "small.pt")
    doc = json.loads((folder / "card.json").read_text())
    doc["levels"][0]["detector"] = "sub/dir/small.pt"
    (folder / "card.json").write_text(json.dumps(doc))
    here = load_bundle(folder)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "actor"))
    (tmp_path / "actor").mkdir()
    there = Bundle.from_payload(here.card, here.payload())
    assert list(there.yolo) == ["sub/dir/small.pt"] and there.digest == here.digest
    assert not list((tmp_path / "actor").glob("geo-hires-models-*"))  # copies gone once loaded
    assert Path(there.model("sub/dir/small.pt").path).name == "small.pt"


def test_plan_refuses_a_bundle_whose_files_are_missing_as_detect_does(tmp_path, capsys):
    """``plan`` reads the card alone: it showed a run of a bundle ``detect`` then refused."""
    from geo_hires.cli import main

    folder = tmp_path / "b"
    shutil.copytree(bundle_dir("aircraft_yolo"), folder)
    (folder / "yolo.pt").unlink()
    with pytest.raises(ConfigError, match=r"the card needs 'yolo.pt', which is not in the folder"):
        load_card(folder)
    scene = Path(__file__).parents[2] / "demo" / "airports.tif"
    assert main(["plan", str(scene), "--model", str(folder)]) == 2
    assert "which is not in the folder" in capsys.readouterr().err


def test_numbers_a_card_can_hold_are_kept_as_python_s():
    """numpy numbers (a card built in Python) and whole floats (``"window": 512.0``, as some
    JSON writers put it) were refused, or failed later in numpy."""
    import numpy as np

    from geo_hires.models.card import Level

    level = Level(name="full", target_gsd_m=np.float32(0.5), downsample=np.int64(2),
                  detector="x.pt", window=512.0, halo=np.int64(64))  # fmt: skip
    assert (level.target_gsd_m, level.downsample, level.window, level.halo) == (0.5, 2, 512, 64)
    assert [type(v) for v in (level.target_gsd_m, level.downsample, level.window)] == [
        float, int, int]  # fmt: skip
    card = _yolo_card()
    assert load_card(bundle_dir("aircraft_yolo")).levels[0].window == card["levels"][0]["window"]
