"""Uploads on 127.0.0.1: safe names, refusals with exact codes and messages that leave nothing
on disk, and the byte limit on both sides of its boundary."""

from __future__ import annotations

import pytest
import requests

from geo_hires.scene import SynthSpec, write_synthetic
from tests.service.harness import ALICE, problem_status, running_service


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_synthetic(root / "scene1.tif", SynthSpec(width=640, height=520, seed=41))
    return root


@pytest.fixture(scope="module")
def service(tmp_path_factory, roots):
    data = tmp_path_factory.mktemp("data")
    with running_service(data, (roots,), run_jobs=False) as url:
        yield url, data


def test_upload_names_are_made_safe():
    from geo_hires_service.uploads import safe_name

    assert safe_name("../../etc/pass wd.tif") == "pass_wd.tif"
    assert safe_name(".hidden.tif") == "hidden.tif"
    assert safe_name("") == safe_name(None) == safe_name("...") == "scene.tif"
    assert len(safe_name("a" * 300 + ".tif")) == 200


def test_a_refused_upload_leaves_nothing_and_models_are_listed(service, roots):
    url, data = service
    head = (roots / "scene1.tif").read_bytes()[:300]  # TIFF magic, then nothing readable
    r = requests.post(f"{url}/v1/jobs", files={"scene": ("cut.tif", head)}, headers=ALICE)
    assert r.status_code == 400 and "cannot be used" in r.json()["detail"]
    assert not list((data / "uploads").glob("*/cut.tif"))
    models = requests.get(f"{url}/v1/models", headers=ALICE).json()["models"]
    assert [m["name"] for m in models] == [
        "aircraft_cascade",
        "aircraft_lsn",
        "aircraft_yolo",
    ] and models[0]["card"]["levels"]
    assert requests.get(f"{url}/v1/models").status_code == 401


def test_upload_abuse_gets_exact_codes_and_messages(service, roots):
    url, data = service
    post = f"{url}/v1/jobs"
    tif = (roots / "scene1.tif").read_bytes()

    def detail(r, code):
        assert problem_status(r)[0] == code, r.text
        return r.json()["detail"]

    bad_opts = requests.post(
        post, files={"scene": ("a.tif", tif)}, data={"options": '{"block": 3}'}, headers=ALICE
    )
    assert detail(bad_opts, 422).startswith("options: block: ")
    not_json = requests.post(
        post, files={"scene": ("a.tif", tif)}, data={"options": "{nope"}, headers=ALICE
    )
    assert detail(not_json, 422).startswith("options: ")
    no_scene = requests.post(post, files={"other": ("a.tif", tif)}, headers=ALICE)
    assert detail(no_scene, 400) == "multipart field 'scene' (the GeoTIFF file) is missing"
    empty = requests.post(post, files={"scene": ("a.tif", b"")}, headers=ALICE)
    assert detail(empty, 400) == "the scene upload is empty"
    gif = requests.post(post, files={"scene": ("a.tif", b"GIF89a" * 10)}, headers=ALICE)
    assert detail(gif, 415) == "only GeoTIFF scenes are accepted"
    body = (
        b"--b\r\nContent-Disposition: form-data; name=scene; filename=a.tif\r\n\r\n"
        b"II*\x00\r\n--b--\r\n"
    )
    chunked = requests.post(
        post,
        data=iter([body]),  # a generator: sent chunked, without Content-Length
        headers={**ALICE, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert detail(chunked, 411) == "uploads need a Content-Length header"
    assert not [p for p in (data / "uploads").rglob("*") if p.is_file() and p.name == "a.tif"]


def test_upload_of_exactly_the_byte_limit_is_not_refused_for_size(tmp_path, roots):
    data = tmp_path / "data"
    data.mkdir()
    with running_service(data, (roots,), run_jobs=False, max_upload_bytes=100_000) as url:
        exact = b"II*\x00" + b"\x00" * (100_000 - 4)
        r = requests.post(f"{url}/v1/jobs", files={"scene": ("e.tif", exact)}, headers=ALICE)
        assert problem_status(r)[0] == 400  # read as a TIFF (and refused as unreadable), not 413
        over = requests.post(
            f"{url}/v1/jobs", files={"scene": ("o.tif", exact + b"\x00")}, headers=ALICE
        )
        assert problem_status(over)[0] == 413
