"""Scenes placed by GCPs or RPCs instead of a geotransform.

Made from a georeferenced synthetic scene (affine ``T``): the same pixels with (1) GCPs taken
from ``T`` at the corners and inside — the affine fit is exact and used; (2) GCPs from ``T``
plus a quadratic warp of up to ~8 m — the fit's residuals exceed half a pixel, so GDAL's GCP
polynomial places every vertex, and the exported polygons must match the true warp; (3) RPCs
written by hand (a linear lon/lat model with a height term), checked against their formula.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS as RioCRS
from rasterio.rpc import RPC

from geo_hires.cli import main
from geo_hires.scene import Density, SynthSpec, open_scene, write_synthetic

SPEC = SynthSpec(width=1600, height=1200, seed=77, density=Density.DENSE)
T = SPEC.transform
WARP_K = 8.0 / 800**2  # metres: 8 m at the edges, 0 at the centre


def _warp(col, row):
    x, y = T @ (col, row) if np.isscalar(col) else (T.a * col + T.c, T.e * row + T.f)
    dc, dr = np.asarray(col) - 800, np.asarray(row) - 600
    return x + WARP_K * dc**2, y + WARP_K * dc * dr


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("placement") / "base.tif"
    write_synthetic(path, SPEC)
    return path


def _copy(base: Path, out: Path, **tags) -> Path:
    with rasterio.open(base) as src:
        data = src.read()
        profile = {k: src.profile[k] for k in ("driver", "width", "height", "count", "dtype")}
    with rasterio.open(out, "w", **profile, tiled=True, compress="deflate") as dst:
        dst.write(data)
        if "gcps" in tags:
            dst.gcps = (tags["gcps"], RioCRS.from_epsg(32633))
        if "rpcs" in tags:
            dst.rpcs = tags["rpcs"]
    return out


def _gcps(mapping) -> list[GroundControlPoint]:
    pts = [(c, r) for c in np.linspace(0, 1600, 5) for r in np.linspace(0, 1200, 5)]
    out = []
    for c, r in pts:
        x, y = mapping(float(c), float(r))
        out.append(GroundControlPoint(row=float(r), col=float(c), x=float(x), y=float(y)))
    return out


def _rings_utm(path: Path) -> np.ndarray:
    to = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True)
    rings = [
        np.array(f["geometry"]["coordinates"][0][:4])
        for f in json.loads(path.read_text())["features"]
    ]
    arr = np.array(rings)
    x, y = to.transform(arr[..., 0], arr[..., 1])
    return np.stack([x, y], -1)


def test_gcps_that_fit_an_affine_place_the_scene_like_its_geotransform(base, tmp_path):
    copy = _copy(base, tmp_path / "gcp_affine.tif", gcps=_gcps(lambda c, r: T @ (c, r)))
    a, b = tmp_path / "a.geojson", tmp_path / "b.geojson"
    assert main(["detect", str(base), "-o", str(a), "--block", "512"]) == 0
    assert main(["detect", str(copy), "-o", str(b), "--block", "512"]) == 0
    ra, rb = _rings_utm(a), _rings_utm(b)
    assert len(ra) >= 10 and ra.shape == rb.shape
    assert np.abs(ra - rb).max() < 0.01  # metres (GeoJSON keeps 8 decimals of a degree)
    geo = json.loads(b.read_text())["geo_hires"]["georeferencing"]
    assert geo["method"] == "gcp-affine" and geo["gcps"] == 25 and geo["affine_max_m"] < 1e-3


def test_warped_gcps_go_through_the_gcp_polynomial_and_match_the_true_warp(base, tmp_path):
    copy = _copy(base, tmp_path / "gcp_warp.tif", gcps=_gcps(_warp))
    scene = open_scene(copy)
    assert scene.placement is not None and scene.placement.method == "gcp-polynomial"
    assert abs(scene.gsd_m - 0.5) < 0.01
    out, ref = tmp_path / "w.geojson", tmp_path / "ref.geojson"
    assert main(["detect", str(copy), "-o", str(out), "--block", "512"]) == 0
    assert main(["detect", str(base), "-o", str(ref), "--block", "512"]) == 0
    got = _rings_utm(out)
    # the truth: the reference run's pixel corners (same pixels, same detections) through the warp
    px = _rings_utm(ref)
    cols, rows = (px[..., 0] - T.c) / T.a, (px[..., 1] - T.f) / T.e
    tx, ty = _warp(cols, rows)
    err = np.hypot(got[..., 0] - tx, got[..., 1] - ty)
    assert len(got) >= 10 and err.max() < 0.02, err.max()  # metres
    geo = json.loads(out.read_text())["geo_hires"]["georeferencing"]
    assert geo["method"] == "gcp-polynomial" and geo["affine_max_m"] > 0.25
    print(
        f"\nGCP warp: affine fit RMSE {geo['affine_rmse_m']} m, max {geo['affine_max_m']} m; "
        f"polygon vertices vs the true warp: max {err.max():.4f} m, mean {err.mean():.4f} m"
    )


def _rpc(width: int, height: int) -> RPC:
    coeff = lambda **k: [k.get(str(i), 0.0) for i in range(20)]  # noqa: E731
    return RPC(
        height_off=0.0, height_scale=100.0,
        lat_off=45.0, lat_scale=4.5e-6 * height / 2,
        long_off=15.0, long_scale=0.5 / (111_320 * np.cos(np.radians(45))) * width / 2,
        line_off=height / 2, line_scale=height / 2,
        samp_off=width / 2, samp_scale=width / 2,
        line_num_coeff=coeff(**{"2": -1.0}), line_den_coeff=coeff(**{"0": 1.0}),
        samp_num_coeff=coeff(**{"1": 1.0, "3": 0.05}), samp_den_coeff=coeff(**{"0": 1.0}),
    )  # fmt: skip


def _rpc_to_pixel(rpc: RPC, lon, lat, h):
    """The RPC formula → pixel-corner coordinates (RPC samples/lines name pixel centres: +0.5,
    GDAL's convention)."""
    X, Y, H = (lon - rpc.long_off) / rpc.long_scale, (lat - rpc.lat_off) / rpc.lat_scale, h / 100
    sample = (X + 0.05 * H) * rpc.samp_scale + rpc.samp_off
    line = -Y * rpc.line_scale + rpc.line_off
    return sample + 0.5, line + 0.5


def _sorted_corners(rings: np.ndarray) -> np.ndarray:
    return np.array([sorted(map(tuple, np.round(r, 3))) for r in rings])


@pytest.mark.parametrize("height", [0.0, 100.0])
def test_rpcs_place_the_scene_by_their_formula_at_the_given_height(base, tmp_path, height):
    rpc = _rpc(SPEC.width, SPEC.height)
    copy = _copy(base, tmp_path / "rpc.tif", rpcs=rpc)
    plain = _copy(base, tmp_path / "plain.tif")  # no placement at all: pixel space
    out, px = tmp_path / "r.geojson", tmp_path / "p.geojson"
    assert (
        main(["detect", str(copy), "-o", str(out), "--rpc-height", str(height), "--block", "512"])
        == 0
    )
    assert main(["detect", str(plain), "-o", str(px), "--block", "512"]) == 0
    doc = json.loads(out.read_text())
    rings = np.array([f["geometry"]["coordinates"][0][:4] for f in doc["features"]])
    cols, rows = _rpc_to_pixel(rpc, rings[..., 0], rings[..., 1], height)
    want = np.array(
        [f["geometry"]["coordinates"][0][:4] for f in json.loads(px.read_text())["features"]]
    )
    assert len(rings) >= 10 and rings.shape == want.shape
    got = _sorted_corners(np.stack([cols, rows], -1))  # ring orientation differs by frame
    assert np.abs(got - _sorted_corners(want)).max() < 0.02
    assert doc["geo_hires"]["georeferencing"] == {"method": "rpc", "rpc_height_m": height}


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([(0, 0), (1600, 0)], "2 ground control points; at least 3"),
        ([(0, 0), (800, 600), (1600, 1200)], "lie on one line"),
    ],
)
def test_too_few_or_collinear_gcps_are_one_line_errors(base, tmp_path, capsys, points, message):
    gcps = [GroundControlPoint(row=r, col=c, x=T.c + c, y=T.f - r) for c, r in points]
    copy = _copy(base, tmp_path / "bad.tif", gcps=gcps)
    out = tmp_path / "x.geojson"
    assert main(["detect", str(copy), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("geo-hires: error:") and message in err[-1], err
    assert not out.exists()


def test_an_aoi_and_the_coverage_follow_the_gcp_polynomial(base, tmp_path):
    import shapely

    from geo_hires.aoi import load_aoi
    from geo_hires.detect.options import DetectConfig
    from geo_hires.export import coverage_frame
    from geo_hires.models.bundle import load_bundle
    from geo_hires.pipeline import detect_scene

    scene = open_scene(_copy(base, tmp_path / "gcp_warp.tif", gcps=_gcps(_warp)))
    assert not scene.exact_affine
    # an AOI drawn in map coordinates along the *warped* image of the pixel box 200..600 x 300..700
    cols = np.concatenate(
        [np.linspace(200, 600, 41), np.full(41, 600), np.linspace(600, 200, 41), np.full(41, 200)]
    )
    rows = np.concatenate(
        [np.full(41, 300), np.linspace(300, 700, 41), np.full(41, 700), np.linspace(700, 300, 41)]
    )
    xs, ys = _warp(cols, rows)
    import geopandas as gpd

    path = tmp_path / "aoi.gpkg"
    ring = shapely.Polygon(np.column_stack([xs, ys]))
    gpd.GeoDataFrame(geometry=[ring], crs="EPSG:32633").to_file(path)
    aoi = load_aoi(path, scene)
    want = shapely.box(200, 300, 600, 700)
    assert aoi.pixels.symmetric_difference(want).area < 0.01 * want.area  # back on the pixel box
    model = load_bundle("aircraft_lsn")
    result = detect_scene(scene, model, config=DetectConfig(core=256), aoi=aoi)
    cover = coverage_frame(result.levels, scene, aoi=aoi.pixels)
    footprint = cover.geometry.iloc[0]
    assert footprint.symmetric_difference(ring).area < 0.01 * ring.area  # in map space


def test_metres_are_geodesic_in_degrees_and_converted_from_the_crs_unit():
    from pyproj import CRS

    from geo_hires.scene.placement import apply_affine, metres

    assert metres(CRS.from_epsg(4326), 0, 0, 1, 0) == pytest.approx(111_319.49, abs=0.01)
    assert metres(CRS.from_epsg(32633), 0, 0, 3, 4) == pytest.approx(5.0)
    feet = metres(CRS.from_epsg(2229), [0, 10], [0, 0], [3, 10], [4, 1])  # US survey feet
    np.testing.assert_allclose(feet, [5 * 0.3048006096, 0.3048006096])
    t = T @ Affine.rotation(30)
    xy = apply_affine(t, np.array([[0.0, 10.0]]), np.array([[0.0, 20.0]]))
    assert xy.shape == (1, 2, 2)
    np.testing.assert_allclose(xy[0, 1], t @ (10.0, 20.0))


def _square_gcps(offset_m: float, size: float = 2.0) -> list[GroundControlPoint]:
    """Four corners of a 100 px square at ``size`` m a pixel, one of them ``offset_m`` off in x.

    An affine fits four points but for one pattern (+, -, -, +): the offset splits into a
    residual of offset/4 at every corner (RMSE = max = offset / 4)."""
    out = []
    for i, (c, r) in enumerate([(0, 0), (100, 0), (0, 100), (100, 100)]):
        x, y = 500_000 + size * c + (offset_m if i == 3 else 0.0), 5_000_000 - size * r
        out.append(GroundControlPoint(row=float(r), col=float(c), x=x, y=y))
    return out


def test_the_gcp_affine_is_used_up_to_the_residual_limit_in_pixels():
    from pyproj import CRS

    from geo_hires.errors import SceneReadError
    from geo_hires.scene.placement import from_gcps

    utm = CRS.from_epsg(32633)
    affine, p = from_gcps(_square_gcps(4.0), utm, "x.tif", max_residual_px=0.5)
    assert p.affine_rmse_m == pytest.approx(1.0) and p.affine_max_m == pytest.approx(1.0)
    # the fit's pixel is 2.02 m a column: 1 m is within 0.5 px, not within 0.49 px
    assert p.method == "gcp-affine" and p.is_affine
    assert affine.a == pytest.approx(2.02) and len(p.gcps) == 4
    assert p.gcps[1] == (0, 100, 500200, 5e6)
    _, p = from_gcps(_square_gcps(4.0), utm, "x.tif", max_residual_px=0.49)
    assert p.method == "gcp-polynomial" and not p.is_affine
    _, p = from_gcps(_square_gcps(8.0), utm, "x.tif", max_residual_px=0.5)
    assert (p.affine_rmse_m, p.affine_max_m) == pytest.approx((2.0, 2.0))  # 8 m / 4 each
    _, p = from_gcps(_square_gcps(4.0, size=4.0), utm, "x.tif", max_residual_px=0.25)
    assert p.method == "gcp-affine"  # the limit scales with the pixel size (4.02 m here)
    assert p.provenance() == {"method": "gcp-affine", "gcps": 4, "affine_rmse_m": 1.0,
                              "affine_max_m": 1.0}  # fmt: skip
    with pytest.raises(SceneReadError, match=r"x\.tif: 2 ground control points; at least 3"):
        from_gcps(_square_gcps(0.0)[:2], utm, "x.tif", 0.5)
    three = _square_gcps(0.0)[:3]
    assert from_gcps(three, utm, "x.tif", 0.5)[1].method == "gcp-affine"  # 3 is enough
    line = [GroundControlPoint(row=float(i), col=2.0 * i, x=i, y=i) for i in range(4)]
    with pytest.raises(SceneReadError, match="lie on one line"):
        from_gcps(line, utm, "x.tif", 0.5)


def test_placement_provenance_and_empty_transforms():
    from geo_hires.scene.placement import Placement, from_rpcs

    rpc = from_rpcs(_rpc(100, 100), 12)
    assert rpc.provenance() == {"method": "rpc", "rpc_height_m": 12.0} and not rpc.is_affine
    assert rpc.rpcs is not None and rpc.rpcs["line_off"] == 50
    p = Placement(method="gcp-polynomial", gcps=((0, 0, 1, 1),) * 3, affine_rmse_m=0.123456,
                  affine_max_m=None)  # fmt: skip
    assert p.provenance() == {"method": "gcp-polynomial", "gcps": 3, "affine_rmse_m": 0.1235,
                              "affine_max_m": None}  # fmt: skip
    for f in (rpc.to_map, rpc.to_pixel):
        a, b = f(np.zeros((0, 4)), np.zeros((0, 4)))
        assert a.shape == b.shape == (0, 4)


def test_placements_map_points_both_ways_in_any_shape_and_rpcs_follow_the_height():
    """``to_map`` takes pixel corners (a GCP's own pixel lands on its map point), ``to_pixel``
    gives fractional pixels back, for one point as for arrays; an RPC placement reads its
    height."""

    from geo_hires.scene.placement import Placement, from_rpcs

    exact = tuple((g.row, g.col, g.x, g.y) for g in _square_gcps(0.0))  # an affine 2 m a pixel
    poly = Placement(method="gcp-polynomial", gcps=exact)
    xs, ys = poly.to_map([100.0], [100.0])
    assert (xs[0], ys[0]) == pytest.approx((500_200.0, 4_999_800.0), abs=1e-6)  # the GCP itself
    cols = np.array([[0.5, 10.25], [77.75, 3.0]])
    rows = np.array([[0.5, 90.5], [20.125, 61.0]])
    for p in (poly, from_rpcs(_rpc(200, 100), 0.0)):
        mx, my = p.to_map(cols, rows)
        assert mx.shape == my.shape == (2, 2) and not np.allclose(mx, cols)
        back_c, back_r = p.to_pixel(mx, my)
        np.testing.assert_allclose(back_c, cols, atol=1e-3)  # fractional, not floored
        np.testing.assert_allclose(back_r, rows, atol=1e-3)
        one_c, one_r = p.to_pixel(mx[1, 0], my[1, 0])  # one point, not left as map coordinates
        assert (float(one_c), float(one_r)) == pytest.approx((77.75, 20.125), abs=1e-3)
    low, high = from_rpcs(_rpc(200, 100), 0.0), from_rpcs(_rpc(200, 100), 500.0)
    assert low.to_map([10.0], [10.0])[0][0] != pytest.approx(high.to_map([10.0], [10.0])[0][0])


def test_gcps_on_a_line_are_refused_however_large_the_coordinates():
    from pyproj import CRS

    from geo_hires.errors import SceneReadError
    from geo_hires.scene.placement import from_gcps

    utm = CRS.from_epsg(32633)
    msg = (r"x\.tif: its 3 ground control points lie on one line; they cannot place the scene "
           r"\(add GCPs off that line\)")  # fmt: skip
    # far from the origin and a ten-thousandth of a pixel off the line: still one line
    off = [0.0, 1e-4, 0.0]
    near = [GroundControlPoint(row=1000.0 + i * 4000, col=2000.0 + i * 4000 + off[i],
                               x=500_000.0 + 2 * i, y=5e6 - 3 * i) for i in range(3)]  # fmt: skip
    with pytest.raises(SceneReadError, match=msg):
        from_gcps(near, utm, "x.tif", 0.5)
    # not on one line in pixels, whatever their map coordinates do
    bent = [GroundControlPoint(row=r, col=c, x=500_000.0 + r, y=5e6 - c)
            for c, r in [(0.0, 0.0), (100.0, 0.0), (0.0, 100.0)]]  # fmt: skip
    assert from_gcps(bent, utm, "x.tif", 0.5)[1].gcps[2] == (100.0, 0.0, 500_100.0, 5e6)
    with pytest.raises(SceneReadError, match=r"2 ground control points; at least 3 \(not on one "
                       r"line\) are needed to place the scene"):  # fmt: skip
        from_gcps(bent[:2], utm, "x.tif", 0.5)
