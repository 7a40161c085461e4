"""Runs that stop and go on: a killed ``detect`` resumes to the same bytes; a batch isolates a
bad scene and skips what is done."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from geo_hires.cli import main
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def scene_path(synthetic) -> Path:
    return synthetic(1400, 1100, seed=21, nodata=True)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "geo_hires.cli", *args]


def test_killed_driver_resumes_to_the_same_geojson(tmp_path, scene_path):
    ref = tmp_path / "ref.geojson"
    assert main(["detect", str(scene_path), "-o", str(ref), "--block", "128", "--batch", "1"]) == 0
    out = tmp_path / "out.geojson"
    journal = Path(f"{out}.journal")
    proc = subprocess.Popen(
        _cli("detect", str(scene_path), "-o", str(out), "--block", "128", "--batch", "1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_for(lambda: journal.exists() and len(journal.read_text().splitlines()) >= 6,
             timeout=120, what="6 journal lines")  # fmt: skip
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the run finished before it could be killed; use a bigger scene"
    done_before = len(journal.read_text().splitlines()) - 1
    assert done_before >= 5
    res = subprocess.run(
        _cli(
            "detect", str(scene_path), "-o", str(out), "--block", "128", "--batch", "1", "--resume"
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "units resumed" in res.stdout
    assert out.read_bytes() == ref.read_bytes()
    assert not journal.exists()  # removed once the output is written


def test_batch_isolates_a_bad_scene_and_resume_skips_done(tmp_path, scene_path, synthetic, capsys):
    import shutil

    good2 = tmp_path / "second.tif"
    shutil.copy(synthetic(600, 500, seed=3, density="sparse"), good2)
    bad = tmp_path / "broken.tif"
    bad.write_text("not a raster")
    listing = tmp_path / "scenes.txt"
    listing.write_text(f"# a comment\n{scene_path}\nbroken.tif\n\nsecond.tif\n")
    out = tmp_path / "out"
    rc = main(["batch", str(listing), "--out-dir", str(out), "--block", "512"])
    said = capsys.readouterr()
    assert rc == 3 and "2 done, 1 failed" in said.out
    lines = said.err.splitlines()  # a log without a terminal: where the batch is, and when
    assert f"geo-hires: [1/3] {scene_path}: 0/" in lines[0] and "units (starting)" in lines[0]
    assert any(ln.startswith("geo-hires: [2/3] ") and ": failed: " in ln for ln in lines)
    assert lines[-1].startswith("geo-hires: [3/3] ") and lines[-1].endswith(" detections")
    status = {p.name: json.loads(p.read_text()) for p in out.glob("*.status.json")}
    assert (
        status["broken.status.json"]["state"] == "failed"
        and "cannot open" in status["broken.status.json"]["error"]
    )
    assert (
        status[f"{scene_path.stem}.status.json"]["state"]
        == status["second.status.json"]["state"]
        == "done"
    )
    assert (out / f"{scene_path.stem}.geojson").exists() and (out / "second.geojson").exists()
    rc = main(["batch", str(listing), "--out-dir", str(out), "--block", "512", "--resume"])
    said = capsys.readouterr()
    assert rc == 3 and "0 done, 1 failed, 2 skipped" in said.out
    assert f"[1/3] {scene_path}: skipped (done before with these options)" in said.err


def test_batch_names_never_collide_and_resume_skips_only_this_scene_done_so(
    tmp_path, synthetic, capsys
):
    import os
    import shutil

    from geo_hires.pipeline.batch import _names

    assert _names([Path("a/x.tif"), Path("b/x.tif"), Path("x_1.tif")]) == ["x", "x_2", "x_1"]
    assert _names([Path("a/x.tif"), Path("b/x.tif")]) == ["x", "x_1"]  # as before
    known = {os.path.abspath("b/x.tif"): "x_1"}  # an earlier run's names stand
    assert _names([Path("b/x.tif"), Path("a/x.tif")], known) == ["x_1", "x"]
    assert _names([Path("b/x.tif"), Path("b/x.tif")], known) == ["x_1", "x"]  # listed twice
    for folder, seed in (("a", 3), ("b", 4)):
        (tmp_path / folder).mkdir()
        shutil.copy(synthetic(400, 300, seed=seed, density="sparse"), tmp_path / folder / "x.tif")
    listing, out = tmp_path / "scenes.txt", tmp_path / "out"
    listing.write_text("a/x.tif\nb/x.tif\n")
    flags = ["--out-dir", str(out), "--block", "512", "--model", "aircraft_lsn"]
    assert main(["batch", str(listing), *flags]) == 0
    status = json.loads((out / "x.status.json").read_text())
    assert status["state"] == "done" and status["scene"].endswith("a/x.tif")
    a_bytes = (out / "x.geojson").read_bytes()
    listing.write_text("c/x.tif\nb/x.tif\n")  # a new x first, a gone: no finished name moves
    (tmp_path / "c").mkdir()
    shutil.copy(tmp_path / "a" / "x.tif", tmp_path / "c" / "x.tif")
    assert main(["batch", str(listing), *flags, "--resume"]) == 0
    assert "1 done, 0 failed, 1 skipped" in capsys.readouterr().out  # c ran, b was done
    assert (out / "x.geojson").read_bytes() == a_bytes  # a's result kept
    assert json.loads((out / "x_2.status.json").read_text())["scene"].endswith("c/x.tif")
    assert main(["batch", str(listing), *flags, "--resume", "--score-threshold", "0.6"]) == 0
    assert "2 done, 0 failed, 0 skipped" in capsys.readouterr().out  # other options: run again
    shutil.copy(synthetic(400, 300, seed=9, density="sparse"), tmp_path / "b" / "x.tif")
    assert main(["batch", str(listing), *flags, "--resume", "--score-threshold", "0.6"]) == 0
    assert "1 done, 0 failed, 1 skipped" in capsys.readouterr().out  # b delivered anew: run


def test_a_second_batch_on_one_folder_waits_for_the_scene_then_skips_it(
    tmp_path, synthetic, capsys
):
    """Two batches on one folder each ran every scene; one could record ``done`` over the
    other's output. The second waits for the scene's lock, then finds it done."""
    import fcntl
    import threading

    scene = synthetic(600, 500, seed=23)
    (tmp_path / "list.txt").write_text(f"{scene}\n")
    out = tmp_path / "out"
    out.mkdir()
    left = out / f".{scene.stem}.geojson.k3zq9x1a.tmp"  # a killed writer's temporary file
    left.write_text("{")
    args = ["batch", str(tmp_path / "list.txt"), "--out-dir", str(out), "--resume"]
    with open(out / f".{scene.stem}.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another run holds the scene
        rc: list[int] = []
        second = threading.Thread(target=lambda: rc.append(main(args)))
        second.start()
        wait_for(lambda: "waiting for that run" in capsys.readouterr().err, timeout=60,
                 what="the wait to be said")  # fmt: skip
        assert second.is_alive() and not (out / f"{scene.stem}.status.json").exists()
        assert left.exists()  # not swept by a run that does not hold the scene
    second.join(timeout=300)
    assert rc == [0] and not left.exists()
    assert json.loads((out / f"{scene.stem}.status.json").read_text())["state"] == "done"
    assert main(args) == 0 and "1 skipped" in capsys.readouterr().out


def test_batches_of_other_lists_on_one_folder_name_their_scenes_apart(tmp_path, synthetic, capsys):
    """Two batches read the folder's names at once: both named their ``a/dup.tif`` and
    ``b/dup.tif`` "dup", and the second overwrote the first's results. The record of names
    is read and written under its lock: the second names its scene ``dup_1``."""
    import fcntl
    import threading

    scene = synthetic(600, 500, seed=25)
    (tmp_path / "list.txt").write_text(f"{scene}\n")
    out = tmp_path / "out"
    out.mkdir()
    args = ["batch", str(tmp_path / "list.txt"), "--out-dir", str(out)]
    with open(out / ".batch-names.json.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another batch is naming its scenes
        rc: list[int] = []
        second = threading.Thread(target=lambda: rc.append(main(args)))
        second.start()
        wait_for(lambda: "waiting for that run" in capsys.readouterr().err, timeout=60,
                 what="the wait to be said")  # fmt: skip
        other = {str(tmp_path / "elsewhere" / scene.name): scene.stem}
        (out / "batch-names.json").write_text(json.dumps(other))  # what the other one wrote
    second.join(timeout=300)
    assert rc == [0] and (out / f"{scene.stem}_1.geojson").exists()
    assert not (out / f"{scene.stem}.geojson").exists()  # the other batch's name, untouched
    assert len(json.loads((out / "batch-names.json").read_text())) == 2


def test_sigterm_stops_a_batch_as_ctrl_c_does_and_resume_goes_on(tmp_path, scene_path):
    """Kubernetes stops a pod with SIGTERM: the process died without a word (exit -15) and the
    scene's status said ``running``."""
    (tmp_path / "list.txt").write_text(f"{scene_path}\n")
    out = tmp_path / "out"
    journal = out / f"{scene_path.stem}.geojson.journal"
    args = ("batch", str(tmp_path / "list.txt"), "--out-dir", str(out), "--block", "128",
            "--batch", "1")  # fmt: skip
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: journal.exists() and len(journal.read_text().splitlines()) >= 4,
             timeout=120, what="4 journal lines")  # fmt: skip
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == (
        "geo-hires: terminated (SIGTERM); detect and batch go on with --resume"
    )
    status = json.loads((out / f"{scene_path.stem}.status.json").read_text())
    assert status["state"] == "interrupted" and journal.exists()
    assert main([*args, "--resume"]) == 0
    status = json.loads((out / f"{scene_path.stem}.status.json").read_text())
    assert status["state"] == "done" and status["units_resumed"] >= 3


def test_a_folder_that_cannot_lock_files_still_runs_the_batch(
    tmp_path, synthetic, monkeypatch, capsys
):
    """flock fails with ENOLCK or EOPNOTSUPP on some mounts: the batch must not fail for it."""
    import errno
    import fcntl

    def no_locks(_fd, _op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    scene = synthetic(600, 500, seed=24)
    (tmp_path / "list.txt").write_text(f"{scene}\n")
    assert main(["batch", str(tmp_path / "list.txt"), "--out-dir", str(tmp_path / "o")]) == 0
    assert "cannot lock files (No locks available); running it unguarded" in capsys.readouterr().err


def test_a_zoomed_scene_s_progress_goes_on_when_its_fine_units_are_planned():
    """The total grows after the coarse pass: the log said 13/13, then nothing for the fine
    stage, usually most of the work."""
    from geo_hires.pipeline.batch import _Quarters

    said: list[str] = []
    q = _Quarters(said.append, "[1/1] s.tif")
    for done in range(14):
        q(done, 13)
    for done in range(14, 31):
        q(done, 30)
    counts = [line.split(": ")[1] for line in said]
    assert counts == [
        "0/13 units (starting)",
        "4/13 units",
        "7/13 units",
        "10/13 units",
        "13/13 units",
        "14/30 units",
        "15/30 units",
        "23/30 units",
        "30/30 units",
    ]
