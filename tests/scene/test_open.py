"""Scene opening, windowed/decimated reads and the normalisation rule."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from geo_hires.config import ReadConfig
from geo_hires.errors import (
    GeoHiresError,
    NoCRSWarning,
    SceneReadError,
    SceneTooLargeError,
    UnsupportedBandsError,
)
from geo_hires.scene import SceneReader, Stretch, open_scene


def test_real_scenes_describe(fixtures):
    trees = open_scene(fixtures / "OSBS_029.tif")
    assert (trees.width, trees.height, trees.count, trees.dtype) == (400, 400, 3, "uint8")
    assert trees.crs.to_epsg() == 32617 and trees.gsd_m == pytest.approx(0.1)
    assert trees.nodata == 255 and trees.has_mask and trees.rgb_bands == (1, 2, 3)
    nl = open_scene(fixtures / "test_tiled.tif")
    assert nl.crs.to_epsg() == 28992 and nl.gsd_m == pytest.approx(0.25) and not nl.has_mask
    pan = open_scene(fixtures / "sample_geotiff.tif")
    assert pan.dtype == "uint16" and pan.count == 1 and pan.rgb_bands == (1, 1, 1)


def test_uint16_single_band_is_stretched_to_three_equal_channels(fixtures):
    scene = open_scene(fixtures / "sample_geotiff.tif")
    with SceneReader(scene) as r:
        w = r.read(Window(100, 100, 256, 256))
        lo, hi = r.stretch().low[0], r.stretch().high[0]
        raw = r.src.read(1, window=Window(100, 100, 256, 256)).astype(float)
    assert w.image.dtype == np.float32 and w.image.shape == (3, 256, 256)
    assert np.array_equal(w.image[0], w.image[1]) and np.array_equal(w.image[1], w.image[2])
    assert w.image.min() >= 0.0 and w.image.max() <= 1.0
    expect = np.clip((raw - lo) / (hi - lo), 0, 1) * w.valid
    np.testing.assert_allclose(w.image[0], expect, atol=1e-5)
    # the 2-98 percentile stretch saturates a few percent of valid pixels at each end
    v = w.image[0][w.valid]
    assert 0.005 < (v == 0).mean() + (v == 1).mean() < 0.2


def test_float_and_int16_imagery_normalise(write_tif):
    rng = np.random.default_rng(0)
    for dtype in ("float32", "int16"):
        data = (rng.normal(0, 1000, (3, 64, 64))).astype(dtype)
        scene = open_scene(write_tif(f"{dtype}.tif", data))
        with SceneReader(scene) as r:
            img = r.read(Window(0, 0, 64, 64)).image
        assert img.min() == 0.0 and img.max() == 1.0 and 0.4 < img.mean() < 0.6


def test_band_choice_by_colour_interpretation(write_tif):
    data = np.stack([np.full((32, 32), v, np.uint8) for v in (10, 20, 30, 40)])
    ci = [ColorInterp.blue, ColorInterp.undefined, ColorInterp.red, ColorInterp.green]
    scene = open_scene(write_tif("bgr.tif", data, colorinterp=ci))
    assert scene.rgb_bands == (3, 4, 1)
    with SceneReader(scene) as r:
        img = r.read(Window(0, 0, 32, 32)).image
    np.testing.assert_allclose(img[:, 0, 0], np.array([30, 40, 10]) / 255, atol=1e-6)


def test_alpha_band_becomes_the_mask(write_tif):
    data = np.full((4, 32, 32), 200, np.uint8)
    data[3, :, :16] = 0
    ci = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    scene = open_scene(write_tif("rgba.tif", data, colorinterp=ci))
    assert scene.has_mask
    with SceneReader(scene) as r:
        w = r.read(Window(0, 0, 32, 32))
    assert not w.valid[:, :16].any() and w.valid[:, 16:].all()
    assert (w.image[:, :, :16] == 0).all()


def test_gray_alpha_is_supported_two_data_bands_are_not(write_tif):
    data = np.full((2, 16, 16), 100, np.uint8)
    scene = open_scene(write_tif("ga.tif", data, alpha="YES"))
    assert scene.colorinterp == ("gray", "alpha") and scene.rgb_bands == (1, 1, 1)
    with pytest.raises(UnsupportedBandsError, match="2 data bands"):
        open_scene(write_tif("two.tif", data))


def test_a_paletted_image_is_refused_with_the_command_that_expands_it(write_tif):
    path = write_tif("pal.tif", np.arange(256, dtype=np.uint8).reshape(1, 16, 16),
                     photometric="palette")  # fmt: skip
    with rasterio.open(path, "r+") as dst:
        dst.write_colormap(1, {i: (i, 255 - i, 0, 255) for i in range(256)})
    with pytest.raises(UnsupportedBandsError, match="gdal_translate -expand rgb"):
        open_scene(path)  # its indexes were read as grey levels


def test_nodata_mask_and_boundless_padding(write_tif):
    data = np.full((3, 50, 70), 90, np.uint8)
    data[:, :10, :] = 0
    scene = open_scene(write_tif("nd.tif", data, nodata=0))
    with SceneReader(scene) as r:
        w = r.read(Window(40, -5, 64, 64))
    assert w.image.shape == (3, 64, 64)
    assert not w.valid[:15].any()  # 5 rows above the scene + 10 nodata rows
    assert w.valid[15:55, :30].all() and not w.valid[55:].any() and not w.valid[:, 30:].any()
    assert (w.image[:, ~w.valid] == 0).all()
    assert np.allclose(w.image[:, w.valid], 90 / 255)


def test_decimated_read_uses_overviews(tmp_path, write_tif):
    data = np.random.default_rng(1).integers(0, 255, (3, 512, 512), np.uint8)
    path = write_tif("ov.tif", data, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4])
    scene = open_scene(path)
    assert scene.overviews == (2, 4)
    with SceneReader(scene) as r:
        w = r.read(Window(0, 0, 512, 512), out_size=(128, 128))
        ov = r.read_overview(128 * 128)
        ovr = r.src.read(1, out_shape=(128, 128))
    assert w.image.shape == (3, 128, 128) and ov.image.shape == (3, 128, 128)
    np.testing.assert_allclose(w.image[0], ovr / 255, atol=1e-6)


def test_read_budget_is_enforced(fixtures):
    scene = open_scene(fixtures / "OSBS_029.tif")
    with SceneReader(scene, config=ReadConfig(max_read_pixels=10_000)) as r:
        with pytest.raises(SceneTooLargeError, match="max_read_pixels"):
            r.read(Window(0, 0, 200, 200))
        assert (
            r.read_overview(10_000).image.shape[1] * r.read_overview(10_000).image.shape[2]
            <= 10_000
        )
        view = r.read_overview(1_000_000)  # e.g. the validity mask's: coarser, not an error
        assert view.valid.size <= 10_000 and view.valid.size > 9_000


def test_the_stretch_is_computed_within_the_read_budget(write_tif):
    data = np.random.default_rng(2).integers(0, 4000, (3, 600, 500), np.uint16)
    scene = open_scene(write_tif("u16.tif", data))

    def stretch(cfg: ReadConfig) -> Stretch:
        with SceneReader(scene, config=cfg) as r:
            return r.stretch()

    capped = stretch(ReadConfig(max_read_pixels=20_000))
    assert capped == stretch(ReadConfig(stats_pixels=20_000))  # the same 20,000-pixel read
    assert capped != stretch(ReadConfig())  # not the whole 300,000 pixels


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_scene_without_crs_warns(write_tif):
    path = write_tif(
        "nocrs.tif", np.zeros((3, 16, 16), np.uint8), crs=None, transform=Affine.identity()
    )
    with pytest.warns(NoCRSWarning):
        scene = open_scene(path)
    assert scene.crs_wkt is None and scene.gsd_m is None
    for crs in ("EPSG:4326", "EPSG:32631"):  # a CRS, but no geotransform to place pixels in it
        named = write_tif(f"{crs[5:]}.tif", np.zeros((3, 16, 16), np.uint8), crs=crs,
                          transform=Affine.identity())  # fmt: skip
        with pytest.warns(NoCRSWarning, match="has a CRS but no geotransform"):
            scene = open_scene(named)
        assert scene.crs_wkt is None and scene.gsd_m is None  # was NaN (4326), 1 m (UTM)


def test_geographic_crs_gsd_is_geodesic_metres(write_tif):
    t = Affine(1e-5, 0, 10.0, 0, -1e-5, 0.001)  # at the equator 1e-5 degree ~ 1.11 m
    scene = open_scene(
        write_tif("geo.tif", np.zeros((3, 16, 16), np.uint8), crs="EPSG:4326", transform=t)
    )
    assert scene.gsd_m == pytest.approx(1.1, rel=0.02)


def test_errors_share_one_root_and_builtins():
    assert issubclass(SceneTooLargeError, GeoHiresError) and issubclass(
        SceneTooLargeError, ValueError
    )
    from geo_hires.errors import SceneNotFoundError, SceneReadError

    assert issubclass(SceneReadError, OSError) and issubclass(SceneNotFoundError, FileNotFoundError)


def test_gsd_is_the_grounds_where_the_projection_stretches_and_the_grids_elsewhere(
    demo_crop, tmp_path
):
    """Web Mercator's metres are the ground's x 1/cos(latitude): a 0.5 m scene there is 0.5 m,
    not the 0.76 m (at 49°N) or 1.46 m (at 70°N) its grid says, which would skip its fine
    level; a UTM scene keeps its affine's exact value."""
    import math

    from pyproj import CRS, Transformer

    from geo_hires.scene.placement import metres

    utm = open_scene(demo_crop(0, 0, 256, 256))
    assert utm.gsd_m == 0.5  # exact, as before
    to_merc = Transformer.from_crs(utm.crs, 3857, always_xy=True)
    for lat in (0.0, 49.0, 70.0):
        x, y = Transformer.from_crs(4326, 3857, always_xy=True).transform(10.0, lat)
        step = 0.5 / math.cos(math.radians(lat))  # 0.5 m on the ground
        path = tmp_path / f"merc{lat:g}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3,
                           dtype="uint8", crs="EPSG:3857",
                           transform=Affine(step, 0, x, 0, -step, y)) as dst:  # fmt: skip
            dst.write(np.zeros((3, 64, 64), np.uint8))
        assert open_scene(path).gsd_m == pytest.approx(0.5, rel=0.005), lat  # ellipsoid: 0.3 %
    merc = CRS.from_epsg(3857)
    x, y = to_merc.transform(*utm.transform * (0, 0))
    side = metres(merc, [x, x], [y, y], [x + 100, x], [y, y + 100])  # an OBB's sides
    np.testing.assert_allclose(side, 100 * math.cos(math.radians(utm_lat(utm))), rtol=0.01)
    assert metres(CRS.from_epsg(32633), 0, 0, 3, 4) == pytest.approx(5.0)  # a grid's, kept


def utm_lat(scene) -> float:
    from pyproj import Transformer

    lon_lat = Transformer.from_crs(scene.crs, 4326, always_xy=True)
    return float(lon_lat.transform(*scene.transform * (0, 0))[1])


def _vrt_of(target, size: int) -> str:
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename '
        f'relativeToVRT="0">{target}</SourceFilename><SourceBand>{b}</SourceBand>'
        "</SimpleSource></VRTRasterBand>"
        for b in (1, 2, 3)
    )
    return f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">{bands}</VRTDataset>'


def test_a_confined_read_opens_the_file_alone_not_the_sidecars_beside_it(tmp_path):
    """A ``scene.tif.ovr`` (or ``.msk``) is opened by GDAL with any driver: a VRT one read any
    file it named into the overviews a service's quicklook shows (a security review found it).
    The CLI (no driver) keeps its sidecars."""
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 3, "dtype": "uint8"}
    secret, scene = tmp_path / "secret.tif", tmp_path / "drop" / "a.tif"
    scene.parent.mkdir()
    for path, value in ((secret, 222), (scene, 100)):
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.full((3, 64, 64), value, np.uint8))
    for suffix, size in ((".ovr", 32), (".msk", 64)):
        scene.with_name(scene.name + suffix).write_text(_vrt_of(secret, size))
    with pytest.warns(NoCRSWarning):
        assert open_scene(scene).overviews == (2,)  # GDAL's own rule, as it was
    confined = ReadConfig(driver="GTiff")
    with pytest.warns(NoCRSWarning):
        opened = open_scene(scene, config=confined)
    assert opened.overviews == () and not opened.has_mask
    with SceneReader(opened, config=confined) as reader:
        assert reader._src is not None and reader._src.files == [str(scene)]
        assert reader.read_overview(16).image.max() == pytest.approx(100 / 255)  # its own


def test_a_pipe_is_refused_not_waited_on(tmp_path):
    """GDAL's open of a named pipe waits for a writer for ever (a STAC asset could name one)."""
    import os

    pipe = tmp_path / "pipe.tif"
    os.mkfifo(pipe)
    with pytest.raises(SceneReadError, match=r"pipe\.tif is not a regular file \(a pipe"):
        open_scene(pipe)


def test_an_rpc_height_for_a_scene_without_rpcs_is_said_to_be_ignored_in_keywords(tmp_path):
    """From Python the keyword and its value as Python writes it (it was ``rpc_height='100'``)."""
    from rasterio.transform import from_origin

    from geo_hires.errors import OptionIgnoredWarning

    path = tmp_path / "s.tif"
    profile = {"driver": "GTiff", "width": 32, "height": 32, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32631", "transform": from_origin(0, 32, 1, 1)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.zeros((3, 32, 32), np.uint8))
    with pytest.warns(OptionIgnoredWarning, match=r"^rpc_height=100: \S+ is not placed by RPCs"):
        open_scene(path, config=ReadConfig(rpc_height_m=100.0))
