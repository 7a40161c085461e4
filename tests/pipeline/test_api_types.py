"""Values of the wrong kind from a Python caller (what a type checker catches, for an untyped
one): one ``ConfigError`` that says what the option or argument takes, not a TypeError of
``os.fspath`` or an AttributeError from deep inside, and never a batch stopped before its
first scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geo_hires.detect.options import DetectOptions
from geo_hires.errors import ConfigError
from geo_hires.models.bundle import load_bundle
from geo_hires.pipeline import detect_scene, run_batch, run_detect
from geo_hires.scene import open_scene


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"score_threshold": "0.3"}, r"score_threshold: a number \(float\), got '0.3'"),
        ({"block": "512"}, r"block: a number \(int\), got '512'"),
        ({"block": 512.0}, r"block: a whole number \(int\), got 512.0"),
        ({"block": None}, r"block: give a value \(None leaves it unset only for aoi, asset"),
        ({"model": None}, r"model: give a value"),
        ({"levels": [1]}, r"levels: a tuple such as \(\"coarse\",\), got \[1\]"),
        ({"bands": [3.0, 2, 1]}, r"bands: a tuple such as \(3, 2, 1\), got \[3.0, 2, 1\]"),
        ({"threads": True}, r"threads: a number \(int\), got True"),
        ({"bands": "3,2,1"}, r"bands: a tuple such as \(3, 2, 1\), got '3,2,1'"),
        ({"levels": "coarse"}, r"levels: a tuple such as \(\"coarse\",\)"),
        ({"aoi": 3}, r"aoi: a vector file's path or a GeoJSON mapping .* got a int"),
        ({"model": 3}, r"model: a name \(str\), got 3 \(a loaded Bundle goes to run_detect\("),
        ({"asset": ["visual"]}, r"asset: a name \(str\), got \['visual'\]$"),
    ],
)
def test_options_of_the_wrong_kind_say_what_they_take(kwargs, says):
    with pytest.raises(ConfigError, match=says):
        DetectOptions(**kwargs)


def test_a_geodataframe_or_shapely_aoi_is_told_how_to_pass_it():
    import geopandas as gpd
    import shapely

    square = shapely.box(0, 0, 1, 1)
    for aoi in (square, gpd.GeoDataFrame(geometry=[square], crs=4326)):
        with pytest.raises(ConfigError, match=r"json.loads\(frame.to_crs\(4326\).to_json\(\)\)"):
            DetectOptions(aoi=aoi)


def test_options_keep_paths_as_text_and_numpy_numbers_as_pythons():
    """A Path AOI reached the batch's status file as it came, and ``json`` refused it."""
    given = DetectOptions(model=Path("m"), aoi=Path("a.geojson"), block=np.int64(512),
                          score_threshold=np.float64(0.5),
                          bands=[np.int64(3), np.int64(2), 1])  # fmt: skip
    plain = DetectOptions(model="m", aoi="a.geojson", block=512, score_threshold=0.5,
                          bands=(3, 2, 1))  # fmt: skip
    assert given == plain and hash(given) == hash(plain)
    assert type(given.block) is int and type(given.score_threshold) is float
    assert [type(b) for b in given.bands or ()] == [int, int, int]  # a status file takes them
    square = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}
    assert DetectOptions(aoi=square).aoi is square  # a GeoJSON mapping, as the service sends


def test_a_batch_takes_an_aoi_path(tmp_path, demo_crop):
    """``run_batch(..., DetectOptions(aoi=Path(...)))`` stopped before its first scene."""
    import geopandas as gpd
    import rasterio
    import shapely

    scene = demo_crop(1024, 512, 512, 256)
    with rasterio.open(scene) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    aoi = tmp_path / "half.geojson"
    half = shapely.box(left, bottom, (left + right) / 2, top)
    gpd.GeoDataFrame(geometry=[half], crs=crs).to_crs(4326).to_file(aoi)
    (tmp_path / "list.txt").write_text(f"{scene}\n")
    opts = DetectOptions(model="aircraft_lsn", aoi=aoi)
    report = run_batch(tmp_path / "list.txt", tmp_path / "out", opts)
    assert (report.done, report.failed) == (1, 0), report


def test_detect_scene_and_run_detect_say_what_they_take(demo_crop, tmp_path):
    path = demo_crop(1024, 512, 256, 256)
    scene, bundle = open_scene(path), load_bundle("aircraft_lsn")
    with pytest.raises(ConfigError, match="detect_scene takes a Scene, not a str: open_scene"):
        detect_scene(str(path), bundle)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="detect_scene takes a Bundle, not a str: load_bundle"):
        detect_scene(scene, "aircraft_lsn")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="run_detect takes DetectOptions, not a dict"):
        run_detect(path, tmp_path / "o.geojson", {"model": "aircraft_lsn"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="run_detect takes DetectOptions, not a dict"):
        run_detect(path, tmp_path / "o.geojson", {})  # type: ignore[arg-type]  # not the defaults
    for wrong, says in ((scene, r"not a Scene \(an opened Scene goes to detect_scene\)"),
                        (bytes(path), "not a bytes"), (None, "not a NoneType")):  # fmt: skip
        with pytest.raises(ConfigError, match=f"run_detect takes a scene's path or URL, {says}"):
            run_detect(wrong, tmp_path / "o.geojson")  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())  # refused before any file was written


def test_every_public_name_resolves_and_says_what_it_is_for():
    import geo_hires

    for name in geo_hires.__all__:
        value = getattr(geo_hires, name)
        assert name == "__version__" or (value.__doc__ or "").strip(), name


def test_a_result_s_frame_is_the_geopackage_it_writes(demo_crop, tmp_path):
    """A library user had no public way to a GeoDataFrame but writing a file and reading it."""
    import geopandas as gpd

    path = demo_crop(4096, 1024, 512, 512)  # eight aircraft
    result = run_detect(path, tmp_path / "o.gpkg", DetectOptions(model="aircraft_lsn"))
    frame = result.frame(open_scene(path), model_name="aircraft_lsn")
    written = gpd.read_file(tmp_path / "o.gpkg", layer="detections")
    assert len(frame) == len(written) > 0 and frame.crs == written.crs
    columns = ["class", "score", "level", "model"]
    assert (
        frame[columns].astype(str).values.tolist() == written[columns].astype(str).values.tolist()
    )
    assert frame.geometry.geom_equals_exact(written.geometry, tolerance=1e-6).all()


def test_help_of_the_options_shows_each_field():
    """help(DetectOptions) said nothing of its fields: their help lives in their metadata."""
    doc = DetectOptions.__doc__ or ""
    assert "Attributes:" in doc and "        aoi: area of interest" in doc
    assert doc.count("\n        ") >= len(DetectOptions.__dataclass_fields__)


def test_a_local_executor_takes_a_device_by_name_and_refuses_one_not_there(demo_crop):
    """``LocalExecutor(device="cpu")`` failed mid-run (``'str' object has no attribute
    'type'``), and a CUDA device on a machine without one as torch's driver error: the
    command line's check was the command line's alone."""
    import torch

    from geo_hires.detect.executors import LocalExecutor

    by_name = LocalExecutor(device="cpu")
    assert by_name.device == torch.device("cpu")
    scene = open_scene(demo_crop(4096, 1024, 256, 256))
    assert detect_scene(scene, load_bundle("aircraft_lsn"), executor=by_name).levels
    with pytest.raises(ConfigError, match=r"device 'gpu0': .*; give cpu or cuda"):
        LocalExecutor(device="gpu0")
    if not torch.cuda.is_available():
        for cuda in ("cuda", torch.device("cuda:0")):
            said = r"^device='cuda' asked for, but no CUDA device is available; use device='cpu'$"
            with pytest.raises(ConfigError, match=said):
                LocalExecutor(device=cuda)


def test_an_option_is_spelled_for_the_reader_in_every_thread_of_the_command():
    """Keywords by default (Python, the service); flags inside the CLI's block, in its worker
    threads too (a context variable would not reach them), and keywords again after it."""
    import threading

    from geo_hires.errors import option, option_spelling

    said = ["block", "block=15", "zoom='rl'", "num_gpus", "bands=(3, 2, 1)", "scene=",
            "score_threshold=0.5"]  # fmt: skip
    calls = [("--block",), ("--block", 15), ("--zoom", "rl"), ("--gpus-per-actor",),
             ("--bands", "3,2,1"), ("--scene SCENE",), ("--score-threshold", 0.5)]  # fmt: skip
    apis = [None, None, None, "num_gpus", "bands=(3, 2, 1)", "scene=", None]
    spell = [lambda c=c, a=a: option(*c, api=a) for c, a in zip(calls, apis, strict=True)]
    assert [s() for s in spell] == said
    in_thread: list[str] = []
    with option_spelling(cli=True):
        worker = threading.Thread(target=lambda: in_thread.extend(s() for s in spell))
        worker.start()
        worker.join()
    flags = ["--block", "--block 15", "--zoom rl", "--gpus-per-actor", "--bands 3,2,1"]
    assert in_thread == [*flags, "--scene SCENE", "--score-threshold 0.5"]
    assert [s() for s in spell] == said
