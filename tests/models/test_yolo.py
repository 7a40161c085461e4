"""ultralytics models: loaded only when geo_hires can run them, offline, threads restored."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import geo_hires.models
from geo_hires.errors import ConfigError
from geo_hires.models.yolo import load_yolo, ultralytics_env

WEIGHTS = Path(geo_hires.models.__file__).parent / "weights"


def _save(tmp_path, yaml_name: str) -> str:
    """An untrained model from its yaml, its random weights seeded (the same every run)."""
    with ultralytics_env():
        from ultralytics import YOLO

        torch.manual_seed(0)
        path = tmp_path / yaml_name.replace(".yaml", ".pt")
        YOLO(yaml_name).save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return _save(tmp_path_factory.mktemp("yolo"), "yolov8n.yaml")


CHILD = """
import os, sys
import cv2, numpy as np, torch
before = dict(os.environ)
shown = (np.get_printoptions(), str(torch.tensor([1 / 3])), cv2.getNumThreads())
from geo_hires import load_bundle
load_bundle("aircraft_yolo")  # the first ultralytics import in this process
assert shown == (np.get_printoptions(), str(torch.tensor([1 / 3])), cv2.getNumThreads()), shown
print(sorted(k for k, v in set(os.environ.items()) ^ set(before.items())))
"""


def test_loading_a_yolo_leaves_the_process_as_it_was(tmp_path):
    """Importing ultralytics sets OMP_NUM_THREADS=1 (and more): every subprocess the host
    started afterwards ran single-threaded. It also changed numpy's and torch's print options
    and OpenCV's threads, and wrote a banner to the host's stdout on a fresh machine (a fresh
    TMPDIR here). In a child: this process imported it long ago."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "OMP_"))}
    env["TMPDIR"] = str(tmp_path)  # no ultralytics settings yet: the banner's first time
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "[]", (done.stdout, done.stderr)


def test_a_detect_model_loads_predicts_and_leaves_torch_threads_alone(tiny):
    torch.set_num_threads(2)
    model = load_yolo(tiny)
    assert model.task == "detect" and len(model.class_names) == 80 and model.path == tiny
    assert torch.get_num_threads() == 2  # loading did not change it
    images = [np.random.default_rng(i).integers(0, 255, (256, 256, 3), np.uint8) for i in range(2)]
    out = model.predict(images, imgsz=256, threshold=0.001, threads=2)
    assert len(out) == 2 and all(b.shape[1] == 4 and len(b) == len(s) for b, s, _, _ in out)
    assert torch.get_num_threads() == 2  # ultralytics sets 1; restored


def test_what_cannot_run_is_refused_with_what_to_change(tiny, tmp_path):
    seg = _save(tmp_path, "yolov8n-seg.yaml")
    text = tmp_path / "notes.pt"
    text.write_text("not a model")
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(3)}, plain)
    shipped = WEIGHTS / "aircraft_cascade" / "yolo.pt"
    damaged = tmp_path / "damaged.pt"  # a copy with one byte flipped in its weights
    data = bytearray(Path(tiny).read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    first8 = r"\['0', '1', '2', '3', '4', '5', '6', '7'\]"  # of 80 (a yaml-built model's names)
    for path, kw, message in (
        (
            seg,
            {},
            r"is a 'segment' model; geo_hires runs ultralytics 'detect' and 'obb' models "
            r"\(export or train one of those\)",
        ),
        (text, {}, "is not a PyTorch model file"),
        (damaged, {}, r"damaged.pt is damaged \(its part .* fails its checksum\); copy it again"),
        (plain, {}, r"is not an ultralytics model \(TypeError: "),
        (tmp_path / "missing.pt", {}, "YOLO model not found"),
        (
            tiny,
            {"class_names": ["Airplane"]},
            f"predicts classes {first8}… but its card says "
            r"\['Airplane'\]; fix the card's 'classes'",
        ),
        (shipped, {"class_names": ["aircraft"]}, r"predicts classes \['Airplane'\] but its card"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_yolo(path, **kw)


def test_without_ultralytics_the_message_says_to_reinstall(tiny, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ultralytics", None)  # what a missing package raises
    with pytest.raises(ConfigError, match="YOLO models need ultralytics, a dependency of geo_h"):
        load_yolo(tiny)


def test_ultralytics_env_is_offline_inside_and_restores_the_environment(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("YOLO_OFFLINE", "before")
    monkeypatch.delenv("YOLO_AUTOINSTALL", raising=False)
    monkeypatch.delenv("YOLO_CONFIG_DIR", raising=False)
    torch.set_num_threads(2)
    with ultralytics_env(tmp_path / "cfg") as folder:
        assert folder == tmp_path / "cfg"
        assert (folder / "Ultralytics" / "Arial.ttf").stat().st_size > 1000  # a real font
        assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["YOLO_AUTOINSTALL"] == "0"
        assert os.environ["YOLO_CONFIG_DIR"] == str(folder)
        torch.set_num_threads(1)  # what ultralytics does
    assert torch.get_num_threads() == 2
    assert os.environ["YOLO_OFFLINE"] == "before"
    assert "YOLO_AUTOINSTALL" not in os.environ and "YOLO_CONFIG_DIR" not in os.environ
    import tempfile
    from pathlib import Path

    with ultralytics_env() as default:
        assert default == Path(tempfile.gettempdir()) / "geo-hires-ultralytics"


def test_predictions_are_ultralytics_own_on_the_bgr_image(tiny):
    model = load_yolo(tiny)
    rgb = np.random.default_rng(3).integers(0, 255, (128, 160, 3), np.uint8)
    # an untrained model scores around 1e-4: a tiny threshold still gives boxes
    (pred,) = model.predict([rgb], imgsz=160, threshold=1e-6, threads=2)
    boxes, scores, classes, corners = pred
    assert corners is None and len(boxes) > 10
    assert boxes.dtype == scores.dtype == np.float64 and classes.dtype == np.int64
    with ultralytics_env():
        (bgr,) = model.model.predict([rgb[..., ::-1].copy()], imgsz=160, conf=1e-6, verbose=False)
        (same,) = model.model.predict([rgb], imgsz=160, conf=1e-6, verbose=False)
    np.testing.assert_allclose(boxes, bgr.boxes.xyxy.numpy(), atol=0.01)
    np.testing.assert_allclose(scores, bgr.boxes.conf.numpy(), rtol=1e-4)
    assert classes.tolist() == bgr.boxes.cls.numpy().astype(int).tolist()
    # order matters: an untrained model's boxes can be the whole image either way (this test
    # failed once on unseeded weights), its scores differ
    unflipped = same.boxes.conf.numpy()
    assert unflipped.shape != scores.shape or np.abs(unflipped - scores).max() > 1e-4
    ((fewer, *_),) = model.predict([rgb], imgsz=160, threshold=1e-4, threads=2)
    assert 0 < len(fewer) < len(boxes)  # the threshold is ultralytics' conf


def test_an_obb_model_gives_corners_and_their_envelopes(tmp_path):
    obb = load_yolo(_save(tmp_path, "yolov8n-obb.yaml"))
    assert obb.task == "obb" and len(obb.class_names) == 80
    rgb = np.random.default_rng(4).integers(0, 255, (128, 128, 3), np.uint8)
    ((boxes, scores, classes, corners),) = obb.predict([rgb], imgsz=128, threshold=1e-6, threads=2)
    assert corners is not None and corners.shape == (len(boxes), 4, 2) and len(boxes) > 0
    np.testing.assert_allclose(boxes[:, :2], corners.min(axis=1))
    np.testing.assert_allclose(boxes[:, 2:], corners.max(axis=1))
    assert len(scores) == len(classes) == len(boxes)


def test_a_legacy_torch_file_is_recognised_as_one(tmp_path):
    legacy = tmp_path / "legacy.pt"
    torch.save({"weight": torch.zeros(3)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ConfigError, match="is not an ultralytics model"):
        load_yolo(legacy)  # a PyTorch file (the pickle magic), but not a model
    names = [f"c{i}" for i in range(9)]
    with pytest.raises(ConfigError, match=r"predicts classes \['0', .*'7'\]… but its card says"):
        load_yolo(_save(tmp_path, "yolov8n.yaml"), class_names=names)


def test_a_bare_pt_is_a_one_level_bundle(tiny):
    from pathlib import Path

    from geo_hires.models.bundle import load_bundle, load_pt

    bundle = load_pt(tiny, gsd_m=0.3, window=320, halo=32)
    card, name = bundle.card, Path(tiny).name
    assert card.name == Path(tiny).stem and card.arch is None and card.gsd_m == 0.3
    assert card.score_threshold == 0.25 and card.extra == {"source": str(Path(tiny).resolve())}
    (level,) = card.levels
    assert (level.name, level.target_gsd_m, level.downsample) == ("full", 0.3, 1)
    assert (level.detector, level.window, level.halo) == (name, 320, 32)
    assert card.classes == bundle.model(name).class_names and len(card.classes) == 80
    assert bundle.fcn is None and bundle.files == {name: Path(tiny).read_bytes()}
    assert len(bundle.digest) == 16 and bundle.digest == load_pt(tiny, gsd_m=1.0).digest
    with pytest.raises(ConfigError, match="has no scanning network"):
        bundle.network()
    with pytest.raises(ConfigError, match=r"no ultralytics model 'other\.pt'"):
        bundle.model("other.pt")
    for gsd in (0.0, -1.0, float("nan"), float("inf"), 1000.0, "0.5"):
        with pytest.raises(
            ConfigError,
            match=r"^a bare \.pt needs the metres per pixel it was trained at \(gsd_m\) in "
            r"\(0, 1000\)",
        ):
            load_pt(tiny, gsd_m=gsd)  # type: ignore[arg-type]
    assert load_pt(tiny, gsd_m=np.float32(0.5)).card.gsd_m == 0.5  # numpy's numbers are numbers
    default = load_pt(tiny, gsd_m=0.3).card.levels[0]
    assert (default.window, default.halo) == (640, 96)  # the defaults
    small = [load_pt(tiny, gsd_m=0.3, window=w).card.levels[0].halo for w in (64, 96, 128, 224)]
    assert small == [0, 16, 32, 80]  # a window under 256 was refused for the default halo
    with pytest.raises(ConfigError, match=r"bare ultralytics \.pt, .* load_pt\(path, gsd_m=M\)"):
        load_bundle(tiny)


def test_a_bundle_travels_to_an_actor_as_its_payload():
    from geo_hires.models.bundle import Bundle, load_bundle

    model = load_bundle("aircraft_cascade")
    card = model.card
    payload = model.payload()
    assert payload["digest"] == model.digest and payload["files"] == dict(model.files)
    assert set(payload["files"]) == {"yolo.pt"} and model.policy is not None
    back = Bundle.from_payload(card, payload)
    assert back.digest == model.digest and back.fcn is not None and not back.fcn.training
    assert back.files == model.files and set(back.yolo) == {"yolo.pt"}
    assert back.yolo["yolo.pt"].class_names == card.classes and back.card is card
    for k, v in model.network().state_dict().items():
        assert torch.equal(back.network().state_dict()[k], v)
    assert back.fcn_digest == model.fcn_digest and back.fcn_digest != model.digest
    bare = Bundle.of_network(model.network(), card)
    assert bare.fcn is model.fcn and bare.digest == model.fcn_digest and not bare.yolo
    without = Bundle.from_payload(card, {**payload, "fcn": None})
    assert without.fcn is None and set(without.yolo) == {"yolo.pt"}


def test_the_first_prediction_in_a_process_equals_the_later_ones():
    """ultralytics runs its first call at its own thread count; ours must not (a reused service
    actor gave other bytes than a fresh CLI run)."""
    from ultralytics.utils import NUM_THREADS

    threads = 3 if NUM_THREADS == 2 else 2
    images = [np.random.default_rng(i).integers(0, 255, (320, 320, 3), np.uint8) for i in range(2)]
    model = load_yolo(WEIGHTS / "aircraft_cascade" / "yolo.pt")
    first = model.predict(images, imgsz=320, threshold=0.001, threads=threads)
    again = model.predict(images, imgsz=320, threshold=0.001, threads=threads)
    assert sum(len(s) for _, s, _, _ in first) >= 5
    for (b1, s1, c1, _), (b2, s2, c2, _) in zip(first, again, strict=True):
        assert np.array_equal(b1, b2) and np.array_equal(s1, s2) and np.array_equal(c1, c2)


def test_every_real_call_runs_at_the_callers_threads_after_one_set_up(monkeypatch):
    """The blank set-up call happens once per process and device; the real calls' forward
    passes run at the thread count asked for, not at the one ultralytics picks."""
    model = load_yolo(WEIGHTS / "aircraft_cascade" / "yolo.pt")
    seen: list[tuple[int, int]] = []
    model.model.add_callback(
        "on_predict_batch_start", lambda p: seen.append((p.args.imgsz, torch.get_num_threads()))
    )
    calls = []
    real = model.model.predict
    monkeypatch.setattr(model.model, "predict", lambda *a, **k: calls.append(k) or real(*a, **k))
    images = [np.zeros((320, 320, 3), np.uint8)]
    for threads in (3, 2, 3):
        model.predict(images, imgsz=320, threshold=0.25, threads=threads)
    assert [k["imgsz"] for k in calls] == [32, 320, 320, 320]  # one set-up, then the real calls
    assert [k["device"] for k in calls] == ["cpu"] * 4
    assert [t for size, t in seen if size == 320] == [3, 2, 3]


def test_a_window_smaller_than_imgsz_is_seen_unscaled_as_if_padded_by_hand():
    """ultralytics would scale a 400 px window up to 512 (a scene's corner window): objects at
    1.28x the size the model was trained on. It must see the pixels as they are."""
    import rasterio
    from rasterio.windows import Window

    from geo_hires.models.yolo import PAD

    with rasterio.open(Path(__file__).parents[2] / "demo" / "airports.tif") as src:
        small = src.read(window=Window(300, 300, 400, 400)).transpose(1, 2, 0)  # an apron
    model = load_yolo(WEIGHTS / "aircraft_yolo" / "yolo.pt")
    by_hand = np.full((400, 512, 3), PAD, np.uint8)  # its longer side at imgsz: not scaled
    by_hand[:, :400] = small
    ((boxes, scores, _, _),) = model.predict([small], imgsz=512, threshold=0.25, threads=2)
    ((want, want_scores, _, _),) = model.predict([by_hand], imgsz=512, threshold=0.25, threads=2)
    inside = (want[:, 0] + want[:, 2]) / 2 < 400  # centred on the window, not on the padding
    assert len(boxes) >= 4 and boxes.max() <= 400
    assert np.array_equal(boxes, np.clip(want[inside], 0, 400))
    assert np.array_equal(scores, want_scores[inside])


def test_a_slow_nms_loses_no_image_of_the_batch(tiny, monkeypatch):
    """Past 2 s + 50 ms an image, ultralytics' NMS returned nothing for the batch's other
    images (a many-class model on a busy CPU: 573 detections, then 504, from one command).
    Here its clock runs 100 s a reading, so every batch is "too slow"."""
    import itertools

    from ultralytics.utils import nms

    rgb = np.random.default_rng(5).integers(0, 255, (2, 96, 128, 3), np.uint8)
    model = load_yolo(tiny)
    alone = [model.predict([im], imgsz=128, threshold=1e-6, threads=2)[0] for im in rgb]
    ticks = itertools.count(step=100.0)

    class SlowClock:
        @staticmethod
        def time() -> float:
            return next(ticks)

    monkeypatch.setattr(nms, "time", SlowClock)
    together = model.predict(list(rgb), imgsz=128, threshold=1e-6, threads=2)
    assert next(ticks) > 200  # read after each image: each would have passed the limit
    for one, batch in zip(alone, together, strict=True):
        assert len(one[0]) == len(batch[0]) > 10
        np.testing.assert_allclose(one[0], batch[0], atol=1e-3)  # a batch sums apart
