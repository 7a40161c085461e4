"""Bundles: what a folder must hold, the identity of its weights, saving, and the payload an
actor rebuilds it from, for a bundle without a scanning network too."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_hires.errors import ConfigError
from geo_hires.models.bundle import Bundle, load_bundle, save_bundle
from geo_hires.models.card import bundle_dir, load_card, save_card, update_card


def _copy(name: str, tmp_path: Path) -> Path:
    folder = tmp_path / name
    shutil.copytree(bundle_dir(name), folder)
    return folder


def _edit_card(folder: Path, **changes) -> None:
    card = json.loads((folder / "card.json").read_text())
    card.update(changes)
    (folder / "card.json").write_text(json.dumps(card))


def test_a_bundle_folder_must_hold_what_its_card_names(tmp_path):
    cascade = load_bundle("aircraft_cascade")
    assert list(cascade.yolo) == ["yolo.pt"] and cascade.model("yolo.pt").task == "detect"
    assert cascade.fcn is not None and cascade.policy is not None
    missing = _copy("aircraft_cascade", tmp_path)
    (missing / "yolo.pt").unlink()
    with pytest.raises(ConfigError, match=r"the card needs 'yolo.pt', which is not in the folder"):
        load_bundle(missing)
    renamed = _copy("aircraft_yolo", tmp_path / "b")
    _edit_card(renamed, classes=["aircraft"])
    with pytest.raises(ConfigError, match=r"predicts classes \['Airplane'\] but its card says"):
        load_bundle(renamed)


def test_a_bundle_without_a_scanning_network_says_so_and_travels(tmp_path, monkeypatch):
    yolo = load_bundle("aircraft_yolo")
    assert yolo.fcn is None and yolo.policy is None
    with pytest.raises(ConfigError, match=r"^this bundle has no scanning network \('arch'"):
        yolo.network()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where an actor's copies go
    back = Bundle.from_payload(yolo.card, yolo.payload())
    assert back.fcn is None and back.digest == yolo.digest and list(back.yolo) == ["yolo.pt"]
    assert not list(tmp_path.glob("geo-hires-models-*"))  # no 6 MB copy left per actor
    image = np.zeros((256, 256, 3), np.uint8)
    (found,) = back.model("yolo.pt").predict([image], imgsz=256, threshold=0.25, threads=1)
    assert len(found[0]) == 0  # it runs (no box on a black image), its file gone


def test_the_digest_is_the_identity_of_every_weight(tmp_path):
    assert load_bundle("aircraft_lsn").digest == load_bundle("aircraft_lsn").digest
    touched = _copy("aircraft_lsn", tmp_path)
    state = torch.load(touched / "weights.pt", weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1e-3
    torch.save(state, touched / "weights.pt")
    with pytest.raises(ConfigError, match=r"zoom\.pt was trained on the evidence of another"):
        load_bundle(touched)  # the policy knows the network it was trained for
    _edit_card(touched, zoom_policy=None)
    assert load_bundle(touched).digest != load_bundle("aircraft_lsn").digest
    cascade = load_bundle("aircraft_cascade")
    other = _copy("aircraft_cascade", tmp_path / "c")
    (other / "yolo.pt").write_bytes(bundle_dir("aircraft_yolo").joinpath("yolo.pt").read_bytes())
    assert load_bundle(other).digest == cascade.digest  # the same YOLO bytes (shipped twice)
    with (other / "yolo.pt").open("ab") as fh:
        fh.write(b"\0")  # a zip with trailing bytes still loads; its bytes differ
    assert load_bundle(other).digest != cascade.digest


def test_save_bundle_makes_its_folder_and_overwrites_an_earlier_save(tmp_path):
    lsn = load_bundle("aircraft_lsn")
    card = dataclasses.replace(lsn.card, extra={"training": lsn.card.extra["training"]})
    deep = tmp_path / "runs" / "today" / "bundle"
    assert save_bundle(deep, lsn.network(), card) == deep
    assert save_bundle(deep, lsn.network(), card) == deep  # again, into the same folder
    assert load_bundle(deep).digest == lsn.fcn_digest  # no other files: the network alone


def test_the_identity_changes_with_whatever_decides_the_units_and_nothing_else():
    """Journals resume on it: a bare .pt under another --model-gsd or --window has the same
    weights (digest) but other units; the zoom policy decides which fine units exist."""
    from geo_hires.models.bundle import load_pt

    lsn = load_bundle("aircraft_lsn")
    assert lsn.identity == load_bundle("aircraft_lsn").identity  # stable across loads
    assert dataclasses.replace(lsn, policy=None).identity != lsn.identity
    measured = dataclasses.replace(lsn.card, extra={**lsn.card.extra, "metrics": {}})
    assert dataclasses.replace(lsn, card=measured).identity == lsn.identity  # records only
    pt = bundle_dir("aircraft_yolo") / "yolo.pt"
    runs = [load_pt(pt, gsd_m=0.3), load_pt(pt, gsd_m=0.6), load_pt(pt, gsd_m=0.3, window=1024)]
    assert len({b.digest for b in runs}) == 1 and len({b.identity for b in runs}) == 3


def test_update_card_sets_entries_and_keeps_those_this_version_does_not_know(tmp_path):
    shutil.copytree(bundle_dir("aircraft_lsn"), tmp_path / "b")
    doc = json.loads((tmp_path / "b" / "card.json").read_text())
    doc["from_a_later_version"] = {"kept": [1, 2]}
    (tmp_path / "b" / "card.json").write_text(json.dumps(doc))
    path = update_card(tmp_path / "b", {"metrics": {"ap50": 1.0}, "new": "x"})
    assert path == tmp_path / "b" / "card.json"
    text = path.read_text()
    assert json.loads(text) == {**doc, "metrics": {"ap50": 1.0}, "new": "x"}
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"  # stable
    assert load_card(tmp_path / "b").extra["new"] == "x"
    card = load_card(tmp_path / "b")
    assert save_card(tmp_path / "new" / "deep", card) == tmp_path / "new" / "deep" / "card.json"
    assert load_card(tmp_path / "new" / "deep") == card


class _NotATensor:
    """What a pickle could carry besides tensors (its unpickling could run code)."""


def test_weights_that_are_missing_unsafe_broken_or_of_another_network_are_refused(tmp_path):
    good = torch.load(bundle_dir("aircraft_lsn") / "weights.pt", weights_only=True)
    first = next(iter(good))
    cases = {
        "missing": None,
        "garbage": b"not a torch file",
        "pickled object": {**good, "extra": _NotATensor()},
        "another shape": {**good, first: torch.zeros(3)},
    }
    messages = {
        "missing": r"weights\.pt not found: a card with an 'arch' needs its network's weights",
        "garbage": r"weights\.pt is not a weights file torch loads \(.+\); save the",
        "pickled object": r"weights\.pt holds objects other than tensors, which geo_hires does",
        "another shape": r"weights\.pt does not fit the card's 'arch' \(Error\(s\) in loading",
    }
    for name, content in cases.items():
        folder = _copy("aircraft_lsn", tmp_path / name.replace(" ", "_"))
        _edit_card(folder, zoom_policy=None)
        weights = folder / "weights.pt"
        weights.unlink()
        if isinstance(content, bytes):
            weights.write_bytes(content)
        elif content is not None:
            torch.save(content, weights)
        with pytest.raises(ConfigError, match=messages[name]):
            load_bundle(folder)
