"""``geo-hires cascade`` assembles a bundle from shipped parts: what travels with the parts, and
what stays behind because it was measured on another model."""

from __future__ import annotations

import hashlib

from geo_hires.cli import main
from geo_hires.detect.options import resolve_precision, resolve_zoom
from geo_hires.models.card import bundle_dir, load_card
from geo_hires.train.cascade import CARRIED, make_cascade_bundle


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_cascade_keeps_its_parts_files_and_records_but_none_of_the_scanners_measurements(
    tmp_path,
):
    scanner, refiner = load_card("aircraft_lsn"), load_card("aircraft_yolo")
    measured = {"metrics", "precision", "not_default", "zoom_default_evidence"}
    assert measured <= set(scanner.extra)  # the shipped scanner has them: they must not travel
    assert scanner.extra["precision"]["bf16"]["keeps_ap"]
    card = make_cascade_bundle("aircraft_lsn", "aircraft_yolo", tmp_path / "c", name="c")

    assert {k: card.extra[k] for k in CARRIED} == {k: scanner.extra[k] for k in CARRIED}
    assert set(card.extra) == {*CARRIED, "training"}
    assert resolve_precision("auto", card, "cpu") == "fp32"  # unmeasured: whatever the CPU
    assert resolve_zoom("auto", card) == "all"
    training = card.extra["training"]
    assert training["scanner"] == {"bundle": "aircraft_lsn", **scanner.extra["training"]}
    assert training["refiner"] == {"file": "yolo.pt", **refiner.extra["training"]}
    assert card.cascade is not None and card.cascade.detector == "yolo.pt"
    assert card.levels == scanner.levels and card.name == "c"
    for name, source in [
        ("weights.pt", bundle_dir("aircraft_lsn") / "weights.pt"),
        ("zoom.pt", bundle_dir("aircraft_lsn") / "zoom.pt"),
        ("yolo.pt", bundle_dir("aircraft_yolo") / "yolo.pt"),
    ]:
        assert _sha(tmp_path / "c" / name) == _sha(source)
    assert load_card(tmp_path / "c") == card


def test_a_refiner_given_as_a_weights_file_has_no_training_record_to_carry(tmp_path):
    weights = bundle_dir("aircraft_yolo") / "yolo.pt"
    card = make_cascade_bundle("aircraft_lsn", weights, tmp_path / "c", name="c")
    assert card.extra["training"]["refiner"] == {"file": "yolo.pt"}


def test_the_cascade_command_writes_the_bundle_and_says_where(tmp_path, capsys):
    out = tmp_path / "c"
    argv = ["cascade", "--scanner", "aircraft_lsn", "--refiner", "aircraft_yolo", "--out", str(out)]
    assert main([*argv, "--name", "c", "--gate-threshold", "0.2"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    card = load_card(out)
    assert card.cascade is not None and card.cascade.gate_threshold == 0.2
    assert "metrics" not in card.extra  # scored only when given --images and --labels
