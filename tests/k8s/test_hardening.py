"""The manifests' and the image's hardening, offline: every container locked down, checkov on
the manifests and the Dockerfile (only the findings ``k8s/checkov-allowed.yaml`` justifies),
hadolint on the Dockerfile, and a ``.dockerignore`` that keeps the image to the package.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.k8s.render import K8S, OVERLAYS, ROOT, Doc, as_pods, cluster_spec, is_ray, render_overlay

pytestmark = pytest.mark.k8s


# ---------------------------------------------------------------- pod security

HARDENED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def test_every_container_is_hardened_and_writes_only_to_volumes(rendered):
    _, docs = rendered
    for doc in filter(is_ray, docs):
        auto = cluster_spec(doc)["autoscalerOptions"]["securityContext"]
        assert {k: auto.get(k) for k in HARDENED} == HARDENED, (doc["kind"], "autoscaler")
    for pod in as_pods(docs):
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"]
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in spec["containers"]:
            ctx = c["securityContext"]
            assert {k: ctx.get(k) for k in HARDENED} == HARDENED, pod["metadata"]["name"]
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert {"/tmp", "/home/ray", "/dev/shm"} <= mounts  # where Ray writes
        if "head" not in pod["metadata"]["name"]:
            assert spec["automountServiceAccountToken"] is False


def test_every_pod_runs_as_an_account_of_the_manifests_and_chowns_no_volume_per_start(rendered):
    """Workload identity (IRSA) is an annotation on a ServiceAccount: a pod running as one that
    KubeRay names after a generated cluster could never get it (the head runs the batch driver
    and the service's runners, which read and write the buckets)."""
    _, docs = rendered
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    for pod in as_pods(docs):
        spec, name = pod["spec"], pod["metadata"]["name"]
        want = "geo-hires-head" if name.endswith("-head") else "geo-hires"
        assert spec.get("serviceAccountName") == want and want in accounts, name
        ctx = spec["securityContext"]
        assert "fsGroup" not in ctx or ctx["fsGroupChangePolicy"] == "OnRootMismatch", name


# ---------------------------------------------------------------- checkov, hadolint


def _tool(name: str) -> str:
    for candidate in (
        ROOT / ".venv-checkov" / "bin" / name,
        Path(sys.executable).parent / name,
    ):
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not found (make test installs it)")
    return found


def _checkov(target: list[str], tmp_path: Path) -> list[Doc]:
    res = subprocess.run(
        [_tool("checkov"), *target, "-o", "json", "--quiet", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        # checkov asks PyPI for a newer version at import unless told not to (netguard caught it)
        env={**_env(), "HOME": str(tmp_path), "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"},
    )
    assert res.returncode in (0, 1), res.stderr[-2000:]
    reports = json.loads(res.stdout or "[]")
    reports = reports if isinstance(reports, list) else [reports]
    return [f for r in reports for f in r.get("results", {}).get("failed_checks", [])]


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_checkov_finds_nothing_but_what_is_justified(tmp_path):
    allowed = yaml.safe_load((K8S / "checkov-allowed.yaml").read_text())
    fired: set[str] = set()
    for overlay in OVERLAYS:
        docs = render_overlay(overlay)
        folder = tmp_path / overlay
        folder.mkdir()
        core = [d for d in docs if not is_ray(d)]
        (folder / "all.yaml").write_text(yaml.safe_dump_all(core + as_pods(docs), sort_keys=False))
        failed = _checkov(["-d", str(folder), "--framework", "kubernetes"], tmp_path)
        for f in failed:
            rule = allowed.get(f["check_id"])
            ok = rule is not None and fnmatch.fnmatch(f["resource"], rule["resources"])
            assert ok, f"{overlay}: {f['check_id']} {f['check_name']} on {f['resource']}"
            fired.add(f["check_id"])
    assert fired == set(allowed), f"allowed but no longer found: {set(allowed) - fired}"
    failed = _checkov(["-f", str(ROOT / "Dockerfile"), "--framework", "dockerfile"], tmp_path)
    assert not failed, [(f["check_id"], f["check_name"]) for f in failed]


def test_hadolint_passes_the_dockerfile():
    res = subprocess.run(
        [_tool("hadolint"), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_would_catch_a_root_image(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    res = subprocess.run(
        [_tool("hadolint"), "--failure-threshold", "info", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0 and "DL3007" in res.stdout


def test_dockerignore_keeps_the_image_to_the_package():
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*")] == "*"
    assert {"!pyproject.toml", "!geo_hires/", "!services/"} <= set(lines)
