"""Scenes in a bucket in, results to a bucket out, against a real S3 server on 127.0.0.1
(moto's server mode, ``tests/s3server.py``): every result has the bytes of the same run on the
local file, and a batch killed mid-scene resumes from the bucket's journals on another
"machine" (another work folder)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from geo_hires.cli import main
from tests.aoi_files import box_aoi
from tests.s3server import APRON_ITEM
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
NETGUARD = ROOT.parent / "shared" / "tools" / "netguard"
LSN = ("--model", "aircraft_lsn")  # the scanner alone: its block reads are what is counted


@pytest.fixture
def cog(demo_cog, tmp_path):
    """An apron with parked aircraft, as a COG named as in the bucket (the name is provenance)."""
    path = tmp_path / "apron.tif"
    shutil.copy(demo_cog(1024, 512, 1536, 1024), path)  # a copy: a STAC href resolves links
    return path


def _put(s3, path: Path, key: str) -> str:
    s3.client().upload_file(str(path), s3.bucket, key)
    return f"s3://{s3.bucket}/{key}"


def _get(s3, key: str) -> bytes:
    return s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()


def _keys(s3) -> set[str]:
    listing = s3.client().list_objects_v2(Bucket=s3.bucket)
    return {o["Key"] for o in listing.get("Contents", [])}


def test_detect_reads_a_cog_from_a_bucket_and_writes_the_local_bytes_there(s3, cog, tmp_path):
    url = _put(s3, cog, "scenes/apron.tif")
    ref = tmp_path / "ref"
    assert main(["detect", str(cog), "-o", str(ref / "apron.geojson"), "-o",
                 str(ref / "apron.fgb"), "--coverage", str(ref / "cov.geojson")]) == 0  # fmt: skip
    out = f"s3://{s3.bucket}/out"
    outputs = ["-o", f"{out}/apron.geojson", "-o", f"{out}/apron.fgb"]
    extra = ["--coverage", f"{out}/cov.geojson", "--quicklook", f"{out}/apron.png"]
    assert main(["detect", url, *outputs, *extra]) == 0
    for name in ("apron.geojson", "apron.fgb", "cov.geojson"):
        assert _get(s3, f"out/{name}") == (ref / name).read_bytes(), name
    assert len(json.loads((ref / "apron.geojson").read_text())["features"]) > 0
    assert _get(s3, "out/apron.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert _keys(s3) == {"scenes/apron.tif"} | {f"out/{n}" for n in
                         ("apron.geojson", "apron.fgb", "cov.geojson", "apron.png")}  # fmt: skip
    work = Path(os.environ["GEO_HIRES_WORK_DIR"])
    assert not [p for p in work.rglob("*") if p.is_file()], "staged files and journals are gone"


def test_a_stac_item_in_the_bucket_gives_the_local_items_bytes(s3, cog, tmp_path):
    _put(s3, cog, "items/apron.tif")
    item = APRON_ITEM
    s3.client().put_object(Bucket=s3.bucket, Key="items/apron.json", Body=json.dumps(item))
    (tmp_path / "apron.json").write_text(json.dumps(item))
    ref = tmp_path / "ref.geojson"
    assert main(["detect", str(tmp_path / "apron.json"), "-o", str(ref)]) == 0
    out = f"s3://{s3.bucket}/out/apron.geojson"
    assert main(["detect", f"s3://{s3.bucket}/items/apron.json", "-o", out]) == 0
    assert _get(s3, "out/apron.geojson") == ref.read_bytes()
    assert json.loads(ref.read_text())["geo_hires"]["stac"]["item"] == "apron"


def test_a_signed_url_gives_the_same_bytes_and_never_shows_its_signature(s3, cog, tmp_path, capsys):
    _put(s3, cog, "scenes/apron.tif")
    signed = s3.client().generate_presigned_url(
        "get_object", Params={"Bucket": s3.bucket, "Key": "scenes/apron.tif"}, ExpiresIn=600
    )
    ref, out = tmp_path / "ref.geojson", tmp_path / "out.geojson"
    assert main(["detect", str(cog), "-o", str(ref)]) == 0
    assert main(["detect", signed, "-o", str(out)]) == 0
    assert out.read_bytes() == ref.read_bytes()
    printed = capsys.readouterr()
    assert "Signature" not in printed.out + printed.err and "apron.tif:" in printed.out


def test_a_missing_output_bucket_is_refused_before_any_work(s3, cog, capsys):
    url = _put(s3, cog, "scenes/apron.tif")
    s3.counts(reset=True)
    assert main(["detect", url, "-o", "s3://no-such-bucket-here/x.geojson"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such bucket: no-such-bucket-here" in err[0]
    assert not [e for e in s3.counts() if e["method"] == "GET"], "the scene was not read"
    assert main(["detect", url, "-o", "https://example.com/x.geojson"]) == 2
    assert "s3://BUCKET/KEY" in capsys.readouterr().err
    # a STAC item's hrefs are relative to the files it describes: not with bucket outputs
    assert main(["detect", url, "-o", "s3://results/x.geojson", "-o", "x.stac.json"]) == 2
    assert "write the run's outputs to a local folder" in capsys.readouterr().err


def test_an_aoi_fetches_only_the_tiles_it_needs(s3, cog, tmp_path):
    url = _put(s3, cog, "scenes/apron.tif")
    aoi = box_aoi(tmp_path / "aoi.geojson", cog, (0, 0, 300, 300))
    fetched = {}
    for label, extra in (("all", []), ("aoi", ["--aoi", str(aoi)])):
        s3.counts(reset=True)
        out, ref = tmp_path / f"{label}.out.geojson", tmp_path / f"{label}.ref.geojson"
        assert main(["detect", url, "-o", str(out), "--block", "256", *LSN, *extra]) == 0
        gets = [e for e in s3.counts() if e["method"] == "GET" and e["path"].endswith("apron.tif")]
        fetched[label] = sum(e["bytes"] for e in gets)
        assert main(["detect", str(cog), "-o", str(ref), "--block", "256", *LSN, *extra]) == 0
        assert out.read_bytes() == ref.read_bytes(), "streamed blocks give the whole read's pixels"
    size = cog.stat().st_size
    assert fetched["all"] <= 1.2 * size, "each tile once: the block cache holds the halos"
    # the AOI is 6 % of the pixels; GDAL's read-ahead of neighbouring tiles and the halos
    # fetch more than that, but far from the whole file a whole-level read would fetch
    assert fetched["aoi"] < 0.6 * fetched["all"], fetched


@pytest.fixture
def six(s3, demo_cog, tmp_path):
    """Six scenes (COGs of the demo) in the bucket, a list of them there (relative names and
    URLs), and the same list of the local files."""
    corners = [(0, 0), (1024, 512), (2048, 0), (3072, 1024), (4096, 1536), (512, 1536)]
    local, lines = [], []
    for i, (x, y) in enumerate(corners):
        path = demo_cog(x, y, 512, 512)
        _put(s3, path, f"scenes/s{i}.tif")
        local.append(tmp_path / f"s{i}.tif")
        local[-1].symlink_to(path)
        lines.append(f"s{i}.tif" if i % 2 else f"s3://{s3.bucket}/scenes/s{i}.tif")
    listing = "# six scenes\n" + "\n".join(lines) + "\n"
    s3.client().put_object(Bucket=s3.bucket, Key="scenes/list.txt", Body=listing)
    (tmp_path / "list.txt").write_text("\n".join(str(p) for p in local) + "\n")
    return f"s3://{s3.bucket}/scenes/list.txt", tmp_path / "list.txt"


def test_a_batch_of_six_scenes_writes_the_local_bytes_to_the_bucket(s3, six, tmp_path, capsys):
    listing, local_list = six
    ref = tmp_path / "ref"
    assert main(["batch", str(local_list), "--out-dir", str(ref), "--block", "256"]) == 0
    out = f"s3://{s3.bucket}/out/"
    assert main(["batch", listing, "--out-dir", out, "--block", "256"]) == 0
    assert "6 done, 0 failed" in capsys.readouterr().out
    for i in range(6):
        assert _get(s3, f"out/s{i}.geojson") == (ref / f"s{i}.geojson").read_bytes(), i
        status = json.loads(_get(s3, f"out/s{i}.status.json"))
        assert status["state"] == "done" and status["scene"] == f"s3://{s3.bucket}/scenes/s{i}.tif"
    assert not [k for k in _keys(s3) if k.endswith(".journal")]
    assert main(["batch", listing, "--out-dir", out, "--block", "256", "--resume"]) == 0
    assert "0 done, 0 failed, 6 skipped" in capsys.readouterr().out


def _env(s3, work: Path, netguard_log: Path) -> dict[str, str]:
    path = [str(ROOT), str(ROOT / "services")]
    if (NETGUARD / "sitecustomize.py").is_file():
        path.append(str(NETGUARD))
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **s3.env(),
        "PYTHONPATH": os.pathsep.join(path),
        "NETGUARD_LOG": str(netguard_log),
        "GEO_HIRES_WORK_DIR": str(work),
        "GEO_HIRES_JOURNAL_MIRROR_S": "0",
    }


def test_a_killed_batch_resumes_from_the_buckets_journals_elsewhere(s3, cog, demo_cog, tmp_path):
    small = demo_cog(0, 0, 512, 512)
    _put(s3, small, "scenes/first.tif")
    _put(s3, cog, "scenes/apron.tif")
    s3.client().put_object(
        Bucket=s3.bucket, Key="list.txt", Body="scenes/first.tif\nscenes/apron.tif\n"
    )
    opts = ["--block", "128", "--batch", "1"]
    ref = tmp_path / "ref"
    (tmp_path / "first.tif").symlink_to(small)
    (tmp_path / "list.txt").write_text("first.tif\napron.tif\n")
    assert main(["batch", str(tmp_path / "list.txt"), "--out-dir", str(ref), *opts]) == 0
    out = f"s3://{s3.bucket}/out"
    guard = tmp_path / "netguard.log"
    cmd = [sys.executable, "-m", "geo_hires.cli", "batch", f"s3://{s3.bucket}/list.txt",
           "--out-dir", out, *opts]  # fmt: skip
    proc = subprocess.Popen(cmd, env=_env(s3, tmp_path / "machine-a", guard),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    journal = "out/apron.geojson.journal"
    wait_for(lambda: proc.poll() is not None
             or (journal in _keys(s3) and len(_get(s3, journal).splitlines()) >= 8),
             timeout=300, every=0.2, what="8 journal lines in the bucket")  # fmt: skip
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "out/apron.geojson" not in _keys(s3), "the run finished before it was killed"
    assert "out/first.geojson" in _keys(s3)
    res = subprocess.run([*cmd, "--resume"], env=_env(s3, tmp_path / "machine-b", guard),
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "0 done" not in res.stdout and "1 skipped" in res.stdout, res.stdout
    for name in ("first", "apron"):
        assert _get(s3, f"out/{name}.geojson") == (ref / f"{name}.geojson").read_bytes(), name
    status = json.loads(_get(s3, "out/apron.status.json"))
    assert status["state"] == "done" and status["units_resumed"] >= 7
    assert not [k for k in _keys(s3) if k.endswith(".journal")]
    assert not guard.exists(), guard.read_text() if guard.exists() else ""


def test_no_credentials_for_a_bucket_batch_is_one_line(s3, six, monkeypatch, capsys):
    listing, _ = six
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert main(["batch", listing, "--out-dir", f"s3://{s3.bucket}/out/"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no AWS credentials" in err[0]


@pytest.mark.ray
def test_ray_actors_read_the_bucket_scene_to_the_same_bytes(s3, cog, tmp_path):
    """The batch job's shape: the driver and the scanner actors each read the object themselves
    (the actors with the AWS settings of their own environment, as pods have them)."""
    url = _put(s3, cog, "scenes/apron.tif")
    ref = tmp_path / "ref.geojson"
    assert main(["detect", str(cog), "-o", str(ref), "--block", "512"]) == 0
    guard = tmp_path / "netguard.log"
    cmd = [sys.executable, "-m", "geo_hires.cli", "detect", url, "-o",
           f"s3://{s3.bucket}/out/apron.geojson", "--block", "512", "--executor", "ray",
           "--actors", "1", "--cpus-per-actor", "1"]  # fmt: skip
    res = subprocess.run(cmd, env=_env(s3, tmp_path / "work", guard), capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert _get(s3, "out/apron.geojson") == ref.read_bytes()
    assert not guard.exists(), guard.read_text() if guard.exists() else ""


def test_convert_and_diff_write_to_the_bucket_the_local_bytes(s3, cog, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a URL taken for a path would make a folder 's3:'
    truth = tmp_path / "truth.csv"
    truth.write_text("xmin,ymin,xmax,ymax,label\n10,10,40,40,aircraft\n100,100,150,140,aircraft\n")
    local, out = tmp_path / "local", f"s3://{s3.bucket}/labels"
    files = {"-o": "truth.geojson", "--gpkg": "truth.gpkg", "--quicklook": "truth.png"}
    for dest in (local, out):
        argv = [a for flag, name in files.items() for a in (flag, f"{dest}/{name}")]
        assert main(["convert", str(truth), "--scene", str(cog), *argv]) == 0
    for name in files.values():
        assert _get(s3, f"labels/{name}") == (local / name).read_bytes(), name
    result = tmp_path / "result.geojson"
    assert main(["detect", str(cog), "-o", str(result), *LSN]) == 0
    old = str(local / "truth.geojson")
    assert main(["diff", old, str(result), "-o", str(local / "d.geojson")]) == 0
    assert main(["diff", old, str(result), "-o", f"{out}/d.geojson"]) == 0
    assert _get(s3, "labels/d.geojson") == (local / "d.geojson").read_bytes()
    assert not (tmp_path / "s3:").exists()


def test_a_foreign_journal_in_the_bucket_is_kept_aside_there(s3, demo_crop, capsys):
    """Another run's journal (other settings) met by --resume on another machine: its units
    stay in the bucket as <journal>.foreign, as a local one does beside its output."""
    theirs = "\n".join([json.dumps({"identity": {"scene": "other.tif"}}),
                        *(json.dumps({"key": f"u{i}"}) for i in range(3))]) + "\n"  # fmt: skip
    s3.client().put_object(Bucket=s3.bucket, Key="out/a.geojson.journal", Body=theirs)
    out = f"s3://{s3.bucket}/out/a.geojson"
    scene = demo_crop(0, 0, 256, 256)
    assert main(["detect", str(scene), "-o", out, "--model", "aircraft_lsn", "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"{out}.journal belongs to another run" in err, err  # its URL, not a temporary file
    assert f"kept as {out}.journal.foreign" in err, err
    assert _get(s3, "out/a.geojson.journal.foreign").decode() == theirs  # was overwritten
    assert "out/a.geojson" in _keys(s3) and "out/a.geojson.journal" not in _keys(s3)
