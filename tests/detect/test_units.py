"""Work units: the streamed read path equals the whole-level read; resume skips what it claims."""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_hires.detect.executors import LocalExecutor
from geo_hires.detect.journal import Journal, UnitResult, journal_for
from geo_hires.detect.options import DetectConfig
from geo_hires.detect.plan import plan_units
from geo_hires.detect.runner import UnitRunner
from geo_hires.errors import ForeignJournalWarning
from geo_hires.models.bundle import Bundle, load_bundle
from geo_hires.pipeline import detect_scene
from geo_hires.scene import SceneReader, open_scene

CFG = DetectConfig(core=256, batch_size=2, score_threshold=0.05)


@pytest.fixture(scope="module")
def scene_path(synthetic) -> Path:
    # odd sizes: the coarse level's last block reaches past the scene edge at level 0
    return synthetic(1301, 1043, seed=31, nodata=True)


@dataclasses.dataclass
class CountingExecutor:
    """Runs units locally and records the key of every unit it actually computes."""

    computed: list[str] = dataclasses.field(default_factory=list)

    def run_units(self, scene, bundle, units, cfg, *, on_result, read_config):
        def seen(r: UnitResult) -> None:
            self.computed.append(r.key)
            on_result(r)

        LocalExecutor().run_units(
            scene, bundle, units, cfg, on_result=seen, read_config=read_config
        )


@pytest.mark.parametrize("core", [128, 256, 512])
def test_streamed_block_reads_equal_slices_of_the_whole_level(scene_path, core):
    """Levels over the whole-read budget read block by block, halo included, at every level."""
    model = load_bundle("aircraft_lsn")
    scene = open_scene(scene_path)
    whole_cfg = DetectConfig(core=core, batch_size=2)
    stream_cfg = dataclasses.replace(whole_cfg, whole_read_pixels=1)
    units, _ = plan_units(scene, model.card, whole_cfg)
    assert {u.downsample for u in units} == {1, 2}
    with SceneReader(scene) as reader:
        whole = UnitRunner(reader, model, whole_cfg)
        stream = UnitRunner(reader, model, stream_cfg)
        halos = 0
        for unit in units:
            for (b, img_w, ok_w), (b2, img_s, ok_s) in zip(
                whole.read(unit), stream.read(unit), strict=True
            ):
                assert b == b2 and img_s.shape == (3, *b.shape) and ok_s.shape == b.shape
                np.testing.assert_array_equal(ok_s, ok_w)
                np.testing.assert_allclose(img_s, img_w, atol=1e-6)
                halos += (b.x1 - b.x0) * (b.y1 - b.y0) - (b.cx1 - b.cx0) * (b.cy1 - b.cy0)
        assert halos > 0
        assert stream._whole == {}  # nothing was read whole on the streamed runner


@pytest.mark.parametrize("core", [128, 384])
def test_streamed_detection_equals_whole_level_detection(scene_path, core):
    model = load_bundle("aircraft_lsn")
    scene = open_scene(scene_path)
    cfg = dataclasses.replace(CFG, core=core)
    whole = detect_scene(scene, model, config=cfg)
    streamed = detect_scene(scene, model, config=dataclasses.replace(cfg, whole_read_pixels=1))
    assert len(whole.detections) >= 5  # real peaks, at both levels
    assert set(whole.detections.levels.tolist()) == {0, 1}
    np.testing.assert_array_equal(streamed.detections.classes, whole.detections.classes)
    np.testing.assert_allclose(streamed.detections.boxes, whole.detections.boxes, atol=1e-3)
    np.testing.assert_allclose(streamed.detections.scores, whole.detections.scores, atol=1e-5)


def _journalled(scene, net, out, *, cfg=CFG, executor=None, resume=False, on_progress=None):
    """``detect_scene`` with the journal ``run_detect`` would keep beside ``out``."""
    return detect_scene(
        scene,
        net,
        config=cfg,
        executor=executor,
        journal=journal_for(out, scene, net, cfg),
        resume=resume,
        on_progress=on_progress,
    )


def _truncate_journal(path: Path, keep: int) -> None:
    """Keep the header and ``keep`` finished units, then a line cut mid-write by a crash."""
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[: 1 + keep]) + "\n" + lines[1 + keep][:25])


def test_resume_computes_only_the_units_not_journalled(scene_path, tmp_path):
    model = load_bundle("aircraft_lsn")
    scene = open_scene(scene_path)
    out = tmp_path / "out.geojson"
    first = CountingExecutor()
    ref = detect_scene(
        scene, model, config=CFG, executor=first, journal=journal_for(out, scene, model, CFG)
    )
    total = len(first.computed)
    assert total >= 8 and len(ref.detections) > 0
    journal = Path(f"{out}.journal")
    _truncate_journal(journal, keep=total // 2)

    again = CountingExecutor()
    got = _journalled(scene, model, out, executor=again, resume=True)
    assert got.resumed_units == total // 2
    assert len(again.computed) == total - total // 2
    assert set(again.computed).isdisjoint(first.computed[: total // 2])
    np.testing.assert_array_equal(got.detections.boxes, ref.detections.boxes)
    np.testing.assert_array_equal(got.detections.scores, ref.detections.scores)
    # the journal now holds every unit once more: a second resume computes nothing
    idle = CountingExecutor()
    _journalled(scene, model, out, executor=idle, resume=True)
    assert idle.computed == []


def _other_weights(bundle):
    other = copy.deepcopy(bundle.fcn)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    return Bundle.of_network(other.eval(), bundle.card)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ("config", "config_id"),
        ("model", "model, weights"),
        ("plan", "model"),  # the same weights under another card: other units, same keys
        ("scene path", "scene"),
        ("scene file touched", "mtime_ns"),
    ],
)
def test_resume_refuses_a_journal_of_another_run(scene_path, tmp_path, change, field):
    model = load_bundle("aircraft_lsn")
    scene_file = tmp_path / "scene.tif"
    shutil.copy(scene_path, scene_file)
    scene = open_scene(scene_file)
    out = tmp_path / "out.geojson"
    first = CountingExecutor()
    detect_scene(
        scene, model, config=CFG, executor=first, journal=journal_for(out, scene, model, CFG)
    )
    _truncate_journal(Path(f"{out}.journal"), keep=len(first.computed) - 1)

    cfg, net = CFG, model
    if change == "config":
        cfg = dataclasses.replace(CFG, score_threshold=0.06)
    elif change == "model":
        net = _other_weights(model)
    elif change == "plan":
        net = dataclasses.replace(model, card=dataclasses.replace(model.card, gsd_m=0.4))
    elif change == "scene path":
        moved = tmp_path / "moved.tif"
        shutil.copy2(scene_file, moved)  # same bytes and mtime, another path
        scene = open_scene(moved)
    else:
        st = os.stat(scene_file)
        os.utime(scene_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        scene = open_scene(scene_file)
    again = CountingExecutor()
    theirs = Path(f"{out}.journal").read_text()
    with pytest.warns(ForeignJournalWarning) as caught:
        got = _journalled(scene, net, out, cfg=cfg, executor=again, resume=True)
    (message,) = [str(w.message) for w in caught if w.category is ForeignJournalWarning]
    assert f"differs in: {field})" in message and "not resuming from it, starting afresh" in message
    assert "kept as out.geojson.journal.foreign" in message  # the other run's units, not erased
    assert Path(f"{out}.journal.foreign").read_text() == theirs
    assert got.resumed_units == 0
    assert sorted(again.computed) == sorted(first.computed)


@pytest.mark.parametrize("content", ["", "not json\n", '{"identity": 3}\n', "[1, 2]\n"])
def test_an_unreadable_journal_is_not_resumed(scene_path, tmp_path, content):
    model = load_bundle("aircraft_lsn")
    scene = open_scene(scene_path)
    out = tmp_path / "out.geojson"
    Path(f"{out}.journal").write_text(content)
    every = "bands, config_id, model, mtime_ns, scene, size, weights"
    with pytest.warns(ForeignJournalWarning, match=f"differs in: {every}"):
        got = _journalled(scene, model, out, resume=True)
    assert got.resumed_units == 0


def test_bad_lines_of_a_journal_are_run_again_not_fatal(tmp_path):
    """Bytes that are not UTF-8, or a JSON line that is not a whole unit, made every resume
    of the scene fail (a batch said 'failed' on each retry; detect printed a traceback)."""
    journal = Journal(tmp_path / "j", {"scene": "s"})
    journal.start(resume=False)
    unit = UnitResult(key="L0-U0", level=0, boxes=np.zeros((1, 4)), scores=np.ones(1),
                      classes=np.zeros(1, np.int64))  # fmt: skip
    journal.record(unit)
    with journal.path.open("ab") as fh:
        fh.write(b'\xff\xfe\n{"key": "L0-U1", "level": 0}\n')  # cut bytes; no boxes
        fh.write(b'{"key": "L0-U2", "level": 0, "boxes": [1, 2, 3], "scores": [], "classes": []}\n')
        fh.write(b'{"key": "L0-U3", "level": "x", "boxes": [], "scores": [], "classes": []}\n')
        fh.write(b'{"key": "L0-U5", "level": 0, "boxes": [[0, 0, 1, 1]], "scores": [], '
                 b'"classes": [0]}\n')  # rows that disagree: the merge failed  # fmt: skip
        fh.write(b'{"key": "L0-U6", "level": 1e999, "boxes": [], "scores": [], "classes": []}\n')
        fh.write(b'{"key": "L0-U7", "level": 0, "boxes": [[0, 0, 1, 1]], "scores": [1], '
                 b'"classes": [0], "corners": []}\n')  # no corners for its box  # fmt: skip
    journal.record(dataclasses.replace(unit, key="L0-U4"))
    assert sorted(journal.load()) == ["L0-U0", "L0-U4"]
    assert sorted(journal.start(resume=True)) == ["L0-U0", "L0-U4"]  # rewritten without them
    assert len(journal.path.read_text(encoding="utf-8").splitlines()) == 3


def test_a_run_without_resume_says_what_it_discards(tmp_path, recwarn):
    """A forgotten --resume threw an interrupted run's finished units away without a word."""
    from geo_hires.errors import DiscardedJournalWarning

    journal = Journal(tmp_path / "j", {"scene": "s"})
    journal.start(resume=False)
    unit = UnitResult(key="L0-U0", level=0, boxes=np.zeros((0, 4)), scores=np.zeros(0),
                      classes=np.zeros(0, np.int64))  # fmt: skip
    journal.record(unit)
    journal.record(dataclasses.replace(unit, key="L0-U1"))
    assert not recwarn.list
    with pytest.warns(DiscardedJournalWarning, match="had done 2 units of this scene"):
        journal.start(resume=False)
    journal.start(resume=False)  # nothing finished since: nothing to say
    Journal(tmp_path / "j", {"scene": "other"}).start(resume=False)  # another run's: not ours
    assert not [w for w in recwarn.list if w.category is DiscardedJournalWarning]


def test_progress_reports_every_unit_and_can_stop_the_run(scene_path, tmp_path):
    model = load_bundle("aircraft_lsn")
    scene = open_scene(scene_path)
    out = tmp_path / "out.geojson"
    seen: list[tuple[int, int]] = []
    detect_scene(scene, model, config=CFG, on_progress=lambda d, t: seen.append((d, t)))
    total = seen[0][1]
    assert seen == [(i, total) for i in range(total + 1)]

    class Stop(Exception):
        pass

    def stop_at_3(done, _total):
        if done == 3:
            raise Stop

    with pytest.raises(Stop):
        _journalled(scene, model, out, on_progress=stop_at_3)
    rest = CountingExecutor()
    _journalled(scene, model, out, executor=rest, resume=True)
    assert len(rest.computed) == total - 3  # the three finished before the stop were kept


def test_overlapping_thread_settings_restore_the_callers_when_the_last_ends():
    """Two runs on two threads, each restoring what it found, left the process at the first
    one's count: A (2) in, B (3) in, A out (back to the caller's 1), B out (back to 2)."""
    import threading

    import torch

    from geo_hires.detect.executors import torch_threads

    caller = torch.get_num_threads()
    torch.set_num_threads(1)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a() -> None:
        with torch_threads(2):
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def b() -> None:
        a_in.wait(10)
        with torch_threads(3):
            b_in.set()
            a_out.wait(10)

    try:
        runs = [threading.Thread(target=a), threading.Thread(target=b)]
        for t in runs:
            t.start()
        for t in runs:
            t.join(20)
        fresh: list[int] = []  # what the next thread (a reader, the next run) starts with
        seen = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
        seen.start()
        seen.join(10)
        assert (torch.get_num_threads(), fresh) == (1, [1])
    finally:
        torch.set_num_threads(caller)
