"""Refusals by the storage itself (moto's IAM on 127.0.0.1): access denied to read, to
write, to delete, and what a run leaves behind when one of them comes mid-run."""

from __future__ import annotations

import json

import pytest

from geo_hires.cli import main
from geo_hires.errors import StorageError
from geo_hires.scene import remote
from tests.s3server import s3_server as start_s3_server


@pytest.fixture(scope="module")
def locked_s3(tmp_path_factory, demo_cog):
    """A second S3 server that checks credentials after its first 4 requests (moto's IAM): a
    bucket with the COG, and a user without any permission."""
    import boto3

    log = tmp_path_factory.mktemp("s3-locked") / "server.log"
    with start_s3_server(log, extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"}) as server:
        server.client().create_bucket(Bucket="locked")
        server.client().upload_file(str(demo_cog(1024, 512, 1536, 1024)), "locked", "apron.tif")
        iam = boto3.client(
            "iam", endpoint_url=server.url, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        iam.create_user(UserName="nobody")
        server.key = iam.create_access_key(UserName="nobody")["AccessKey"]
        yield server


def test_access_denied_is_one_line(locked_s3, monkeypatch, capsys):
    import rasterio

    for k, v in locked_s3.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", locked_s3.key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", locked_s3.key["SecretAccessKey"])
    url = "s3://locked/apron.tif"
    assert main(["info", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"access denied to {url}" in err[0], err
    # GDAL's own refusal (a read after the check, credentials revoked mid-scene) maps the same
    u = remote.Url.parse(url)
    assert u is not None
    env = rasterio.Env(**remote.gdal_options(url))
    with pytest.raises(rasterio.errors.RasterioIOError) as raw, env, rasterio.open(u.gdal):
        pass
    mapped = remote.gdal_error(url, u.gdal, raw.value)
    assert isinstance(mapped, StorageError) and f"access denied to {url}" in str(mapped)


def test_an_upload_the_storage_refuses_is_one_line(locked_s3, monkeypatch, capsys, demo_crop,
                                                 tmp_path):  # fmt: skip
    for k, v in locked_s3.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", locked_s3.key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", locked_s3.key["SecretAccessKey"])
    monkeypatch.setenv("GEO_HIRES_WORK_DIR", str(tmp_path / "work"))
    scene = demo_crop(0, 0, 256, 256)
    url = "s3://locked/out/a.geojson"
    assert main(["detect", str(scene), "-o", url, "--model", "aircraft_lsn"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # was S3UploadFailedError's traceback
    assert len(err) == 1 and f"access denied to {url}" in err[0] and "write" in err[0], err


@pytest.fixture(scope="module")
def two_buckets(tmp_path_factory):
    """An S3 server checking credentials after its 8 setup requests: buckets ``open`` and
    ``shut``, a user who may write to ``open`` only (``key``), and one who may also not delete
    there (``keeper``)."""
    import boto3

    log = tmp_path_factory.mktemp("s3-two") / "server.log"
    with start_s3_server(log, extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "8"}) as server:
        for bucket in ("open", "shut"):
            server.client().create_bucket(Bucket=bucket)
        iam = boto3.client(
            "iam", endpoint_url=server.url, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        iam.create_user(UserName="writer")
        policy = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "s3:*",
            "Resource": ["arn:aws:s3:::open", "arn:aws:s3:::open/*"]}]}  # fmt: skip
        iam.put_user_policy(UserName="writer", PolicyName="open-only",
                            PolicyDocument=json.dumps(policy))  # fmt: skip
        server.key = iam.create_access_key(UserName="writer")["AccessKey"]
        iam.create_user(UserName="keeper")
        deny = {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::open/*"}
        keeps = {**policy, "Statement": [*policy["Statement"], deny]}
        iam.put_user_policy(UserName="keeper", PolicyName="no-delete",
                            PolicyDocument=json.dumps(keeps))  # fmt: skip
        server.keeper = iam.create_access_key(UserName="keeper")["AccessKey"]
        yield server


def _as_user(server, key, monkeypatch, tmp_path) -> None:
    """The environment of a client of ``server`` with one IAM user's access ``key``."""
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setenv("GEO_HIRES_WORK_DIR", str(tmp_path / "work"))


def test_a_run_whose_last_upload_is_refused_leaves_none_of_its_outputs(
    two_buckets, monkeypatch, capsys, demo_crop, tmp_path
):
    import boto3

    _as_user(two_buckets, two_buckets.key, monkeypatch, tmp_path)
    outs = [
        "-o",
        "s3://open/r/a.geojson",
        "-o",
        "s3://open/r/a.fgb",
        "--quicklook",
        "s3://shut/q.png",
    ]
    scene = str(demo_crop(0, 0, 256, 256))
    assert main(["detect", scene, *outs, "--model", "aircraft_lsn"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "access denied to s3://shut/q.png" in err[0], err
    client = boto3.client(
        "s3", endpoint_url=two_buckets.url, region_name="us-east-1",
        aws_access_key_id=two_buckets.key["AccessKeyId"],
        aws_secret_access_key=two_buckets.key["SecretAccessKey"],
    )  # fmt: skip
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="open").get("Contents", [])]
    assert keys == ["r/a.geojson.journal"], keys  # resumable; the two results were removed


def test_a_journal_the_credentials_may_not_delete_is_said_not_fatal(
    two_buckets, monkeypatch, capsys, demo_crop, tmp_path
):
    _as_user(two_buckets, two_buckets.keeper, monkeypatch, tmp_path)
    out = "s3://open/kept/a.geojson"
    argv = ["detect", str(demo_crop(0, 0, 256, 256)), "-o", out, "--model", "aircraft_lsn"]
    assert main(argv) == 0  # the outputs are written: the run succeeded (it failed before)
    err = capsys.readouterr().err
    assert f"warning: the finished run's journal {out}.journal is left in the bucket" in err, err
    assert "access denied" in err
