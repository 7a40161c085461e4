"""Training stopped early: by Ctrl-C or SIGTERM (the model so far is kept, marked, and the
interrupt goes on), or by its time budget before its learning-rate schedule ended (said)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from pathlib import Path

import pytest

from geo_hires.export import write_geojson
from geo_hires.models.bundle import load_bundle
from geo_hires.models.card import Level
from geo_hires.scene import Density, SynthSpec, open_scene, write_synthetic
from geo_hires.train import ChipSampler, FitConfig
from geo_hires.train.fit import lr_factor
from geo_hires.train.run import TrainJob, train_bundle

fit_module = importlib.import_module("geo_hires.train.fit")  # the package's `fit` is the function
LEVELS = (Level(name="full", target_gsd_m=0.5, downsample=1),)


def _job(tmp_path: Path, fit: FitConfig) -> TrainJob:
    scenes = []
    for seed in range(3):
        path = tmp_path / f"s{seed}.tif"
        spec = SynthSpec(width=256, height=256, seed=seed, density=Density.DENSE)
        write_geojson(tmp_path / f"s{seed}.geojson", write_synthetic(path, spec), open_scene(path))
        scenes.append(str(path))
    return TrainJob(
        scenes=tuple(scenes), labels=str(tmp_path), out=str(tmp_path / "bundle"), name="t",
        val_fraction=0.34, levels=LEVELS, sampler=ChipSampler(chip=64), fit=fit,
    )  # fmt: skip


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, call: int, exc: KeyboardInterrupt) -> None:
    """Ctrl-C (or the CLI's SIGTERM) arriving during the ``call``-th step."""
    real, calls = fit_module._step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(fit_module, "_step", step)


def test_an_interrupted_training_keeps_its_model_and_the_interrupt_goes_on(tmp_path, monkeypatch):
    """A 20-minute LSN run Ctrl-C'd at its last second was lost whole: no folder at all."""
    from geo_hires.cli import Terminated

    job = _job(tmp_path, FitConfig(steps=50, minutes=5, batch_size=2))
    job = dataclasses.replace(job, out=str(tmp_path / "new" / "deep" / "bundle"))  # made for it
    said: list[str] = []
    _interrupt_at(monkeypatch, 4, Terminated())
    with pytest.raises(Terminated):  # the CLI's own: it exits 143 as before
        train_bundle(job, evaluate=lambda *_: pytest.fail("an interrupted run is not scored"),
                     log=said.append)  # fmt: skip
    card = json.loads((Path(job.out) / "card.json").read_text())
    report = card["training"]["report"]
    assert report["interrupted"] is True and report["steps"] == 3 and "metrics" not in card
    assert said[-1] == (
        f"interrupted after 3 of 50 steps: the model so far is in {job.out} (its card says "
        "so; not scored)"
    )
    assert load_bundle(job.out).network() is not None  # a bundle that loads and runs


def test_an_interrupt_before_a_first_step_keeps_nothing(tmp_path, monkeypatch):
    job = _job(tmp_path, FitConfig(steps=50, minutes=5, batch_size=2))
    interrupt = KeyboardInterrupt()
    _interrupt_at(monkeypatch, 1, interrupt)
    with pytest.raises(KeyboardInterrupt) as got:
        train_bundle(job, evaluate=None, log=lambda _s: None)
    assert got.value is interrupt and not (tmp_path / "bundle").exists()


def test_a_budget_that_ends_training_before_its_schedule_is_said(tmp_path):
    """The default 3600 steps under ``--minutes 2`` on a slow machine stopped at step 71,
    still warming up: the learning rate never decayed, without a word."""
    said: list[str] = []
    job = _job(tmp_path, FitConfig(steps=100, minutes=1e-4, batch_size=2))
    card = train_bundle(job, evaluate=None, log=said.append)
    report = card.extra["training"]["report"]
    assert report["steps"] == 1 and report["interrupted"] is False
    assert report["lr_at_end"] == round(lr_factor(1, 100), 3) == 0.4
    assert said[-1] == (
        "training stopped by its time budget at step 1 of 100, its learning rate still 40% of "
        "its peak (not annealed): give FitConfig.steps=1 or fewer for this budget here, or "
        "more FitConfig.minutes"
    )
    done = train_bundle(_job(tmp_path, FitConfig(steps=3, minutes=5, batch_size=2)),
                        evaluate=None, log=said.append)  # fmt: skip
    assert done.extra["training"]["report"]["lr_at_end"] == 0.0 and "budget" not in said[-1]


def test_the_schedule_is_the_one_the_shipped_scanners_were_trained_with():
    """Warm-up over 5 % of the steps, then cosine decay to 0, by steps alone (a seeded run is
    the same run on any machine): the formula the shipped bundles' runs used, pinned."""
    steps, warm = 3600, 180
    for i in (0, 1, 90, 179, 180, 1000, 1800, 3599, 3600, 4000):
        old = min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps))
        assert lr_factor(i, steps) == old
    assert lr_factor(0, 1) == 1.0 and lr_factor(1, 1) == 0.0
    assert lr_factor(0, 30) == 1.0  # a warm-up of one whole step (30 // 20), not 1.5


def test_an_interrupted_retrain_leaves_the_bundle_there_and_saves_whole_or_not(
    tmp_path, monkeypatch
):
    """A retrain into a good bundle's folder, stopped early, replaced it with its first steps;
    a second Ctrl-C while saving left the new weights under the old card."""
    job = _job(tmp_path, FitConfig(steps=3, minutes=5, batch_size=2))
    train_bundle(job, evaluate=None, log=lambda _s: None)
    good = {p.name: p.read_bytes() for p in (tmp_path / "bundle").iterdir()}
    _interrupt_at(monkeypatch, 3, KeyboardInterrupt())
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        train_bundle(job, evaluate=None, log=said.append)
    assert {p.name: p.read_bytes() for p in (tmp_path / "bundle").iterdir()} == good
    kept = tmp_path / "bundle.interrupted"
    assert said[-1].startswith(f"interrupted after 2 of 3 steps: the model so far is in {kept} ")
    assert json.loads((kept / "card.json").read_text())["training"]["report"]["steps"] == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    _interrupt_at(monkeypatch, 2, KeyboardInterrupt())  # again: the earlier one is replaced
    with pytest.raises(KeyboardInterrupt):
        train_bundle(job, evaluate=None, log=said.append)
    assert json.loads((kept / "card.json").read_text())["training"]["report"]["steps"] == 1
    run_module = importlib.import_module("geo_hires.train.run")  # a second interrupt, in the save
    real_save = run_module.save_bundle

    def interrupted_save(folder, model, card):
        (Path(folder) / "weights.pt").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "save_bundle", interrupted_save)
    _interrupt_at(monkeypatch, 2, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        train_bundle(job, evaluate=None, log=said.append)
    assert {p.name: p.read_bytes() for p in (tmp_path / "bundle").iterdir()} == good
    assert json.loads((kept / "card.json").read_text())["training"]["report"]["steps"] == 1
    (kept / "card.json").unlink()  # OUT.interrupted is somebody's folder now: left as it is
    (kept / "notes.txt").write_text("mine")
    monkeypatch.setattr(run_module, "save_bundle", real_save)
    _interrupt_at(monkeypatch, 2, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        train_bundle(job, evaluate=None, log=said.append)
    assert (kept / "notes.txt").read_text() == "mine" and not (kept / "card.json").exists()
    staged = Path(said[-1].split(" is in ")[1].split(" (")[0])
    assert staged.parent == tmp_path and staged.name.startswith(".bundle.interrupted.")
    assert json.loads((staged / "card.json").read_text())["training"]["report"]["steps"] == 1
