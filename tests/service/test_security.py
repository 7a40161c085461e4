"""The service's gatekeeping: tokens as tenants, scene URIs confined to allowed roots."""

from __future__ import annotations

import os
import shutil

import pytest
from geo_hires_service.security import Rejected, is_tiff, load_tokens, resolve_scene_uri

from geo_hires.errors import ConfigError

ALICE, BOB = "alice-token-0123456789", "bob-token-9876543210ab"


def test_tokens_are_tenants(tmp_path):
    f = tmp_path / "tokens"
    f.write_text(f"# one token per line\n{ALICE}\n\n{BOB}\n")
    tokens = load_tokens(f)
    a, b = tokens.tenant(f"Bearer {ALICE}"), tokens.tenant(f"Bearer {BOB}")
    assert a and b and a != b and ALICE not in a
    assert tokens.tenant(None) is None
    assert tokens.tenant(ALICE) is None  # no "Bearer "
    assert tokens.tenant(f"Bearer {ALICE}x") is None
    assert tokens.tenant(f"Bearer {ALICE[:-1]}") is None
    assert load_tokens(env={"GEO_HIRES_TOKENS": f"{ALICE},{BOB}"}).tenant(f"Bearer {BOB}") == b
    assert load_tokens(env={"GEO_HIRES_TOKEN_FILE": str(f)}).tenant(f"Bearer {ALICE}") == a


def test_token_configuration_errors(tmp_path):
    with pytest.raises(ConfigError, match="no API token"):
        load_tokens(env={})
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(ConfigError, match="at least 16"):
        load_tokens(tmp_path / "short")
    with pytest.raises(ConfigError, match="cannot read the token file"):
        load_tokens(tmp_path / "missing")


@pytest.fixture
def root(tmp_path, fixtures):
    r = tmp_path / "root"
    r.mkdir()
    shutil.copy(fixtures / "RGB.byte.tif", r / "good.tif")
    return r


@pytest.mark.parametrize(
    ("uri", "status", "match"),
    [
        ("", 400, "non-empty"),
        ("/vsicurl/http://example.com/a.tif", 400, "virtual file"),
        ("vrt:///data/a.tif?bands=1", 400, "plain local path"),
        ("https://example.com/a.tif", 400, "plain local path"),
        ("GTIFF_RAW:/data/a.tif", 400, "plain local path"),
        ('NETCDF:"/data/a.nc":var', 400, "plain local path"),
        ("relative/a.tif", 400, "absolute"),
        ("{root}/../root/good.tif", 400, "'..'"),
        ("{root}/scene.vrt", 400, "VRT"),
        ("{root}/missing.tif", 404, "no such file"),
        ("{root}/text.tif", 415, "only GeoTIFF"),
        ("{root}/escape.tif", 400, "outside the allowed roots"),
        ("{other}/good.tif", 400, "outside the allowed roots"),
        ("{other}/missing.tif", 400, "outside the allowed roots"),  # not 404: no disk oracle
        ("/root/.ssh/id_rsa", 400, "outside the allowed roots"),  # not 'Permission denied'
        ("{root}", 400, "must name a file"),
    ],
)
def test_scene_uris_outside_the_rules_are_refused(root, tmp_path, uri, status, match):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(root / "good.tif", other / "good.tif")
    (root / "text.tif").write_text("not a tiff")
    (root / "scene.vrt").write_text("<VRTDataset/>")
    os.symlink(other / "good.tif", root / "escape.tif")  # a link out of the root
    with pytest.raises(Rejected, match=match) as err:
        resolve_scene_uri(uri.format(root=root, other=other), [root])
    assert err.value.status == status


def test_a_tiff_under_a_root_resolves_to_its_real_path(root, tmp_path):
    os.symlink(root / "good.tif", root / "alias.tif")  # links inside the root are fine
    os.symlink(root, tmp_path / "linked-root")  # and a root named through a link
    linked = [tmp_path / "linked-root"]
    assert resolve_scene_uri(str(root / "good.tif"), linked) == root / "good.tif"
    assert resolve_scene_uri(str(linked[0] / "good.tif"), linked) == root / "good.tif"
    assert resolve_scene_uri(str(root / "alias.tif"), [tmp_path / "x", root]) == root / "good.tif"
    assert is_tiff(b"II*\x00rest") and is_tiff(b"MM\x00+") and not is_tiff(b"%PDF")
