"""What the service accepts: truncated TIFFs refused before 202, a corrupt tile failing its job
in one line, a full disk answered 507 with nothing left behind, the tenant's storage quota
(413, 429) and ``DELETE`` freeing it, request ids."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from geo_hires.scene import Density, SynthSpec, write_synthetic
from tests.service.harness import ALICE, TOKENS, running_service, wait_job

REPO = Path(__file__).resolve().parents[2]
REAL_TILED = REPO / "tests" / "data" / "test_tiled.tif"  # a real JPEG-tiled aerial scene
DEMO = REPO / "demo" / "airports.tif"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    write_synthetic(root / "s.tif", SynthSpec(width=700, height=600, seed=3, density=Density.DENSE))
    return root


def _upload(url: str, name: str, data: bytes, headers=ALICE) -> requests.Response:
    return requests.post(
        f"{url}/v1/jobs", files={"scene": (name, data, "image/tiff")}, headers=headers, timeout=60
    )


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_the_first_3000_bytes_of_real_tiled_scenes_are_refused(tmp_path, root):
    data = tmp_path / "data"
    data.mkdir()
    cut = root / "cut.tif"
    cut.write_bytes(REAL_TILED.read_bytes()[:3000])
    with running_service(data, (root,), run_jobs=False) as url:
        for scene in (REAL_TILED, DEMO):
            r = _upload(url, scene.name, scene.read_bytes()[:3000])
            assert r.status_code == 400, r.text
            detail = r.json()["detail"]
            assert "truncated or corrupt" in detail and "tile column 0, row 0 of band 1" in detail
            assert "the file has 3,000 bytes" in detail and str(data) not in detail
        by_path = requests.post(f"{url}/v1/jobs", json={"uri": str(cut)}, headers=ALICE)
        assert by_path.status_code == 400 and "cut.tif is truncated" in by_path.json()["detail"]
        whole = _upload(url, REAL_TILED.name, REAL_TILED.read_bytes())
        assert whole.status_code == 202, whole.text  # the same scene, whole, is accepted
        # an overview cut off is as bad as the full resolution
        tail = _upload(url, DEMO.name, DEMO.read_bytes()[:-100])
        assert tail.status_code == 400 and "of overview" in tail.json()["detail"], tail.text
    assert [p.name for p in _files(data / "uploads")] == [REAL_TILED.name]


def test_a_small_file_of_one_huge_block_is_refused_413(tmp_path, root):
    """A decompression bomb: 0.15 MB of DEFLATE holding one 7008 x 7008 RGB tile (141 MiB
    decoded, all of it for any pixel read, in every reader). A reviewer's 20000 px tile took
    1.66 GB to read one window; the pixel budget alone let it in."""
    import numpy as np
    import rasterio

    bomb = tmp_path / "bomb.tif"
    profile = {"driver": "GTiff", "width": 7008, "height": 7008, "count": 3, "dtype": "uint8",
               "compress": "deflate", "tiled": True, "blockxsize": 7008, "blockysize": 7008,
               "crs": "EPSG:32631",
               "transform": rasterio.transform.from_origin(0, 7008, 1, 1)}  # fmt: skip
    with rasterio.open(bomb, "w", **profile) as dst:
        dst.write(np.zeros((3, 7008, 7008), np.uint8))
    assert bomb.stat().st_size < 300_000
    (tmp_path / "data").mkdir()
    with running_service(tmp_path / "data", (root,), run_jobs=False) as url:
        r = _upload(url, "bomb.tif", bomb.read_bytes())
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == (
        "bomb.tif: each 7008 x 7008 px block (all 3 bands) decodes to 141 MiB (at most "
        "128 MiB), all of it for any pixel read; write it in smaller tiles "
        "(gdal_translate -co TILED=YES -co BLOCKXSIZE=512 -co BLOCKYSIZE=512)"
    )


def _corrupt_one_tile(src: Path, dst: Path) -> None:
    """A copy of ``src`` whose tile (1, 1) holds garbage: the block table is intact, so only a
    read of that tile finds out."""
    import rasterio

    with rasterio.open(src) as s:
        offset = int(s.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(s.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    raw = bytearray(src.read_bytes())
    raw[offset + 8 : offset + size - 8] = b"\xff" * (size - 16)
    dst.write_bytes(bytes(raw))


def test_a_corrupt_tile_fails_the_job_with_one_line(tmp_path, root):
    data = tmp_path / "data"
    data.mkdir()
    _corrupt_one_tile(root / "s.tif", root / "bad.tif")
    with running_service(data, (root,)) as url:
        up = _upload(url, "bad.tif", (root / "bad.tif").read_bytes())
        uri = requests.post(f"{url}/v1/jobs", json={"uri": str(root / "bad.tif")}, headers=ALICE)
        assert up.status_code == 202 and uri.status_code == 202, (up.text, uri.text)
        for job_id in (up.json()["id"], uri.json()["id"]):
            job = wait_job(url, job_id)
            assert job["state"] == "failed", job
            error = job["error"]
            assert error.startswith("bad.tif: truncated or corrupt tile at columns "), error
            assert "\n" not in error and "Traceback" not in error and "rasterio" not in error
            assert str(root) not in error and str(data) not in error


@contextlib.contextmanager
def small_filesystem(path: Path, size: str):
    """A real size-limited filesystem (tmpfs) mounted at ``path`` (root only)."""
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_while_receiving_is_507_and_leaves_nothing(tmp_path, root):
    data = tmp_path / "data"
    data.mkdir()
    scene = (root / "s.tif").read_bytes()
    big = b"II*\x00" + bytes(range(256)) * (3 * 4096)  # 3 MiB: more than the disk holds
    with small_filesystem(data / "uploads", "1m"), running_service(data, (root,)) as url:
        full = _upload(url, "big.tif", big)
        assert full.status_code == 507, full.text
        assert full.headers["content-type"] == "application/problem+json"
        assert "disk is full" in full.json()["detail"]
        assert _files(data / "uploads") == []  # nothing half-written
        assert requests.get(f"{url}/v1/jobs", headers=ALICE).json()["jobs"] == []
        assert len(scene) < 900_000
        ok = _upload(url, "s.tif", scene)  # what fits is still accepted
        assert ok.status_code == 202, ok.text
        assert wait_job(url, ok.json()["id"])["state"] == "succeeded"


def test_the_storage_quota_answers_413_and_429_and_delete_frees_it(tmp_path, root):
    data = tmp_path / "data"
    data.mkdir()
    scene = (root / "s.tif").read_bytes()
    quota = len(scene)
    with running_service(data, (root,), run_jobs=False, tenant_quota_bytes=quota) as url:
        first = _upload(url, "s.tif", scene)
        assert first.status_code == 202, first.text  # exactly the quota fits
        bob = {"Authorization": f"Bearer {TOKENS[1]}"}
        assert _upload(url, "s.tif", scene, headers=bob).status_code == 202  # quotas are per tenant
        over = requests.post(f"{url}/v1/jobs", json={"uri": str(root / "s.tif")}, headers=ALICE)
        assert over.status_code == 429 and int(over.headers["Retry-After"]) > 0
        assert "storage quota" in over.json()["detail"] and "DELETE" in over.json()["detail"]
        job_id = first.json()["id"]
        cancel = requests.delete(f"{url}/v1/jobs/{job_id}", headers=ALICE)
        assert cancel.status_code == 202 and cancel.json()["state"] == "cancelled"
        assert _files(data / "uploads")  # a cancelled job keeps its files until removed
        gone = requests.delete(f"{url}/v1/jobs/{job_id}", headers=ALICE)
        assert gone.status_code == 204 and not gone.content
        assert requests.get(f"{url}/v1/jobs/{job_id}", headers=ALICE).status_code == 404
        assert len(_files(data / "uploads")) == 1  # bob's only
        half = _upload(url, "s.tif", scene[: quota // 2] + b"\x00" * (quota // 2 + 1))
        assert half.status_code == 413, half.text  # one byte more than the quota
        assert "storage quota" in half.json()["detail"]
        assert _upload(url, "s.tif", scene).status_code == 202  # room again
    assert len(_files(data / "uploads")) == 2


def test_two_uploads_at_once_cannot_both_take_the_last_room(tmp_path, root):
    data = tmp_path / "data"
    data.mkdir()
    scene = (root / "s.tif").read_bytes()
    boundary = "geohiresboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"scene\"; "
            'filename="s.tif"\r\nContent-Type: image/tiff\r\n\r\n').encode()  # fmt: skip

    tail = f"\r\n--{boundary}--\r\n".encode()
    got: list[tuple[int, dict]] = []

    def send(url: str) -> None:  # slowly: both uploads are in flight before either is recorded
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.putrequest("POST", "/v1/jobs")
        size = str(len(head) + len(scene) + len(tail))
        kind = f"multipart/form-data; boundary={boundary}"
        for k, v in {**ALICE, "Content-Type": kind, "Content-Length": size}.items():
            conn.putheader(k, v)
        conn.endheaders()
        conn.send(head)
        for i in range(0, len(scene), 1 << 16):
            time.sleep(0.05)
            conn.send(scene[i : i + (1 << 16)])
        conn.send(tail)
        r = conn.getresponse()
        got.append((r.status, json.loads(r.read())))
        conn.close()

    quota = len(scene) * 3 // 2  # room for one, measured as room for each
    with running_service(data, (root,), run_jobs=False, tenant_quota_bytes=quota) as url:
        threads = [threading.Thread(target=send, args=(url,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(status for status, _ in got) == [202, 413], got
        over = next(body for status, body in got if status == 413)
        assert "storage quota" in over["detail"]
    assert len(_files(data / "uploads")) == 1  # the refused one kept nothing


def test_request_ids_are_honoured_returned_and_logged(tmp_path, root, caplog):
    data = tmp_path / "data"
    data.mkdir()
    caplog.set_level(logging.INFO, logger="ray.serve.geo_hires")
    with running_service(data, (root,), run_jobs=False) as url:
        mine = {**ALICE, "X-Request-ID": "client-req-42"}
        body = {"uri": str(root / "s.tif")}
        r = requests.post(f"{url}/v1/jobs", json=body, headers=mine)
        assert r.status_code == 202 and r.headers["X-Request-ID"] == "client-req-42"
        made = requests.get(f"{url}/v1/jobs", headers=ALICE).headers["X-Request-ID"]
        odd = requests.get(f"{url}/v1/jobs", headers={**ALICE, "X-Request-ID": "a b" * 50})
        assert len(made) == 32 and len(odd.headers["X-Request-ID"]) == 32  # replaced
        assert requests.get(f"{url}/v1/jobs/nope", headers=mine).headers["X-Request-ID"] == (
            "client-req-42"
        )  # errors too
    accepted = [rec for rec in caplog.records if rec.getMessage() == "job accepted"]
    assert len(accepted) == 1
    rec = accepted[0]
    assert rec.request_id == "client-req-42" and rec.job == r.json()["id"]
    assert rec.tenant.startswith("t-") and rec.source == "uri"
    assert json.dumps(rec.__dict__, default=str)  # fields a JSON formatter can write
