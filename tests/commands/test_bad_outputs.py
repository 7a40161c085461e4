"""Outputs that cannot be written are refused before any work, in one line saying what to
change (a whole run used to finish first, then fail on an OS error naming a temporary file,
leaving the other outputs and a journal behind)."""

from __future__ import annotations

import time

import pytest

from geo_hires.cli import main
from tests.commands.test_bad_input import _one_error_line, _run


@pytest.mark.parametrize(
    ("where", "said"),
    [
        ("folder", "is a folder; name a file in it (e.g. "),
        ("under_file", "afile is a file, not a folder"),
        ("proc", "cannot write /proc/x/d.geojson ("),
    ],
)
def test_a_destination_that_cannot_be_written_is_refused_before_the_run(
    capsys, tmp_path, fixtures, monkeypatch, where, said
):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder.geojson").mkdir()
    bad = {"folder": tmp_path / "folder.geojson", "under_file": tmp_path / "afile" / "q.png",
           "proc": "/proc/x/d.geojson"}[where]  # fmt: skip
    import geo_hires.pipeline.outputs as outputs

    def no_run(*_a, **_k):  # the check must come first: no scan at all
        raise AssertionError("the scene was scanned")

    monkeypatch.setattr(outputs, "detect_scene", no_run)
    ok = tmp_path / "ok.geojson"
    argv = ["-o", str(bad)] if where != "under_file" else ["-o", str(ok), "--quicklook", str(bad)]
    start = time.monotonic()
    rc, _, err = _run(capsys, "detect", str(fixtures / "OSBS_029.tif"), *argv)
    assert rc == 2 and time.monotonic() - start < 30
    _one_error_line(err, said)
    assert not ok.exists() and not list(tmp_path.glob("*.journal*"))


def test_synth_and_batch_refuse_a_file_where_a_folder_should_be(capsys, tmp_path, fixtures):
    (tmp_path / "afile").write_text("x")
    rc, _, err = _run(capsys, "synth", str(tmp_path / "afile" / "s.tif"), "--width", "64",
                      "--height", "64")  # fmt: skip
    assert rc == 2
    _one_error_line(err, "afile is a file, not a folder")
    (tmp_path / "list.txt").write_text(str(fixtures / "OSBS_029.tif") + "\n")
    assert main(["batch", str(tmp_path / "list.txt"), "--out-dir", str(tmp_path / "afile")]) == 2
    _one_error_line(capsys.readouterr().err, "afile is a file, not a folder")


def test_convert_says_when_it_has_nothing_to_write(capsys, tmp_path, fixtures):
    """A label file naming other images wrote an empty layer and said '0 features' only."""
    labels = tmp_path / "l.csv"
    labels.write_text('image_id,geometry,class\nother.jpg,"[(1, 1), (9, 1), (9, 9), (1, 9)]",car\n')
    rc, out, err = _run(capsys, "convert", str(labels), "--scene", str(fixtures / "OSBS_029.tif"),
                        "-o", str(tmp_path / "c.geojson"))  # fmt: skip
    assert rc == 0 and "wrote 0 features" in out
    assert f"warning: {labels}: no feature to convert (none names this scene)" in err


def test_a_coverage_of_an_unknown_format_is_offered_the_layers_only(capsys, tmp_path, fixtures):
    """It was offered '.stac.json (STAC Item …)', which a coverage cannot be."""
    out, cover = str(tmp_path / "a.geojson"), str(tmp_path / "d.shp")
    rc, _, err = _run(
        capsys, "detect", str(fixtures / "OSBS_029.tif"), "-o", out, "--coverage", cover
    )
    assert rc == 2 and ".stac.json" not in err
    _one_error_line(err, "--coverage '")


def test_synth_makes_its_folder_and_a_link_to_nothing_is_refused(capsys, tmp_path):
    """A missing folder passed the check, then GDAL failed naming 's.tif.partial'; a path
    through a broken link passed it, then the writer failed on 'File exists'."""
    out = tmp_path / "new" / "deeper" / "s.tif"
    assert main(["synth", str(out), "--width", "64", "--height", "64"]) == 0 and out.is_file()
    (tmp_path / "dang").symlink_to(tmp_path / "nowhere")
    rc, _, err = _run(capsys, "detect", str(out), "-o", str(tmp_path / "dang" / "o.geojson"))
    assert rc == 2
    _one_error_line(err, "dang is a link to nothing")
