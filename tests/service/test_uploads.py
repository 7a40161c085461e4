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


def _held_upload(url, token, length=100_000):
    """A socket that sent an upload's headers and the start of its body, then stops."""
    import socket
    from urllib.parse import urlsplit

    host, port = urlsplit(url).hostname, urlsplit(url).port
    sock = socket.create_connection((host, port), timeout=5)
    sock.sendall(
        (
            f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: multipart/form-data; boundary=XyZb\r\nContent-Length: {length}\r\n\r\n"
            '--XyZb\r\nContent-Disposition: form-data; name="scene"; filename="s.tif"\r\n\r\nII*'
        ).encode()
    )
    return sock


def test_held_uploads_are_capped_and_a_full_queue_answers_before_the_body(tmp_path, roots):
    """Slow uploads held the ingress's request slots (health and status waited behind them);
    a full queue answered 429 only once the whole body had arrived and been stored."""
    from geo_hires_service.uploads import MAX_UPLOADS_PER_TENANT

    from tests.service.harness import BOB, TOKENS

    with running_service(tmp_path, (roots,), run_jobs=False, max_active_per_tenant=1) as url:
        held = [_held_upload(url, TOKENS[0]) for _ in range(MAX_UPLOADS_PER_TENANT)]
        try:
            import time

            time.sleep(0.5)  # the server has taken both
            scene = (roots / "scene1.tif").read_bytes()
            more = requests.post(
                f"{url}/v1/jobs", files={"scene": ("s.tif", scene)}, headers=ALICE, timeout=5
            )
            assert problem_status(more)[0] == 429 and "uploads already" in more.json()["detail"]
            assert requests.get(f"{url}/v1/jobs", headers=ALICE, timeout=5).ok
            bob = requests.post(f"{url}/v1/jobs", json={"uri": str(roots / "scene1.tif")},
                                headers=BOB, timeout=5)  # fmt: skip
            assert bob.status_code == 202  # another tenant's submission gets through
            full = _held_upload(url, TOKENS[1], length=10**9)  # Bob is at his 1 job
            answer = full.recv(4096).decode()  # before any more of the body is sent
            full.close()
            assert answer.startswith("HTTP/1.1 429") and "retry-after" in answer.lower()
        finally:
            for sock in held:
                sock.close()


def test_a_tiff_of_millions_of_tiny_tiles_is_refused_before_its_blocks_are_checked(tmp_path):
    """134 bytes could declare 39 million sparse 16 px tiles: minutes of lookups per request."""
    import numpy as np
    import rasterio

    from geo_hires.errors import SceneReadError
    from geo_hires.scene.integrity import MAX_BLOCKS, check_blocks

    side = 16 * (int(MAX_BLOCKS**0.5) + 1)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 1, "dtype": "uint8",
               "tiled": True, "blockxsize": 16, "blockysize": 16, "sparse_ok": True}  # fmt: skip
    with rasterio.open(tmp_path / "s.tif", "w", **profile) as dst:
        dst.write(np.ones((1, 16, 16), np.uint8), window=((0, 16), (0, 16)))
    with pytest.raises(SceneReadError, match=r"blocks of 16 x 16 px .at most 2,097,152.; write"):
        check_blocks(tmp_path / "s.tif")


def test_a_client_hanging_up_mid_upload_is_no_server_error(service, caplog):
    """It was logged as 'request failed' with a traceback, and counted as a 500."""
    import logging
    import time

    from tests.service.harness import TOKENS

    url, data = service
    with caplog.at_level(logging.INFO):
        _held_upload(url, TOKENS[1]).close()
        time.sleep(1.0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "client disconnected" in caplog.text
    assert not [p for p in (data / "uploads").rglob("*") if p.is_file()]


def test_an_upload_that_stops_sending_is_refused_and_frees_its_slot(tmp_path, roots, monkeypatch):
    import geo_hires_service.uploads as uploads

    from tests.service.harness import TOKENS

    monkeypatch.setattr(uploads, "STALL_S", 1.0)
    with running_service(tmp_path, (roots,), run_jobs=False) as url:
        held = [_held_upload(url, TOKENS[0]) for _ in range(uploads.MAX_UPLOADS_PER_TENANT)]
        answers = [sock.recv(4096).decode() for sock in held]  # within the socket's 5 s
        for sock in held:
            sock.close()
        assert all(a.startswith("HTTP/1.1 408") for a in answers), answers
        assert "body sent nothing for 1 s" in answers[0]
        scene = (roots / "scene1.tif").read_bytes()
        again = requests.post(
            f"{url}/v1/jobs", files={"scene": ("s.tif", scene)}, headers=ALICE, timeout=10
        )
        assert again.status_code == 202, again.text  # the slots were given back
        import socket
        from urllib.parse import urlsplit

        with socket.create_connection((urlsplit(url).hostname, urlsplit(url).port), 5) as sock:
            sock.sendall(
                f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKENS[0]}\r\n"
                'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"uri": '.encode()
            )
            assert sock.recv(4096).decode().startswith("HTTP/1.1 408")  # a JSON body too


def _trickle(sock, chunk: int, *, every: float, for_s: float) -> bytes:
    """Send ``chunk`` bytes each ``every`` seconds until the service answers (or ``for_s``
    seconds pass); the answer, the socket closed."""
    import contextlib
    import time

    start, answer = time.monotonic(), b""
    try:
        while not answer and time.monotonic() - start < for_s:
            sock.sendall(b"x" * chunk)
            sock.settimeout(every)
            with contextlib.suppress(TimeoutError):
                answer = sock.recv(4096)
    finally:
        sock.close()
    return answer


def test_an_upload_trickling_under_the_minimum_rate_is_refused(tmp_path, roots, monkeypatch):
    """A byte every so often never stalled the body, and held the tenant's slots for good."""
    import geo_hires_service.uploads as uploads

    from tests.service.harness import TOKENS

    monkeypatch.setattr(uploads, "STALL_S", 0.5)
    monkeypatch.setattr(uploads, "MIN_RATE", 1000)
    with running_service(tmp_path, (roots,), run_jobs=False) as url:
        answer = _trickle(_held_upload(url, TOKENS[0]), 10, every=0.1, for_s=5)  # 100 B/s
        assert answer.decode().startswith("HTTP/1.1 408"), answer
        assert "KiB/s after its first 0.5 s; send it again over a faster link" in answer.decode()
        # 2,500 bytes/s, over the minimum: all of it is read (then refused as no TIFF)
        answer = _trickle(_held_upload(url, TOKENS[0], length=3000), 50, every=0.02, for_s=30)
        assert answer and not answer.decode().startswith("HTTP/1.1 408"), answer
