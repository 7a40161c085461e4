"""Scenes in object storage: URLs, GDAL settings, and opening against a real S3 server on
127.0.0.1 (moto's server mode, ``tests/s3server.py``)."""

from __future__ import annotations

import copy
import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest

from geo_hires.cli import main
from geo_hires.config import ReadConfig
from geo_hires.errors import ConfigError, SceneNotFoundError, StripLayoutWarning
from geo_hires.scene import open_scene, remote
from geo_hires.scene.stac import open_input
from tests.s3server import APRON_ITEM

# ---------------------------------------------------------------- URLs, no server


def test_urls_map_to_gdal_paths_and_never_show_their_query():
    url = remote.Url.parse("s3://bkt/scenes/a/x.tif")
    assert url is not None and url.gdal == "/vsis3/bkt/scenes/a/x.tif"
    assert url.public == "s3://bkt/scenes/a/x.tif" and url.name == "x.tif"
    signed = remote.Url.parse("https://h.example:8443/p/x.tif?X-Amz-Signature=abc&X-Amz-Date=1")
    assert signed is not None and signed.public == "https://h.example:8443/p/x.tif"
    assert signed.gdal == "/vsicurl/https://h.example:8443/p/x.tif?X-Amz-Signature=abc&X-Amz-Date=1"
    assert "abc" not in repr(signed) and remote.public(str(signed.gdal)[9:]) == signed.public
    assert remote.Url.of_gdal(signed.gdal) == signed
    assert remote.Url.of_gdal(url.gdal) == url
    assert remote.Url.parse("/data/x.tif") is None and not remote.is_remote("/data/x.tif")
    assert not remote.is_remote("vrt:///data/x.tif") and remote.is_remote("S3://bkt/x.tif")


@pytest.mark.parametrize("url", ["https://alice:s3cret@h.example/x.tif?sig=1", "s3://k@bkt/x"])
def test_urls_carrying_credentials_are_refused_without_showing_them(url):
    with pytest.raises(ConfigError, match="a user name or password in a URL is refused") as err:
        remote.Url.parse(url)
    assert "s3cret" not in str(err.value) and "alice" not in str(err.value)
    assert "k@" not in str(err.value) and "sig=1" not in str(err.value)


@pytest.mark.parametrize("bad", ["s3://b/x.tif", "s3://Bkt/x.tif", "s3://bkt/x.tif?v=1", "s3:///x"])
def test_malformed_s3_urls_are_config_errors(bad):
    with pytest.raises(ConfigError, match=r"s3://BUCKET/KEY|names no host"):
        remote.Url.parse(bad)


def test_relative_references_stay_in_their_bucket():
    item = remote.Url.parse("s3://bkt/items/2026/item.json")
    assert item is not None
    assert item.join("scene.tif").public == "s3://bkt/items/2026/scene.tif"
    assert item.join("../scenes/x.tif").public == "s3://bkt/items/scenes/x.tif"
    assert item.join("s3://oth/x.tif").public == "s3://oth/x.tif"
    with pytest.raises(ConfigError, match="leaves the bucket"):
        item.join("../../../x.tif")
    folder = item.folder
    assert folder.key == "items/2026/"
    assert item.join("a/b.tif").under(folder) and not item.join("../x.tif").under(folder)
    assert not remote.Url("s3", "bkt", "items/2026x/a.tif").under(folder)  # a prefix is a folder
    assert not remote.Url("s3", "oth", "items/2026/a.tif").under(folder)


def test_gdal_options_bridge_the_aws_names_gdal_spells_differently():
    env = {
        "AWS_SHARED_CREDENTIALS_FILE": "/run/aws/credentials",
        "AWS_ENDPOINT_URL": "http://m:9000",
    }
    opts = remote.gdal_options("s3://bkt/x.tif", env)
    assert opts["CPL_AWS_CREDENTIALS_FILE"] == "/run/aws/credentials"
    assert (opts["AWS_S3_ENDPOINT"], opts["AWS_HTTPS"]) == ("m:9000", "NO")
    assert opts["CPL_VSIL_CURL_NON_CACHED"] == "/vsis3/bkt/x.tif"
    assert opts["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    own = {"AWS_S3_ENDPOINT": "s3.example", "CPL_AWS_CREDENTIALS_FILE": "/c", **env}
    opts = remote.gdal_options("s3://bkt/x.tif", own)
    assert "AWS_S3_ENDPOINT" not in opts and "CPL_AWS_CREDENTIALS_FILE" not in opts
    assert remote.gdal_options("/data/x.tif", env) == {} and remote.gdal_options(None) == {}


def test_an_endpoint_of_ones_own_gets_paths_and_no_cloud_metadata_lookup():
    """MinIO or a local server named by AWS_ENDPOINT_URL alone: GDAL and boto3 both address
    it by path (virtual hosts sent GDAL to resolve 'bkt.127.0.0.1' outside), and neither asks
    169.254.169.254 for credentials, which only a cloud's own machines answer."""
    from geo_hires.scene.objects import _botocore

    own = remote.gdal_options("s3://bkt/x.tif", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert own["AWS_VIRTUAL_HOSTING"] == "FALSE" and own["CPL_AWS_AUTODETECT_EC2"] == "NO"
    told = {"AWS_S3_ENDPOINT": "m:9", "AWS_VIRTUAL_HOSTING": "TRUE", "CPL_AWS_AUTODETECT_EC2": "1"}
    opts = remote.gdal_options("s3://bkt/x.tif", told)
    assert "AWS_VIRTUAL_HOSTING" not in opts and "CPL_AWS_AUTODETECT_EC2" not in opts
    aws = remote.gdal_options("s3://bkt/x.tif", {})
    assert "AWS_VIRTUAL_HOSTING" not in aws and "CPL_AWS_AUTODETECT_EC2" not in aws
    assert aws["GDAL_HTTP_LOW_SPEED_TIME"] == "120"  # a stalled server fails the read
    mine = remote.gdal_options("s3://bkt/x.tif", {"GDAL_HTTP_LOW_SPEED_TIME": "5"})
    assert "GDAL_HTTP_LOW_SPEED_TIME" not in mine  # the environment's own wins

    def sources(own_endpoint: bool) -> set[str]:
        resolver = _botocore(own_endpoint).get_component("credential_provider")
        return {p.METHOD for p in resolver.providers}

    assert {"iam-role", "container-role"} <= sources(False)
    assert not {"iam-role", "container-role"} & sources(True)
    assert {"env", "shared-credentials-file", "assume-role-with-web-identity"} <= sources(True)


def test_a_server_that_stops_sending_fails_the_read_instead_of_hanging(demo_cog, capsys):
    """It answers the size check, then sends nothing for GDAL's reads: the read fails after
    GDAL_HTTP_LOW_SPEED_TIME, one line, no hang. The default (120 s; GDAL sets none and waits
    forever) is pinned above; here the environment's 2 s wins, to keep the test short."""
    import http.server
    import threading

    cog = demo_cog(1024, 512, 1536, 1024).read_bytes()
    release = threading.Event()

    class Stalling(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.headers.get("Range") != "bytes=0-0":
                release.wait(60)  # a stalled server: never a byte
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-0/{len(cog)}")
            self.send_header("Content-Length", "1")
            self.end_headers()
            self.wfile.write(cog[:1])

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("GDAL_HTTP_LOW_SPEED_TIME", "2")
            mp.setenv("GDAL_HTTP_MAX_RETRY", "0")
            rc = main(["info", f"http://127.0.0.1:{server.server_address[1]}/apron.tif"])
    finally:
        release.set()
        server.shutdown()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("geo-hires: error:"), err


# ---------------------------------------------------------------- against the S3 server


@pytest.fixture
def cog(demo_cog):
    return demo_cog(1024, 512, 1536, 1024)


def _put(s3, path: Path, key: str) -> str:
    s3.client().upload_file(str(path), s3.bucket, key)
    return f"s3://{s3.bucket}/{key}"


def test_a_cog_in_a_bucket_opens_as_the_same_scene(s3, cog):
    url = _put(s3, cog, "scenes/apron.tif")
    s3.counts(reset=True)
    scene, local = open_scene(url), open_scene(cog)
    assert scene.path == url and scene.open_path == f"/vsis3/{s3.bucket}/scenes/apron.tif"
    same = {k: v for k, v in vars(scene).items() if k not in ("path", "open_path")}
    assert same == {k: v for k, v in vars(local).items() if k not in ("path", "open_path")}
    log = s3.counts()
    assert log[0]["method"] == "HEAD"  # the clear-error check, then GDAL's reads
    assert not [e for e in log if "list-type" in e["query"] or e["query"].startswith("delim")]


def test_info_on_a_bucket_scene_and_its_errors_are_one_line(s3, cog, capsys):
    url = _put(s3, cog, "scenes/apron.tif")
    assert main(["info", url]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == url
    assert main(["info", f"s3://{s3.bucket}/scenes/missing.tif"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such object" in err[0] and "missing.tif" in err[0]
    assert main(["info", "s3://no-such-bucket-here/a.tif"]) == 2  # HEAD's bare 404 for both
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such bucket: no-such-bucket-here" in err[0], err


def test_plan_on_a_bucket_scene_is_the_local_files_plan(s3, cog, tmp_path, capsys):
    local = tmp_path / "apron.tif"
    shutil.copy(cog, local)
    url = _put(s3, local, "scenes/apron.tif")
    assert main(["plan", str(local), "--block", "256"]) == 0
    expected = capsys.readouterr().out
    assert main(["plan", url, "--block", "256"]) == 0
    assert capsys.readouterr().out == expected and "blocks" in expected


def test_a_bucket_named_by_aws_endpoint_url_alone_is_read(s3, cog, monkeypatch, capsys):
    url = _put(s3, cog, "scenes/apron.tif")
    for key in ("AWS_S3_ENDPOINT", "AWS_VIRTUAL_HOSTING", "AWS_HTTPS"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.url)  # what boto3 and the AWS CLI read
    assert main(["info", url]) == 0, capsys.readouterr().err  # GDAL: "resolve host t-….127…"
    assert json.loads(capsys.readouterr().out)["path"] == url


def test_no_credentials_is_one_line(s3, cog, monkeypatch, capsys):
    url = _put(s3, cog, "scenes/apron.tif")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert main(["info", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no AWS credentials" in err[0] and "AWS_PROFILE" in err[0]


def test_a_profile_in_the_shared_credentials_file_is_used(s3, cog, monkeypatch, tmp_path):
    url = _put(s3, cog, "scenes/apron.tif")
    creds = tmp_path / "credentials"
    creds.write_text("[reader]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_PROFILE", "reader")
    from geo_hires.scene import SceneReader

    with SceneReader(open_scene(url)) as reader:  # boto3 (the check) and GDAL (the pixels)
        assert reader.read_overview(10_000).valid.all()


def _profile(monkeypatch, tmp_path: Path, *lines: str) -> None:
    """Credentials only from the AWS config file's profile ``p`` of ``lines``."""
    config = tmp_path / "aws-config"
    config.write_text("[profile p]\n" + "\n".join(lines) + "\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("HOME", str(tmp_path))  # no SSO token cache, no ~/.aws of the machine's
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_PROFILE", "p")


def test_a_profiles_credential_process_serves_the_pixels_too(s3, cog, monkeypatch, tmp_path):
    """GDAL cannot run a ``credential_process`` (boto3 can): its keys are handed to GDAL."""
    url = _put(s3, cog, "scenes/apron.tif")
    script = tmp_path / "creds.py"
    keys = {"Version": 1, "AccessKeyId": "testing", "SecretAccessKey": "testing"}
    script.write_text(f"print({json.dumps(json.dumps(keys))})\n")
    _profile(monkeypatch, tmp_path, f"credential_process = {sys.executable} {script}")
    from geo_hires.scene import SceneReader

    with SceneReader(open_scene(url)) as reader:
        assert reader.read_overview(10_000).valid.all()


def test_a_public_bucket_walks_no_credential_chain_per_read(monkeypatch, tmp_path):
    """AWS_NO_SIGN_REQUEST=YES: every read's GDAL scope asked the chain (a credential_process
    per reader; off EC2, the metadata address's time-outs) for keys it would not use."""
    from geo_hires.scene.objects import gdal_session

    ran = tmp_path / "ran"
    script = tmp_path / "creds.py"
    script.write_text(f"open({str(ran)!r}, 'w').close()\nprint('{{}}')\n")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")  # what _profile removes
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    _profile(monkeypatch, tmp_path, f"credential_process = {sys.executable} {script}")
    monkeypatch.setenv("AWS_NO_SIGN_REQUEST", "YES")
    assert gdal_session("/vsis3/bkt/x.tif") is None and not ran.exists()


@pytest.mark.parametrize(
    "lines, says",
    [
        (["credential_process = /bin/echo not-json"], "AWS settings are unusable (JSONDecodeError"),
        (["credential_process = /bin/false"], "AWS settings are unusable (CredentialRetrieval"),
        (
            ["sso_start_url = https://example.awsapps.com/start", "sso_region = us-east-1",
             "sso_account_id = 111111111111", "sso_role_name = reader"],
            "credentials cannot be had (Error loading SSO Token",
        ),
    ],
    ids=["process-prints-no-json", "process-fails", "sso-not-signed-in"],
)  # fmt: skip
def test_a_profile_that_cannot_give_credentials_is_one_line(
    s3, cog, monkeypatch, tmp_path, capsys, lines, says
):
    url = _put(s3, cog, "scenes/apron.tif")
    _profile(monkeypatch, tmp_path, *lines)
    assert main(["info", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0] and "AWS_PROFILE" in err[0], err


def test_a_strip_tiff_in_a_bucket_warns_it_will_be_read_whole(s3, fixtures, tmp_path):
    strips = tmp_path / "strips.tif"
    shutil.copy(fixtures / "RGB.byte.tif", strips)  # rasterio's test file: 3 bands in strips
    url = _put(s3, strips, "scenes/strips.tif")
    with pytest.warns(StripLayoutWarning, match="strips of 3 rows.*the whole file will be read"):
        open_scene(url)
    tiled = _put(s3, fixtures / "test_tiled.tif", "scenes/tiled.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("error", StripLayoutWarning)
        open_scene(tiled)
        open_scene(strips)  # a local file is read by its strips, as always: no warning


def test_a_signed_url_is_read_and_never_shown(s3, cog, tmp_path):
    _put(s3, cog, "scenes/apron.tif")
    signed = s3.client().generate_presigned_url(
        "get_object", Params={"Bucket": s3.bucket, "Key": "scenes/apron.tif"}, ExpiresIn=600
    )
    assert signed.startswith("http://127.0.0.1:") and "Signature=" in signed
    scene = open_scene(signed)
    assert scene.path == signed.split("?")[0] and "Signature" not in repr(scene)
    assert scene.open_path is not None and "Signature=" in scene.open_path
    assert scene.width == 1536
    out = tmp_path / "r.geojson"
    stac = tmp_path / "r.stac.json"  # the item reads the scene's date: once more through GDAL
    assert main(["detect", signed, "-o", str(out), "-o", str(stac), "--model", "aircraft_lsn"]) == 0
    item = json.loads(stac.read_text())
    assert "Signature" not in json.dumps(item) and "Signature" not in out.read_text()
    with pytest.raises(SceneNotFoundError) as err:
        open_scene(signed.replace("apron.tif", "gone.tif"))
    assert "Signature" not in str(err.value) and "gone.tif" in str(err.value)


def test_stac_items_in_a_bucket_resolve_relative_assets_and_stay_confined(s3, cog, tmp_path):
    _put(s3, cog, "items/apron.tif")
    item = copy.deepcopy(APRON_ITEM)  # this test edits its assets
    s3.client().put_object(Bucket=s3.bucket, Key="items/apron.json", Body=json.dumps(item))
    scene, prov = open_input(f"s3://{s3.bucket}/items/apron.json")
    assert scene.path == f"s3://{s3.bucket}/items/apron.tif"
    assert prov == {"item": "apron", "collection": "demo", "asset": "visual"}
    scene, _ = open_input(f"s3://{s3.bucket}/items/apron.json", ReadConfig(stac_confine=True))
    item["assets"]["visual"]["href"] = "../apron.tif"
    s3.client().put_object(Bucket=s3.bucket, Key="items/sub/out.json", Body=json.dumps(item))
    with pytest.raises(ConfigError, match="outside the item's folder"):
        open_input(f"s3://{s3.bucket}/items/sub/out.json", ReadConfig(stac_confine=True))
    local = tmp_path / "item.json"  # a local item pointing into the bucket
    item["assets"]["visual"]["href"] = f"s3://{s3.bucket}/items/apron.tif"
    local.write_text(json.dumps(item))
    assert open_input(local)[0].path == f"s3://{s3.bucket}/items/apron.tif"
    with pytest.raises(ConfigError, match="outside the item's folder"):
        open_input(local, ReadConfig(stac_confine=True))


def test_a_remote_item_naming_this_machines_files_is_refused(s3, tmp_path):
    """An item fetched from a bucket or a web server named a ``file://`` asset and this machine
    opened it, with any GDAL driver (a security review found it); an absolute path is a key of
    the item's own store (pystac resolves it against the item's URL)."""
    secret = tmp_path / "secret.tif"
    secret.write_bytes(b"local")
    item = copy.deepcopy(APRON_ITEM)
    for href, refused in ((f"file://{secret}", True), (str(secret), False)):
        item["assets"]["visual"]["href"] = href
        s3.client().put_object(Bucket=s3.bucket, Key="items/local.json", Body=json.dumps(item))
        if refused:
            with pytest.raises(ConfigError, match=r"a local file, but the item is remote \(s3://"):
                open_input(f"s3://{s3.bucket}/items/local.json")
        else:
            with pytest.raises(SceneNotFoundError, match=rf"s3://{s3.bucket}/tmp/\S+/secret\.tif"):
                open_input(f"s3://{s3.bucket}/items/local.json")
