"""The manifests as the cluster gets them: each overlay rendered with ``kubectl kustomize``, and
every Ray pod template as the Pod it becomes (so Pod schemas and checks apply to it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("cpu", "gpu", "s3")
KUBECTL = shutil.which("kubectl")

Doc = dict[str, Any]


def render_overlay(overlay: str) -> list[Doc]:
    if KUBECTL is None:
        pytest.skip("kubectl is not on PATH: the kustomize overlays cannot be rendered")
    res = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def is_ray(doc: Doc) -> bool:
    return str(doc["apiVersion"]).startswith("ray.io/")


def cluster_spec(doc: Doc) -> Doc:
    return doc["spec"].get("rayClusterSpec") or doc["spec"]["rayClusterConfig"]


def group_specs(doc: Doc) -> list[tuple[str, Doc]]:
    spec = cluster_spec(doc)
    return [("head", spec["headGroupSpec"])] + [
        (g["groupName"], g) for g in spec["workerGroupSpecs"]
    ]


def as_pods(docs: list[Doc]) -> list[Doc]:
    """Every Ray pod template as the Pod it becomes (so Pod schemas and checks apply)."""
    pods = []
    for doc in filter(is_ray, docs):
        for group, spec in group_specs(doc):
            meta = spec["template"].get("metadata", {})
            pods.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{doc['metadata']['name']}-{group}",
                        "namespace": doc["metadata"].get("namespace", "default"),
                        "labels": meta.get("labels", {}),
                    },
                    "spec": spec["template"]["spec"],
                }
            )
    return pods


def worker_group(doc: Doc) -> tuple[Doc, Doc]:
    (group,) = cluster_spec(doc)["workerGroupSpecs"]
    return group, group["template"]["spec"]["containers"][0]
