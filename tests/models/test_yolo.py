"""ultralytics models: loaded only when geo_hires can run them, offline, threads restored."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geo_hires.errors import ConfigError
from geo_hires.models.yolo import load_yolo, ultralytics_env


def _save(tmp_path, yaml_name: str) -> str:
    with ultralytics_env():
        from ultralytics import YOLO

        path = tmp_path / yaml_name.replace(".yaml", ".pt")
        YOLO(yaml_name).save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return _save(tmp_path_factory.mktemp("yolo"), "yolov8n.yaml")


def test_a_detect_model_loads_predicts_and_leaves_torch_threads_alone(tiny):
    torch.set_num_threads(2)
    model = load_yolo(tiny)
    assert model.task == "detect" and len(model.class_names) == 80
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
    for path, kw, message in (
        (seg, {}, "is a 'segment' model; geo_hires runs ultralytics 'detect' and 'obb'"),
        (text, {}, "is not a PyTorch model file"),
        (plain, {}, "is not an ultralytics model"),
        (tmp_path / "missing.pt", {}, "YOLO model not found"),
        (tiny, {"class_names": ["Airplane"]}, "fix the card's 'classes'"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_yolo(path, **kw)
