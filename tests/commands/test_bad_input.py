"""Bad input: one clear line on stderr, exit status 2, never a traceback."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geo_hires.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_error_line(err: str, needle: str) -> None:
    lines = [ln for ln in err.splitlines() if not ln.startswith("geo-hires: warning")]
    assert len(lines) == 1 and lines[0].startswith("geo-hires: error: "), err
    assert needle in lines[0], err
    assert "Traceback" not in err


def _tiled(path: Path, size: int = 512) -> Path:
    data = np.random.default_rng(0).integers(0, 255, (3, size, size), np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=3,
        dtype="uint8",
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
        crs="EPSG:32633",
        transform=rasterio.Affine(1, 0, 1000, 0, -1, 1000),
    ) as dst:
        dst.write(data)
    return path


def test_missing_file(capsys):
    rc, _, err = _run(capsys, "plan", "/no/such/scene.tif")
    assert rc == 2
    _one_error_line(err, "scene not found")


def test_not_a_raster(capsys, tmp_path):
    (tmp_path / "notes.tif").write_text("hello, I am text\n")
    rc, _, err = _run(capsys, "info", str(tmp_path / "notes.tif"))
    assert rc == 2
    _one_error_line(err, "cannot open")


def test_truncated_header(capsys, tmp_path):
    path = _tiled(tmp_path / "t.tif")
    path.write_bytes(path.read_bytes()[:40])
    rc, _, err = _run(capsys, "info", str(path))
    assert rc == 2
    _one_error_line(err, "cannot open")


def test_truncated_data(capsys, tmp_path):
    path = _tiled(tmp_path / "t.tif")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    rc, _, err = _run(
        capsys, "convert", "/dev/null.csv", "--scene", str(path), "-o", str(tmp_path / "o.json")
    )
    assert rc == 2  # the label file is missing too; scene checks come first
    out = tmp_path / "l.csv"
    out.write_text("xmin,ymin,xmax,ymax,label\n1,1,5,5,a\n")
    rc, _, err = _convert_with_quicklook(capsys, out, path, tmp_path)
    assert rc == 2
    _one_error_line(err, "truncated or corrupt")


def _convert_with_quicklook(capsys, labels: Path, scene: Path, tmp_path: Path):
    """``convert`` with a quicklook, which reads every pixel of the scene."""
    return _run(
        capsys,
        "convert",
        str(labels),
        "--scene",
        str(scene),
        "-o",
        str(tmp_path / "o.json"),
        "--quicklook",
        str(tmp_path / "q.png"),
    )


def test_corrupt_tiles(capsys, tmp_path):
    path = _tiled(tmp_path / "c.tif")
    raw = bytearray(path.read_bytes())
    raw[2000:60000] = bytes(np.random.default_rng(1).integers(0, 255, 58000, np.uint8))
    path.write_bytes(bytes(raw))
    out = tmp_path / "l.csv"
    out.write_text("xmin,ymin,xmax,ymax,label\n")
    rc, _, err = _convert_with_quicklook(capsys, out, path, tmp_path)
    assert rc == 2
    _one_error_line(err, str(path))


def _set_tiff_tag(path: Path, tag: int, value: int) -> None:
    raw = bytearray(path.read_bytes())
    assert raw[:2] == b"II"
    (ifd,) = struct.unpack_from("<I", raw, 4)
    (n,) = struct.unpack_from("<H", raw, ifd)
    for i in range(n):
        off = ifd + 2 + 12 * i
        t, typ = struct.unpack_from("<HH", raw, off)
        if t == tag:
            fmt = "<H" if typ == 3 else "<I"
            struct.pack_into(fmt, raw, off + 8, value)
    path.write_bytes(bytes(raw))


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_zero_size(capsys, tmp_path):
    path = tmp_path / "z.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as dst:
        dst.write(np.ones((1, 8, 8), np.uint8))
    _set_tiff_tag(path, 256, 0)  # ImageWidth = 0
    rc, _, err = _run(capsys, "info", str(path))
    assert rc == 2
    _one_error_line(err, str(path))


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_declared_size_beyond_budget(capsys, tmp_path):
    path = tmp_path / "huge.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=300_000,
        height=300_000,
        count=3,
        dtype="uint8",
        tiled=True,
        blockxsize=2048,
        blockysize=2048,
        sparse_ok=True,
        BIGTIFF="YES",
    ):
        pass
    assert path.stat().st_size < 10_000_000
    rc, _, err = _run(capsys, "plan", str(path))
    assert rc == 2
    _one_error_line(err, "over the budget")
    rc, _, err = _run(capsys, "info", str(_tiled(tmp_path / "s.tif")), "--max-pixels", "1000")
    assert rc == 2
    _one_error_line(err, "--max-pixels")


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_unsupported_band_layout(capsys, tmp_path):
    path = tmp_path / "two.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=2, dtype="uint8") as dst:
        dst.write(np.ones((2, 8, 8), np.uint8))
    rc, _, err = _run(capsys, "info", str(path))
    assert rc == 2
    _one_error_line(err, "2 data bands")


def test_block_off_the_network_stride(capsys, fixtures):
    rc, _, err = _run(capsys, "plan", str(fixtures / "OSBS_029.tif"), "--block", "250")
    assert rc == 2
    _one_error_line(
        err, "multiples of the network stride 4: give --block a multiple of 4 (e.g. 248)"
    )


def test_unknown_level_name(capsys, fixtures):
    rc, _, err = _run(capsys, "plan", str(fixtures / "OSBS_029.tif"), "--levels", "full,huge")
    assert rc == 2
    _one_error_line(err, "has no level 'huge'; its levels: ['full', 'coarse']")


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--model-gsd", "0.3", "--window", "320"],
         "--model-gsd, --window: for a bare .pt model only; ignored"),
        (["--actors", "4", "--address", "auto"],
         "--address, --actors: for --executor ray only; ignored"),
        (["--zoom", "none", "--budget", "0.5"],
         "--budget 0.5: --zoom none zooms no window, so none is capped"),
        (["--model", "aircraft_yolo", "--precision", "bf16"],
         "--precision bf16: aircraft_yolo has no scanning network; it runs in fp32"),
        (["--rpc-height", "500"], "--rpc-height 500: "),
    ],
)  # fmt: skip
def test_flags_a_run_leaves_unused_are_said(capsys, fixtures, extra, said):
    argv = ["plan", str(fixtures / "OSBS_029.tif"), "--model", "aircraft_lsn", *extra]
    rc, _, err = _run(capsys, *argv)
    assert rc == 0 and f"geo-hires: warning: {said}" in err, err
    assert err.count("geo-hires: warning:") == 1, err  # said once, and nothing else is


def test_flags_a_run_uses_are_not_said_to_be_unused(capsys, fixtures, recwarn):
    from geo_hires.commands.args import _warn_moot
    from geo_hires.errors import OptionIgnoredWarning
    from geo_hires.models.card import bundle_dir

    pt = str(bundle_dir("aircraft_yolo") / "yolo.pt")
    scene = str(fixtures / "OSBS_029.tif")
    for argv in (["--model", pt, "--model-gsd", "0.5", "--window", "512"],
                 ["--model", "aircraft_lsn", "--executor", "ray", "--actors", "4"]):  # fmt: skip
        rc, _, err = _run(capsys, "plan", scene, *argv)
        assert rc == 0 and "warning" not in err, (argv, err)
    import argparse

    with pytest.warns(OptionIgnoredWarning, match="--actors: for --executor ray only"):
        _warn_moot(argparse.Namespace(model="m", executor="local", actors=3, model_gsd=None,
                                      window=640, address=None, gpus_per_actor=None,
                                      cpus_per_actor=1.0, placement_timeout=600.0))  # fmt: skip


def test_all_nodata_scene_plans_nothing_and_exports_empty(capsys, tmp_path, write_tif):
    path = write_tif("nd.tif", np.zeros((3, 600, 600), np.uint8), nodata=0)
    rc, out, _ = _run(capsys, "plan", str(path), "--levels", "full", "--block", "256")
    assert rc == 0 and "total: 0 blocks to scan, 0 units" in out and "skipped(nodata) 9" in out
    labels = tmp_path / "none.csv"
    labels.write_text("xmin,ymin,xmax,ymax,label\n")
    rc, _, _ = _run(
        capsys, "convert", str(labels), "--scene", str(path), "-o", str(tmp_path / "e.geojson")
    )
    doc = json.loads((tmp_path / "e.geojson").read_text())
    assert rc == 0 and doc["type"] == "FeatureCollection" and doc["features"] == []


def test_console_script_prints_no_traceback(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "geo_hires.cli", "info", str(tmp_path / "missing.tif")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().startswith("geo-hires: error: scene not found")


@pytest.mark.parametrize("bad", ["../x.tif", ""])
def test_label_file_missing(capsys, fixtures, bad):
    rc, _, err = _run(
        capsys,
        "convert",
        bad or "nolabels.csv",
        "--scene",
        str(fixtures / "OSBS_029.tif"),
        "-o",
        "/tmp/x.geojson",
    )
    assert rc == 2
    _one_error_line(err, "label file not found")


def test_a_driver_restriction_refuses_other_formats(tmp_path, fixtures):
    from geo_hires.config import ReadConfig
    from geo_hires.errors import SceneReadError
    from geo_hires.scene import SceneReader, open_scene

    vrt = tmp_path / "scene.tif"  # a VRT wearing a .tif name, pointing at a real GeoTIFF
    vrt.write_text(
        f'<VRTDataset rasterXSize="10" rasterYSize="10"><VRTRasterBand dataType="Byte" band="1">'
        f"<SimpleSource><SourceFilename>{fixtures / 'RGB.byte.tif'}</SourceFilename>"
        "<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>"
    )
    assert open_scene(vrt).width == 10  # GDAL alone follows it
    gtiff = ReadConfig(driver="GTiff")
    with pytest.raises(SceneReadError, match="cannot open"):
        open_scene(vrt, config=gtiff)
    scene = open_scene(fixtures / "RGB.byte.tif", config=gtiff)
    with SceneReader(scene, config=gtiff) as reader:
        assert reader.src.driver == "GTiff"


def test_threads_below_one_is_one_line(capsys, fixtures):
    rc, _, err = _run(capsys, "plan", str(fixtures / "OSBS_029.tif"), "--threads", "0")
    assert rc == 2
    _one_error_line(err, "--threads 0: give 1 or more")


def test_training_flags_that_cannot_apply_are_refused_saying_how(capsys, fixtures, tmp_path):
    scene, labels = str(fixtures / "OSBS_029.tif"), str(fixtures / "OSBS_029.csv")
    base = ["train", scene, "--labels", labels, "--out", str(tmp_path / "b")]
    with pytest.raises(SystemExit):  # argparse's own usage error, one line of it ours
        main([*base, "--class-map", "Airplane"])
    assert "'Airplane': write OLD=NEW" in capsys.readouterr().err
    assert main([*base, "--arch", "yolov8n", "--steps", "10"]) != 0
    _one_error_line(capsys.readouterr().err, "--steps is for the LSN; a YOLO trains for --minutes")
    assert main([*base, "--steps", "0"]) != 0  # not read as "the default"
    _one_error_line(capsys.readouterr().err, "steps, batch_size, minutes and lr must be positive")
    assert main(["train", str(tmp_path / "nowhere"), *base[2:]]) == 2  # said "no scenes to train"
    _one_error_line(capsys.readouterr().err, f"scene {tmp_path / 'nowhere'} not found")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("outputs", "needle"),
    [
        (["-o", "c.gpkg"], "-o "),  # a GeoJSON named .gpkg
        (["-o", "c.geojson", "--gpkg", "c.geojson"], "--gpkg "),  # a GeoPackage over the GeoJSON
        (["-o", "c.geojson", "--quicklook", "c.jpg"], "name it .png"),
    ],
)
def test_convert_refuses_outputs_in_the_wrong_format_before_any_work(
    capsys, tmp_path, outputs, needle
):
    labels = tmp_path / "l.csv"
    labels.write_text("xmin,ymin,xmax,ymax,label\n1,1,5,5,a\n")
    scene = _tiled(tmp_path / "s.tif")
    argv = [a if a.startswith("-") else str(tmp_path / a) for a in outputs]
    rc, _, err = _run(capsys, "convert", str(labels), "--scene", str(scene), *argv)
    assert rc == 2
    _one_error_line(err, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.csv", "s.tif"]


def test_an_operating_system_error_is_one_line_naming_the_path(capsys, tmp_path):
    rc, _, err = _run(capsys, "synth", "/proc/no/dir/x.tif", "--width", "64", "--height", "64")
    assert rc == 2  # (a missing folder of its own is made, as every output's is)
    _one_error_line(err, "/proc/no/dir/x.tif")


SIZE = ("--width", "64", "--height", "64")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["synth", "s.tif", *SIZE, "--truth", "t.gpkg"], "--truth "),
        (["synth", "s.png", *SIZE, "--truth", "t.geojson"], "synth writes a GeoTIFF"),
        (["synth", "s3://b/s.tif", *SIZE], "synth writes local files"),
        (["detect", "SCENE", "-o", "a.geojson", "--gpkg", "b.geojson"], "--gpkg "),
        (["detect", "SCENE", "-o", "a.geojson", "--coverage", "c.stac.json"], "--coverage "),
        (["diff", "OLD", "NEW", "-o", "d.gpkg"], "name it .geojson or .json, the format"),
        (["diff", "OLD", "NEW", "-o", "new.geojson"], "is an input"),
    ],
)
def test_every_command_names_its_outputs_for_the_format_it_writes(capsys, tmp_path, argv, needle):
    scene = _tiled(tmp_path / "scene.tif")
    old, new = tmp_path / "old.geojson", tmp_path / "new.geojson"
    for p in (old, new):
        p.write_text('{"type": "FeatureCollection", "features": []}')
    known = {"SCENE": str(scene), "OLD": str(old), "NEW": str(new)}
    keep = {"synth", "detect", "diff", "64"}
    args = [known.get(a, a if a.startswith(("-", "s3:")) or a in keep else str(tmp_path / a))
            for a in argv]  # fmt: skip
    before = sorted(tmp_path.iterdir())
    rc, _, err = _run(capsys, *args)
    assert rc == 2
    _one_error_line(err, needle)
    assert sorted(tmp_path.iterdir()) == before  # nothing written
    assert new.read_text().startswith('{"type"')


def test_synth_and_convert_take_every_name_of_their_formats(capsys, tmp_path):
    scene, truth = tmp_path / "s.tiff", tmp_path / "t.json"
    assert (
        main(["synth", str(tmp_path / "g.tif"), *SIZE, "--truth", str(tmp_path / "g.geojson")]) == 0
    )
    assert main(["synth", str(scene), *SIZE, "--truth", str(truth)]) == 0
    out = [str(tmp_path / n) for n in ("c.geojson", "c.gpkg", "c.png")]
    argv = ["-o", out[0], "--gpkg", out[1], "--quicklook", out[2]]
    assert main(["convert", str(truth), "--scene", str(scene), *argv]) == 0
    assert all(Path(p).is_file() for p in out)


def test_a_usage_error_is_one_line_and_the_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["detect", "x.tif", "-o", "x.geojson", "--zoom", "bogus"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("geo-hires detect: error: argument --zoom"), err
    assert err[0].endswith("; see geo-hires detect --help")
    with pytest.raises(SystemExit) as stop:
        main(["detect", "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--block BLOCK block core size (level px) (default: 1024)" in text
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "(default: the model card's)" in text and "card's) (default" not in text
