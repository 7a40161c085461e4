"""The HTTP API on 127.0.0.1: jobs by upload and by URI, results equal the CLI's bytes, abuse
(uploads' own refusals are in test_uploads.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests

from geo_hires.cli import main
from geo_hires.scene import SynthSpec, write_synthetic
from tests.service.harness import ALICE, BOB, TOKENS, problem_status, running_service, wait_job


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    for i, (w, h) in enumerate([(900, 700), (640, 520)]):
        write_synthetic(root / f"scene{i}.tif", SynthSpec(width=w, height=h, seed=40 + i))
    return root


@pytest.fixture(scope="module")
def service(tmp_path_factory, roots):
    data = tmp_path_factory.mktemp("data")
    with running_service(data, (roots,), max_active_per_tenant=8) as url:
        yield url, data


def _cli_bytes(scene: Path, tmp_path: Path, *extra: str) -> bytes:
    out = tmp_path / f"{scene.stem}.geojson"
    assert main(["detect", str(scene), "-o", str(out), *extra]) == 0
    return out.read_bytes()


def test_uri_and_upload_jobs_give_the_clis_bytes(service, roots, tmp_path):
    url, _ = service
    scene = roots / "scene0.tif"
    opts = {"score_threshold": 0.2, "block": 512}
    r = requests.post(f"{url}/v1/jobs", json={"uri": str(scene), "options": opts}, headers=ALICE)
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == f"/v1/jobs/{r.json()['id']}"
    with scene.open("rb") as fh:
        up = requests.post(
            f"{url}/v1/jobs",
            files={"scene": ("scene0.tif", fh, "image/tiff")},
            data={"options": json.dumps(opts)},
            headers=ALICE,
        )
    assert up.status_code == 202, up.text
    expected = _cli_bytes(scene, tmp_path, "--score-threshold", "0.2", "--block", "512")
    for job_id in (r.json()["id"], up.json()["id"]):
        job = wait_job(url, job_id)
        assert job["state"] == "succeeded", job
        assert job["progress"]["units_done"] == job["progress"]["units_total"] > 0
        res = requests.get(f"{url}/v1/jobs/{job_id}/result", headers=ALICE)
        assert res.headers["content-type"] == "application/geo+json"
        assert res.content == expected
        assert job["detections"] == len(json.loads(expected)["features"])
        gpkg = requests.get(f"{url}/v1/jobs/{job_id}/result?format=gpkg", headers=ALICE)
        assert gpkg.status_code == 200 and gpkg.content[:16] == b"SQLite format 3\x00"


def test_idempotency_key_returns_the_same_job(service, roots):
    url, _ = service
    body = {"uri": str(roots / "scene1.tif")}
    key = {"Idempotency-Key": "abc-123", **ALICE}
    a = requests.post(f"{url}/v1/jobs", json=body, headers=key).json()
    b = requests.post(f"{url}/v1/jobs", json=body, headers=key).json()
    c = requests.post(f"{url}/v1/jobs", json=body, headers={**BOB, "Idempotency-Key": "abc-123"})
    assert a["id"] == b["id"] != c.json()["id"]
    wait_job(url, a["id"])
    wait_job(url, c.json()["id"], headers=BOB)


def test_abuse_gets_exact_codes_and_the_service_keeps_serving(service, roots, tmp_path):
    url, data = service
    post = f"{url}/v1/jobs"
    ok = requests.post(post, json={"uri": str(roots / "scene1.tif")}, headers=ALICE).json()
    other = tmp_path / "outside.tif"
    other.write_bytes((roots / "scene1.tif").read_bytes())
    (roots / "link.tif").unlink(missing_ok=True)
    (roots / "link.tif").symlink_to(other)
    (roots / "fake.tif").write_text("hello")
    (roots / "x.vrt").write_text("<VRTDataset/>")
    truncated = roots / "truncated.tif"
    truncated.write_bytes((roots / "scene1.tif").read_bytes()[:200])

    def with_options(**options: object) -> requests.Response:
        body = {"uri": str(roots / "scene1.tif"), "options": options}
        return requests.post(post, json=body, headers=ALICE)

    cases = {
        "no token": (requests.post(post, json={"uri": "/x"}), 401),
        "wrong token": (
            requests.post(
                post, json={"uri": "/x"}, headers={"Authorization": "Bearer nope-nope-nope-nope"}
            ),
            401,
        ),
        "other tenant's job": (requests.get(f"{url}/v1/jobs/{ok['id']}", headers=BOB), 404),
        "other tenant's result": (
            requests.get(f"{url}/v1/jobs/{ok['id']}/result", headers=BOB),
            404,
        ),
        "..": (
            requests.post(post, json={"uri": f"{roots}/../{roots.name}/scene1.tif"}, headers=ALICE),
            400,
        ),
        "symlink out": (
            requests.post(post, json={"uri": str(roots / "link.tif")}, headers=ALICE),
            400,
        ),
        "/vsicurl": (
            requests.post(post, json={"uri": "/vsicurl/http://127.0.0.1:9/a.tif"}, headers=ALICE),
            400,
        ),
        "vrt://": (
            requests.post(post, json={"uri": f"vrt://{roots}/scene1.tif"}, headers=ALICE),
            400,
        ),
        "VRT in root": (
            requests.post(post, json={"uri": str(roots / "x.vrt")}, headers=ALICE),
            400,
        ),
        "text as .tif": (
            requests.post(post, json={"uri": str(roots / "fake.tif")}, headers=ALICE),
            415,
        ),
        "truncated TIFF": (requests.post(post, json={"uri": str(truncated)}, headers=ALICE), 400),
        "malformed options": (with_options(block=3), 422),
        "unknown option": (with_options(gdal="x"), 422),
        "unknown model": (with_options(model="../../etc"), 422),
        "zoom rl, model without a policy": (with_options(model="aircraft_yolo", zoom="rl"), 422),
        "zoom budget over 1": (with_options(zoom="gate", budget=1.5), 422),
        "upload not TIFF": (
            requests.post(
                post, files={"scene": ("a.tif", b"GIF89a....", "image/tiff")}, headers=ALICE
            ),
            415,
        ),
        "wrong content type": (
            requests.post(post, data="uri=/x", headers={**ALICE, "Content-Type": "text/plain"}),
            415,
        ),
    }
    for name, (resp, code) in cases.items():
        assert problem_status(resp)[0] == code, (name, resp.text)
    assert requests.get(f"{url}/v1/healthz").json() == {"status": "ok"}
    assert wait_job(url, ok["id"])["state"] == "succeeded"
    written = {p.relative_to(data).parts[0] for p in data.rglob("*") if p.is_file()}
    assert written <= {"jobs", "uploads", "jobs.db", "jobs.db-wal", "jobs.db-shm", "tokens"}


def _declared_huge(path: Path) -> Path:
    """A sparse BigTIFF whose header declares 300,000 x 300,000 px (90 GP) in a few MB."""
    import rasterio

    profile = {"driver": "GTiff", "width": 300_000, "height": 300_000, "count": 3}
    with rasterio.open(
        path, "w", **profile, dtype="uint8", tiled=True, sparse_ok=True, BIGTIFF="YES"
    ):
        pass
    return path


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_limits_answer_413_and_429(tmp_path, roots):
    data = tmp_path / "data"
    data.mkdir()
    huge = _declared_huge(roots.parent / "huge.tif")
    limits = {"max_upload_bytes": 4_000_000, "max_active": 2, "max_active_per_tenant": 2}
    with running_service(data, (roots, roots.parent), run_jobs=False, **limits) as url:
        post = f"{url}/v1/jobs"
        big = requests.post(
            post, files={"scene": ("big.tif", b"II*\x00" + b"0" * 4_100_000)}, headers=ALICE
        )
        # counted on arrival
        assert problem_status(big)[0] == 413 and "limit" in big.json()["detail"]
        huge_body = requests.post(
            post, files={"scene": ("big.tif", b"II*\x00" + b"0" * 6_000_000)}, headers=ALICE
        )  # refused by its Content-Length, before a byte is read
        assert problem_status(huge_body)[0] == 413 and "limit" in huge_body.json()["detail"]
        bomb = requests.post(post, json={"uri": str(huge)}, headers=ALICE)
        assert problem_status(bomb)[0] == 413 and "pixels" in bomb.json()["detail"]
        padded = b'{"uri": "' + b"x" * 2_100_000 + b'"}'  # a JSON body is bounded too
        for target, body in ((post, padded), (f"{url}/processes/detect/execution", padded)):
            r = requests.post(
                target, data=body, headers={**ALICE, "content-type": "application/json"}
            )
            assert (
                problem_status(r)[0] == 413 and "JSON body is over 2,000,000" in r.json()["detail"]
            )
        for _ in range(2):
            r = requests.post(post, json={"uri": str(roots / "scene1.tif")}, headers=ALICE)
            assert r.status_code == 202
        full = requests.post(post, json={"uri": str(roots / "scene1.tif")}, headers=BOB)
        assert problem_status(full)[0] == 429 and int(full.headers["Retry-After"]) > 0
        queued = requests.get(f"{url}/v1/jobs", headers=ALICE).json()["jobs"]
        cancel = requests.delete(f"{url}/v1/jobs/{queued[0]['id']}", headers=ALICE)
        assert cancel.status_code == 202 and cancel.json()["state"] == "cancelled"
        assert requests.post(post, json={"uri": str(roots / "scene1.tif")}, headers=BOB).ok
        early = requests.get(f"{url}/v1/jobs/{queued[1]['id']}/result", headers=ALICE)
        assert problem_status(early)[0] == 409
        gone = requests.get(f"{url}/v1/jobs/{queued[0]['id']}/result", headers=ALICE)
        assert problem_status(gone)[0] == 410 and "has no result" in gone.json()["detail"]
    assert not (data / "uploads").exists() or not any((data / "uploads").rglob("*.tif"))


def test_submit_command_uploads_polls_and_downloads(service, roots, tmp_path, capsys):
    url, _ = service
    scene = roots / "scene1.tif"
    token = tmp_path / "token"
    token.write_text("# my token for the test service\n" + TOKENS[0] + "\n")
    out = tmp_path / "got.geojson"
    rc = main(["submit", str(scene), "--server", url, "--token-file", str(token), "-o", str(out)])
    assert rc == 0 and "detections ->" in capsys.readouterr().out
    assert out.read_bytes() == _cli_bytes(scene, tmp_path)
    token.write_text("wrong-token-0123456789\n")
    assert main(["submit", str(scene), "--server", url, "--token-file", str(token)]) == 2
    assert "HTTP 401" in capsys.readouterr().err
    dead = "http://127.0.0.1:9"  # nothing listens on the discard port
    assert main(["submit", str(scene), "--server", dead, "--token-file", str(token)]) == 2
    assert "cannot reach" in capsys.readouterr().err
    for bad, needle in (
        (tmp_path / "no" / "x.geojson", "does not exist"),
        (out.with_suffix(".gpkg"), "name it"),
    ):
        assert main(["submit", str(scene), "--server", dead, "-o", str(bad)]) == 2
        assert needle in capsys.readouterr().err  # before any upload: nothing listens there


def test_levels_option_runs_only_the_named_levels(service, roots, tmp_path):
    url, _ = service
    scene = roots / "scene0.tif"
    body = {"uri": str(scene), "options": {"levels": ["coarse"], "score_threshold": 0.2}}
    job = requests.post(f"{url}/v1/jobs", json=body, headers=ALICE).json()
    done = wait_job(url, job["id"])
    got = requests.get(f"{url}/v1/jobs/{job['id']}/result", headers=ALICE).content
    expected = _cli_bytes(scene, tmp_path, "--levels", "coarse", "--score-threshold", "0.2")
    assert got == expected and done["state"] == "succeeded"
    doc = json.loads(got)
    # the default cascade refines the coarse level's candidates; the full level is not scanned
    assert [lv["name"] for lv in doc["geo_hires"]["levels"]] == ["coarse", "refine"]
    assert {f["properties"]["level"] for f in doc["features"]} <= {"coarse", "refine"}
    bad = {"uri": str(scene), "options": {"levels": ["nope"]}}
    r = requests.post(f"{url}/v1/jobs", json=bad, headers=ALICE)
    assert r.status_code == 422 and "no level 'nope'" in r.json()["detail"]


def test_a_scene_gone_before_its_run_fails_the_job_without_leaking_paths(service, roots, tmp_path):
    url, data = service
    doomed = roots / "doomed.tif"
    doomed.write_bytes((roots / "scene1.tif").read_bytes())
    from geo_hires_service.store import JobStore

    store = JobStore(f"sqlite:///{data / 'jobs.db'}")
    # recorded straight in the store, as an accepted job whose file then disappears
    job, _ = store.submit(
        tenant=_tenant_of(TOKENS[0]),
        scene_path=str(doomed),
        scene_name="doomed.tif",
        options={},
    )
    doomed.unlink()
    done = wait_job(url, job.id)
    store.close()
    assert done["state"] == "failed" and "doomed.tif" in done["error"]
    assert str(roots) not in done["error"]
    assert requests.get(f"{url}/v1/healthz").ok  # the runner lives on


def _tenant_of(token: str) -> str:
    from geo_hires_service.security import load_tokens

    return load_tokens(env={"GEO_HIRES_TOKENS": token}).tenant(f"Bearer {token}") or ""


def test_bands_option_maps_bands_like_the_cli(service, roots, tmp_path):
    url, _ = service
    scene = roots / "scene0.tif"
    body = {"uri": str(scene), "options": {"bands": [3, 2, 1]}}
    job = requests.post(f"{url}/v1/jobs", json=body, headers=ALICE).json()
    assert wait_job(url, job["id"])["state"] == "succeeded"
    got = requests.get(f"{url}/v1/jobs/{job['id']}/result", headers=ALICE).content
    assert got == _cli_bytes(scene, tmp_path, "--bands", "3,2,1")
    assert json.loads(got)["geo_hires"]["bands"] == [3, 2, 1]
    for bands, status, text in (
        ([3, 2, 9], 400, "has no band 9"),  # checked against the scene before 202
        ([1, 1, 2], 400, "fewer than 3 distinct"),
        ([1, 2], 422, "at least 3"),
        (["red", "green", "../x"], 422, "options.bands.2"),
    ):
        r = requests.post(
            f"{url}/v1/jobs", json={"uri": str(scene), "options": {"bands": bands}}, headers=ALICE
        )
        detail = r.json()["detail"]
        assert r.status_code == status and text in detail and "--" not in detail, (bands, r.text)
        assert str(roots) not in r.text  # no server paths in answers


def test_aoi_option_scans_only_there_like_the_cli(service, roots, tmp_path):
    import geopandas as gpd
    import shapely
    from pyproj import Transformer

    from geo_hires.scene import open_scene

    url, _ = service
    scene = roots / "scene0.tif"
    s = open_scene(scene)
    to = Transformer.from_crs(s.crs, "EPSG:4326", always_xy=True)
    ring = [to.transform(*(s.transform @ p)) for p in [(0, 0), (450, 0), (450, 350), (0, 350)]]
    aoi = {
        "type": "Feature",
        "properties": {},
        "geometry": shapely.geometry.mapping(shapely.Polygon(ring)),
    }
    job = requests.post(
        f"{url}/v1/jobs", json={"uri": str(scene), "options": {"aoi": aoi}}, headers=ALICE
    ).json()
    assert wait_job(url, job["id"])["state"] == "succeeded"
    got = json.loads(requests.get(f"{url}/v1/jobs/{job['id']}/result", headers=ALICE).content)
    aoi_file = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame.from_features([aoi], crs="EPSG:4326").to_file(aoi_file)
    want = json.loads(_cli_bytes(scene, tmp_path, "--aoi", str(aoi_file)))
    assert got["features"] == want["features"]
    assert got["geo_hires"]["aoi"]["source"] == "request"
    assert got["geo_hires"]["aoi"]["pixels_scanned"] == want["geo_hires"]["aoi"]["pixels_scanned"]
    point = {"type": "Point", "coordinates": ring[0]}
    latitude_first = {"type": "Polygon", "coordinates": [[[3, 95], [4, 95], [4, 96], [3, 95]]]}
    for bad, status, text in (
        (point, 400, "holds no polygon"),
        ({"type": "Polygon", "coordinates": "nope"}, 400, "not valid GeoJSON"),
        ({"type": "Nonsense", "coordinates": []}, 400, "not valid GeoJSON"),  # not a 500
        (latitude_first, 400, "give longitude first, then latitude"),  # was a 500
    ):
        r = requests.post(
            f"{url}/v1/jobs", json={"uri": str(scene), "options": {"aoi": bad}}, headers=ALICE
        )
        assert r.status_code == status and text in r.json()["detail"], r.text


def test_a_stac_item_by_uri_runs_its_asset_and_stays_in_its_folder(service, roots, tmp_path):
    url, _ = service
    item = {
        "type": "Feature", "stac_version": "1.0.0", "stac_extensions": [], "id": "item-1",
        "collection": "c", "geometry": None, "properties": {"datetime": "2026-05-01T00:00:00Z"},
        "links": [], "assets": {"visual": {"href": "scene1.tif", "roles": ["visual"]}},
    }  # fmt: skip
    path = roots / "item.json"
    path.write_text(json.dumps(item))
    job = requests.post(f"{url}/v1/jobs", json={"uri": str(path)}, headers=ALICE).json()
    assert wait_job(url, job["id"])["state"] == "succeeded"
    got = json.loads(requests.get(f"{url}/v1/jobs/{job['id']}/result", headers=ALICE).content)
    want = json.loads(_cli_bytes(roots / "scene1.tif", tmp_path))
    assert got["features"] == want["features"]
    assert got["geo_hires"]["stac"] == {"item": "item-1", "collection": "c", "asset": "visual"}
    sub = roots / "items"
    sub.mkdir(exist_ok=True)
    escaping = sub / "escape.json"
    escaping.write_text(json.dumps({**item, "assets": {"visual": {"href": "../scene1.tif"}}}))
    r = requests.post(f"{url}/v1/jobs", json={"uri": str(escaping)}, headers=ALICE)
    assert r.status_code == 400 and "outside the item's folder" in r.json()["detail"], r.text
    for href, status, said in (
        ("gone.tif", 404, "scene not found: gone.tif; check the path"),
        ("escape.json", 400, "cannot open escape.json as a raster"),
    ):
        escaping.write_text(json.dumps({**item, "assets": {"visual": {"href": href}}}))
        r = requests.post(f"{url}/v1/jobs", json={"uri": str(escaping)}, headers=ALICE)
        detail = r.json()["detail"]  # the asset's folder was shown, a server path
        assert r.status_code == status and said in detail and str(roots) not in detail, r.text
    assert "pass a GeoTIFF" in detail and "another raster GDAL reads" not in detail
    plain = roots / "notes.json"
    plain.write_text('{"hello": 1}')
    r = requests.post(f"{url}/v1/jobs", json={"uri": str(plain)}, headers=ALICE)
    assert r.status_code == 415, r.text  # a JSON file that is not a STAC item is no scene


def test_a_jobs_map_after_its_scene_moved_is_410_and_its_detections_still_served(service, roots):
    url, _ = service
    scene = roots / "moving.tif"
    shutil.copy(roots / "scene1.tif", scene)
    r = requests.post(f"{url}/v1/jobs", json={"uri": str(scene)}, headers=ALICE)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert wait_job(url, job_id)["state"] == "succeeded"
    scene.rename(roots / "moved.tif")
    for what in ("view", "quicklook"):
        got = requests.get(f"{url}/v1/jobs/{job_id}/{what}", headers=ALICE)
        assert got.status_code == 410, got.text  # was a 500
        detail = got.json()["detail"]
        assert "can no longer be read" in detail and str(roots) not in detail  # no server path
    assert requests.get(f"{url}/v1/jobs/{job_id}/result", headers=ALICE).status_code == 200
