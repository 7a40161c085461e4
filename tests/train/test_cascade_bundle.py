"""``geo-hires cascade`` assembles a bundle from shipped parts: what travels with the parts, and
what stays behind because it was measured on another model."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys

import pytest

from geo_hires.cli import main
from geo_hires.detect.options import resolve_precision, resolve_zoom
from geo_hires.errors import ConfigError
from geo_hires.models.card import CascadeRule, bundle_dir, load_card, update_card
from geo_hires.train.cascade import CARRIED, make_cascade_bundle


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_cascade_keeps_its_parts_files_and_records_but_none_of_the_scanners_measurements(
    tmp_path, monkeypatch
):
    scanner, refiner = load_card("aircraft_lsn"), load_card("aircraft_yolo")
    measured = {"metrics", "precision", "not_default", "zoom_default_evidence"}
    assert measured <= set(scanner.extra)  # the shipped scanner has them: they must not travel
    assert scanner.extra["precision"]["bf16"]["keeps_ap"]
    monkeypatch.setattr(sys, "argv", ["geo-hires", "cascade", "--name", "my cascade"])
    out = tmp_path / "deep" / "er" / "c"
    card = make_cascade_bundle("aircraft_lsn", "aircraft_yolo", out, name="c")

    assert {k: card.extra[k] for k in CARRIED} == {k: scanner.extra[k] for k in CARRIED}
    assert set(card.extra) == {*CARRIED, "training"}
    assert resolve_precision("auto", card, True) == "fp32"  # unmeasured: whatever the device
    assert resolve_zoom("auto", card) == "all"
    assert card.extra["training"] == {
        "scanner": {"bundle": "aircraft_lsn", **scanner.extra["training"]},
        "refiner": {"file": "yolo.pt", **refiner.extra["training"]},
        "class_map": {"Truncated_airplane": "Airplane"},
        "command": "geo-hires cascade --name 'my cascade'",
    }
    assert card.cascade == CascadeRule(detector="yolo.pt")
    assert card.levels == scanner.levels and card.name == "c"
    for name, source in [
        ("weights.pt", bundle_dir("aircraft_lsn") / "weights.pt"),
        ("zoom.pt", bundle_dir("aircraft_lsn") / "zoom.pt"),
        ("yolo.pt", bundle_dir("aircraft_yolo") / "yolo.pt"),
    ]:
        assert _sha(out / name) == _sha(source)
    assert load_card(out) == card


def test_a_cascade_reassembles_in_place_with_its_rule_naming_the_refiner_it_copied(tmp_path):
    rule = CascadeRule(detector="elsewhere.pt", window=128, gate_threshold=0.2, margin=8)
    make_cascade_bundle("aircraft_lsn", "aircraft_yolo", tmp_path / "c", name="c")
    card = make_cascade_bundle("aircraft_lsn", "aircraft_yolo", tmp_path / "c", name="c", rule=rule)
    assert card.cascade == CascadeRule(detector="yolo.pt", window=128, gate_threshold=0.2, margin=8)
    assert load_card(tmp_path / "c") == card


def _unrecorded(name: str, folder):
    shutil.copytree(bundle_dir(name), folder)
    doc = json.loads((folder / "card.json").read_text())
    del doc["training"]
    (folder / "card.json").write_text(json.dumps(doc))
    return folder


def test_parts_without_training_records_give_a_cascade_with_empty_ones(tmp_path):
    lsn = _unrecorded("aircraft_lsn", tmp_path / "lsn")
    for refiner in (_unrecorded("aircraft_yolo", tmp_path / "yolo"),
                    bundle_dir("aircraft_yolo") / "yolo.pt"):  # a bare file: no card  # fmt: skip
        card = make_cascade_bundle(lsn, refiner, tmp_path / "c", name="c")
        training = card.extra["training"]
        assert training["scanner"] == {"bundle": "aircraft_lsn"}
        assert training["refiner"] == {"file": "yolo.pt"}
        assert training["class_map"] == {}


def test_a_refiner_without_yolo_weights_is_refused_naming_the_option(tmp_path):
    with pytest.raises(ConfigError, match=r"^--refiner aircraft_lsn: that bundle has no YOLO"):
        make_cascade_bundle("aircraft_lsn", "aircraft_lsn", tmp_path / "c", name="c")
    with pytest.raises(ConfigError, match=r"^--refiner .*gone\.pt: no such file"):
        make_cascade_bundle("aircraft_lsn", tmp_path / "gone.pt", tmp_path / "c", name="c")


def test_the_cascade_command_writes_the_bundle_and_says_where(tmp_path, capsys):
    out = tmp_path / "c"
    argv = ["cascade", "--scanner", "aircraft_lsn", "--refiner", "aircraft_yolo", "--out", str(out)]
    assert main([*argv, "--name", "c", "--gate-threshold", "0.2"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    card = load_card(out)
    assert card.cascade is not None and card.cascade.gate_threshold == 0.2
    assert "metrics" not in card.extra  # scored only when given --images and --labels
    assert main([*argv, "--images", str(tmp_path)]) == 2  # scoring needs both: not a silent skip
    assert "--images and --labels together" in capsys.readouterr().err


def test_a_cascade_is_not_written_over_its_scanner(tmp_path, capsys):
    scanner = tmp_path / "lsn"
    shutil.copytree(bundle_dir("aircraft_lsn"), scanner)
    rc = main(["cascade", "--scanner", str(scanner), "--refiner", "aircraft_yolo",
               "--out", str(scanner)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"geo-hires: error: --out {scanner}: that is the scanner")


def test_parts_that_cannot_make_a_cascade_are_refused_before_any_file(tmp_path, capsys):
    """A cascade as scanner lost its refiner's split (train-zoom then failed on the bundle);
    a refiner of other classes made a bundle detect refused; one of another GSD ran at the
    scanner's."""
    other_classes, coarse = tmp_path / "cars", tmp_path / "coarse"
    shutil.copytree(bundle_dir("aircraft_lsn"), other_classes)
    update_card(other_classes, {"classes": ["car"]})
    shutil.copytree(bundle_dir("aircraft_yolo"), coarse)
    card = json.loads((coarse / "card.json").read_text())
    update_card(
        coarse, {"gsd_m": 1.0, "levels": [{**lv, "target_gsd_m": 1.0} for lv in card["levels"]]}
    )
    cases = [
        ("aircraft_cascade", "aircraft_yolo", "--scanner aircraft_cascade: a cascade"),
        ("aircraft_yolo", "aircraft_yolo", "--scanner aircraft_yolo: not a scanning network"),
        (str(other_classes), "aircraft_yolo", "predicts classes ['Airplane'], the scanner ['car']"),
        ("aircraft_lsn", str(coarse), "--refiner: trained at 1 m, the scanner at 0.5 m"),
    ]
    for scanner, refiner, says in cases:
        out = tmp_path / "out"
        rc = main(["cascade", "--scanner", scanner, "--refiner", refiner, "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and says in err[0], err
        assert not out.exists()


def test_scoring_on_images_the_refiner_trained_on_is_refused(tmp_path, capsys):
    """The score was taken on the scanner's validation images even where the refiner had
    trained on them: a leaked validation, in the card as the cascade's quality."""
    leaky = tmp_path / "leaky"
    shutil.copytree(bundle_dir("aircraft_yolo"), leaky)
    card = json.loads((leaky / "card.json").read_text())
    seen = [*card["training"]["train_images"], *load_card("aircraft_lsn").val_images[:2]]
    update_card(leaky, {"training": {**card["training"], "train_images": seen}})
    out = tmp_path / "out"
    argv = ["cascade", "--scanner", "aircraft_lsn", "--refiner", str(leaky), "--out", str(out),
            "--images", str(tmp_path), "--labels", str(tmp_path / "l.csv")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the refiner trained on 2 of the scanner's validation images" in err[0]
    assert not out.exists()
    bare = bundle_dir("aircraft_yolo") / "yolo.pt"  # a refiner without a card: nothing known
    argv[4] = str(bare)
    assert main(argv) == 2  # then scored, where these images are missing
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scene not found" in err[0], err


def test_a_refiner_measured_to_find_nothing_is_said_to(tmp_path):
    """A one-epoch YOLO (its card: AP50 0.0, no detection) made a cascade that confirmed no
    candidate, kept them all at half their score, and said nothing."""
    import warnings

    from geo_hires.errors import WeakPartWarning

    weak = tmp_path / "weak"
    shutil.copytree(bundle_dir("aircraft_yolo"), weak)
    update_card(weak, {"metrics": {"ap50": 0.0, "n_pred": 0}})
    with pytest.warns(WeakPartWarning) as said:
        make_cascade_bundle("aircraft_lsn", weak, tmp_path / "c", name="c")
    assert [str(w.message) for w in said] == [
        "--refiner aircraft_yolo: its card measured AP50 0.000 (0 detections on its validation "
        "images): it would confirm no candidate; train it longer"
    ]
    update_card(weak, {"metrics": {"ap50": 0.0499}})
    with pytest.warns(WeakPartWarning, match=r"AP50 0\.050 \(\? detections"):
        make_cascade_bundle("aircraft_lsn", weak, tmp_path / "c", name="c")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shipped refiner, one at the edge, one unmeasured
        make_cascade_bundle("aircraft_lsn", "aircraft_yolo", tmp_path / "d", name="d")
        update_card(weak, {"metrics": {"ap50": 0.05}})
        make_cascade_bundle("aircraft_lsn", weak, tmp_path / "c", name="c")
        update_card(weak, {"metrics": None})
        make_cascade_bundle("aircraft_lsn", weak, tmp_path / "c", name="c")
