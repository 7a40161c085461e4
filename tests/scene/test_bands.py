"""Band mapping: --bands by index or name, the warning for unlabelled multi-band scenes, errors.

The real case: a crop of the bundled demo scene (real Pléiades pixels) rewritten as 4 bands in
blue, green, red, NIR order with no colour interpretation — how band stacks and PlanetScope-style
products arrive. Read as is, band 1 (blue) is taken for red; with ``--bands 3,2,1`` the model
sees exactly the pixels of the RGB file, so its detections are identical.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from geo_hires.cli import main
from geo_hires.config import ReadConfig
from geo_hires.errors import BandOrderWarning, ConfigError
from geo_hires.scene import open_scene

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "demo" / "airports.tif"


@pytest.fixture(scope="module")
def rgb_and_bgrn(tmp_path_factory) -> tuple[Path, Path]:
    """A 1536x1280 crop of the demo (RGB, tagged) and the same pixels as untagged BGRN."""
    folder = tmp_path_factory.mktemp("bands")
    with rasterio.open(DEMO) as src:
        win = Window(256, 512, 1536, 1280)
        rgb = src.read(window=win)
        profile = {
            "driver": "GTiff",
            "width": win.width,
            "height": win.height,
            "dtype": "uint8",
            "crs": src.crs,
            "transform": src.window_transform(win),
            "tiled": True,
            "compress": "deflate",
        }
    nir = (rgb.astype(np.uint16).sum(axis=0) // 3).astype(np.uint8)  # any fourth band
    rgb_path, bgrn_path = folder / "rgb.tif", folder / "bgrn.tif"
    with rasterio.open(rgb_path, "w", count=3, photometric="RGB", **profile) as dst:
        dst.write(rgb)
    with rasterio.open(bgrn_path, "w", count=4, photometric="MINISBLACK", **profile) as dst:
        dst.write(np.stack([rgb[2], rgb[1], rgb[0], nir]))
        dst.colorinterp = [ColorInterp.undefined] * 4
        dst.descriptions = ("B02", "B03", "B04", "B08")
    return rgb_path, bgrn_path


def _features(path: Path) -> list:
    return json.loads(path.read_text())["features"]


def test_bgrn_scene_warns_and_bands_restore_the_rgb_detections(rgb_and_bgrn, tmp_path, capsys):
    rgb, bgrn = rgb_and_bgrn
    said = r"bands 1,2,3 are used as red.*pass bands=\(3, 2, 1\)$"
    with pytest.warns(BandOrderWarning, match=said):
        assert open_scene(bgrn).rgb_bands == (1, 2, 3)
    common = ["--block", "512", "--score-threshold", "0.3"]
    assert main(["detect", str(rgb), "-o", str(tmp_path / "rgb.geojson"), *common]) == 0
    assert main(["detect", str(bgrn), "-o", str(tmp_path / "as_is.geojson"), *common]) == 0
    assert "--bands 3,2,1" in capsys.readouterr().err  # the warning, as one line
    for spec in ("3,2,1", "B04,B03,B02"):
        out = tmp_path / f"mapped_{spec}.geojson"
        assert main(["detect", str(bgrn), "-o", str(out), "--bands", spec, *common]) == 0
        assert "BandOrderWarning" not in capsys.readouterr().err
        got, want = _features(out), _features(tmp_path / "rgb.geojson")
        assert len(want) >= 10 and got == want  # the same pixels: the same detections
        assert json.loads(out.read_text())["geo_hires"]["bands"] == [3, 2, 1]
    assert _features(tmp_path / "as_is.geojson") != _features(tmp_path / "rgb.geojson")


def test_bands_by_colour_interpretation_name(rgb_and_bgrn):
    rgb, _ = rgb_and_bgrn
    from geo_hires.config import ReadConfig

    scene = open_scene(rgb, config=ReadConfig(bands=("blue", "GREEN", "red")))
    assert scene.rgb_bands == (3, 2, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a tagged RGB scene warns about nothing
        assert open_scene(rgb).rgb_bands == (1, 2, 3)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("3,2,5", "has no band 5; it has bands 1-4"),
        ("3,3,1", "fewer than 3 distinct bands"),
        ("red,green,blue", "no band named 'red' (names: B02, B03, B04, B08)"),
        ("3,2", "needs 3 bands"),
        ("0,1,2", "has no band 0"),
    ],
)
def test_bad_bands_are_one_line_errors_and_write_nothing(
    rgb_and_bgrn, tmp_path, capsys, spec, message
):
    _, bgrn = rgb_and_bgrn
    out = tmp_path / "x.geojson"
    assert main(["detect", str(bgrn), "-o", str(out), "--bands", spec]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("geo-hires: error: --bands") and message in err[-1], err
    assert not out.exists() and not Path(f"{out}.journal").exists()


def test_resume_refuses_a_journal_made_with_other_bands(rgb_and_bgrn, tmp_path):
    from geo_hires.config import ReadConfig
    from geo_hires.detect.journal import journal_for
    from geo_hires.detect.options import DetectConfig
    from geo_hires.models.bundle import load_bundle

    _, bgrn = rgb_and_bgrn
    model = load_bundle("aircraft_lsn")
    a = journal_for(
        tmp_path / "o.geojson",
        open_scene(bgrn, config=ReadConfig(bands=(3, 2, 1))),
        model,
        DetectConfig(),
    )
    b = journal_for(
        tmp_path / "o.geojson",
        open_scene(bgrn, config=ReadConfig(bands=(1, 2, 3))),
        model,
        DetectConfig(),
    )
    assert a.identity["bands"] == [3, 2, 1] and a.identity != b.identity
    with pytest.raises(ConfigError):
        ReadConfig(bands=(1, 2, 3, 4))


def test_model_cards_state_their_input_bands():
    from geo_hires.models.card import load_card

    assert load_card("aircraft_lsn").input_bands == ("red", "green", "blue")
    assert list(load_card("aircraft_lsn").as_json()["input_bands"]) == ["red", "green", "blue"]


def test_python_callers_are_told_the_keyword_and_the_cli_its_flag(rgb_and_bgrn, tmp_path, capsys):
    """One message, spelled for its reader: a library caller was told to pass ``--bands``. The
    CLI's spelling lasts for its command only (``main`` puts the keyword back, even after an
    error)."""
    _, bgrn = rgb_and_bgrn
    with pytest.raises(ConfigError, match=r"^bands: \S+ has no band 5; it has bands 1-4$"):
        open_scene(str(bgrn), config=ReadConfig(bands=(3, 2, 5)))
    with pytest.raises(ConfigError, match=r"^bands=\(3, 3, 1\) names fewer than 3 distinct"):
        open_scene(str(bgrn), config=ReadConfig(bands=(3, 3, 1)))
    assert main(["detect", str(bgrn), "-o", str(tmp_path / "x.geojson"), "--bands", "3,3,1"]) == 2
    assert "error: --bands 3,3,1 names fewer than 3" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"^bands=\(3, 3, 1\) names"):  # and back after it
        open_scene(str(bgrn), config=ReadConfig(bands=(3, 3, 1)))
