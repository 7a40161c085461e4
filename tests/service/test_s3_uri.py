"""The service by URI on objects in a bucket (a real S3 server on 127.0.0.1): allow-listed
bucket prefixes only, the CLI's bytes, and every other object or URL refused."""

from __future__ import annotations

import json
import shutil

import pytest
import requests
from geo_hires_service.security import Rejected, parse_root, resolve_scene_uri

from geo_hires.cli import main
from geo_hires.errors import ConfigError
from tests.service.harness import ALICE, running_service, wait_job


def test_allow_roots_are_folders_or_bucket_prefixes(tmp_path):
    assert parse_root("s3://bkt/scenes") == "s3://bkt/scenes/"
    assert parse_root("s3://bkt/scenes/2026/") == "s3://bkt/scenes/2026/"
    assert parse_root("s3://bkt") == parse_root("s3://bkt/") == "s3://bkt/"
    assert parse_root(str(tmp_path)) == tmp_path.resolve()
    for bad in ("https://example.com/scenes/", "s3://bkt/a/../b/", "s3://BAD_bucket/"):
        with pytest.raises(ConfigError):
            parse_root(bad)


@pytest.mark.parametrize(
    ("uri", "status", "match"),
    [
        ("s3://bkt/scenes/a/x.tif", 0, ""),
        ("s3://other/scenes/x.tif", 400, "outside the allowed roots"),
        ("s3://bkt/scenes2/x.tif", 400, "outside the allowed roots"),  # a prefix is a folder
        ("s3://bkt/x.tif", 400, "outside the allowed roots"),
        ("s3://bkt/scenes/../secret/x.tif", 400, "'..'"),
        ("s3://bkt/scenes//x.tif", 400, "empty"),
        ("s3://bkt/scenes/x.vrt", 400, "VRT"),
        ("s3://bkt/scenes/x.tif?versionId=1", 400, "no query string"),
        ("/vsis3/bkt/scenes/x.tif", 400, "virtual file"),
        ("https://bkt.s3.amazonaws.com/scenes/x.tif", 400, "plain local path"),
    ],
)
def test_object_uris_are_confined_to_their_prefixes(tmp_path, uri, status, match):
    roots = [parse_root("s3://bkt/scenes/"), parse_root(str(tmp_path))]
    if status == 0:
        assert resolve_scene_uri(uri, roots) == uri
        return
    with pytest.raises(Rejected, match=match) as err:
        resolve_scene_uri(uri, roots)
    assert err.value.status == status


def test_a_job_by_s3_uri_gives_the_clis_bytes_and_others_are_refused(s3, demo_cog, tmp_path):
    cog = tmp_path / "apron.tif"
    shutil.copy(demo_cog(1024, 512, 1536, 1024), cog)
    client = s3.client()
    client.upload_file(str(cog), s3.bucket, "scenes/apron.tif")
    client.upload_file(str(cog), s3.bucket, "private/apron.tif")
    item = {
        "type": "Feature", "stac_version": "1.0.0", "id": "apron", "geometry": None,
        "properties": {"datetime": "2026-05-01T00:00:00Z"}, "links": [],
        "assets": {"visual": {"href": "./apron.tif"}},
    }  # fmt: skip
    client.put_object(Bucket=s3.bucket, Key="scenes/apron.json", Body=json.dumps(item))
    item["assets"]["visual"]["href"] = "../private/apron.tif"
    client.put_object(Bucket=s3.bucket, Key="scenes/escape.json", Body=json.dumps(item))
    expected = tmp_path / "apron.geojson"
    assert main(["detect", str(cog), "-o", str(expected), "--block", "512"]) == 0
    data = tmp_path / "data"
    data.mkdir()
    root = f"s3://{s3.bucket}/scenes/"
    with running_service(data, (parse_root(root),)) as url:  # type: ignore[arg-type]
        post = f"{url}/v1/jobs"
        opts = {"block": 512}
        ids = []
        for key in ("scenes/apron.tif", "scenes/apron.json"):
            r = requests.post(post, json={"uri": f"s3://{s3.bucket}/{key}", "options": opts},
                              headers=ALICE)  # fmt: skip
            assert r.status_code == 202, r.text
            assert r.json()["scene"] == key.rpartition("/")[2]
            ids.append(r.json()["id"])
        for job_id in ids:
            job = wait_job(url, job_id)
            assert job["state"] == "succeeded", job
        res = requests.get(f"{url}/v1/jobs/{ids[0]}/result", headers=ALICE)
        assert res.content == expected.read_bytes()
        stac = json.loads(requests.get(f"{url}/v1/jobs/{ids[1]}/result", headers=ALICE).content)
        assert stac["geo_hires"]["stac"]["item"] == "apron"
        refused = {
            f"s3://{s3.bucket}/private/apron.tif": (400, "outside the allowed roots"),
            f"s3://{s3.bucket}/scenes/missing.tif": (404, "no such object"),
            f"s3://{s3.bucket}/scenes/escape.json": (400, "outside the item's folder"),
            f"/vsis3/{s3.bucket}/scenes/apron.tif": (400, "virtual file"),
        }
        for uri, (status, match) in refused.items():
            r = requests.post(post, json={"uri": uri}, headers=ALICE)
            assert r.status_code == status and match in r.json()["detail"], (uri, r.text)
            assert r.headers["content-type"] == "application/problem+json"
