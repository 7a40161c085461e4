"""Kubernetes manifests, validated offline.

Every overlay is rendered with ``kubectl kustomize``; core kinds (and every Ray pod template,
as a Pod) are validated with ``kubernetes-validate`` in strict mode; ``ray.io`` kinds against
the KubeRay v1.7 CRD schemas with unknown fields refused; ``serveConfigV2`` with Ray Serve's
own schema, its application built, and compared with the service's ``serve_config.yaml``;
every ``geo-hires`` command line with the CLI's parser; requests and limits against the
measured sizing. Pod security, checkov and hadolint: ``test_hardening.py``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.render import (
    K8S,
    ROOT,
    Doc,
    as_pods,
    cluster_spec,
    is_ray,
    render_overlay,
    worker_group,
)

pytestmark = pytest.mark.k8s

SCHEMAS = ROOT.parent / "shared" / "k8s-schemas"
K8S_VERSION = "1.32.0"


# ---------------------------------------------------------------- core kinds, strict


def test_core_kinds_and_pod_templates_are_valid_in_strict_mode(rendered):
    import kubernetes_validate

    overlay, docs = rendered
    core = [d for d in docs if not is_ray(d)]
    kinds = {"ServiceAccount", "NetworkPolicy"} | (
        {"ConfigMap"} if overlay == "s3" else {"PersistentVolumeClaim"}
    )
    assert {d["kind"] for d in core} == kinds
    assert not [d for d in docs if d["kind"] == "Secret"]  # no secret is ever rendered
    for doc in docs:  # k8s/README.md applies the batch or the service part with -l selectors
        component = doc["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        assert component in ("shared", "batch", "service"), doc["metadata"]["name"]
    for doc in core + as_pods(docs):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_secret_template_is_valid_and_holds_no_secret():
    import kubernetes_validate

    docs = list(yaml.safe_load_all((K8S / "base" / "secrets.example.yaml").read_text()))
    assert {d["metadata"]["name"] for d in docs} == {
        "geo-hires-tokens",
        "geo-hires-db",
        "geo-hires-s3",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert all("REPLACE" in v for v in doc["stringData"].values())


def test_strict_validation_refuses_a_misspelt_field(rendered):
    import kubernetes_validate

    pod = copy.deepcopy(as_pods(rendered[1])[0])
    pod["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


# ---------------------------------------------------------------- ray.io kinds vs the CRDs


def _closed(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists its fields (as the API server's
    structural pruning would drop them — here they are errors)."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def _crd_validator(kind: str) -> Any:
    import jsonschema

    if not SCHEMAS.is_dir():
        pytest.skip(f"KubeRay CRD schemas not found at {SCHEMAS}")
    crd = yaml.safe_load((SCHEMAS / f"ray.io_{kind.lower()}s.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(_closed(version["schema"]["openAPIV3Schema"]))


def test_ray_kinds_match_the_kuberay_crds_with_unknown_fields_refused(rendered):
    overlay, docs = rendered
    ray_docs = [d for d in docs if is_ray(d)]
    expected = ["RayJob"] if overlay == "s3" else ["RayJob", "RayService"]
    assert sorted(d["kind"] for d in ray_docs) == expected
    for doc in ray_docs:
        errors = [e.message for e in _crd_validator(doc["kind"]).iter_errors(doc)]
        assert not errors, (doc["kind"], errors[:5])


def test_the_crd_check_catches_unknown_and_mistyped_fields(rendered):
    (job,) = [d for d in rendered[1] if d["kind"] == "RayJob"]
    validator = _crd_validator("RayJob")
    for path, value in (
        (("spec", "shutdownAfterJobFinish"), True),  # misspelt
        (("spec", "rayClusterSpec", "headGroupSpec", "rayStartParams", "num-cpus"), 0),  # int
        (("spec", "backoffLimit"), "2"),
    ):
        bad = copy.deepcopy(job)
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        assert list(validator.iter_errors(bad)), path


# ---------------------------------------------------------------- serveConfigV2


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "k8s_serve_config", ROOT / "scripts" / "k8s_serve_config.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_serve_configs_are_current():
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "k8s_serve_config.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr


def test_serve_config_v2_is_the_services_config_and_builds(rendered, monkeypatch):
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    overlay, docs = rendered
    services = [d for d in docs if d["kind"] == "RayService"]
    if overlay == "s3":  # batch only: the service needs the shared volume
        assert not services
        return
    (svc,) = services
    doc = yaml.safe_load(svc["spec"]["serveConfigV2"])
    schema = ServeDeploySchema.model_validate(doc)
    source = yaml.safe_load(
        (ROOT / "services" / "geo_hires_service" / "serve_config.yaml").read_text()
    )
    gen = _generator()
    overrides = {**gen.CLUSTER_ARGS, **{"cpu": {}, "gpu": {"actor_gpus": 0.25}}[overlay]}
    assert overrides["runner_replicas"] >= 2  # the RayService scales its runners
    expected = copy.deepcopy(source["applications"])
    for app in expected:
        app["args"].update(overrides)
    assert doc["applications"] == expected  # the same application, args and all
    assert doc["http_options"] == {"host": "0.0.0.0", "port": 8000}
    assert gen.serve_config(overrides) == doc
    from geo_hires_service.uploads import MAX_UPLOADS

    head = cluster_spec(svc)["headGroupSpec"]["template"]["spec"]["containers"][0]
    held = MAX_UPLOADS * 2.3 * doc["applications"][0]["args"]["max_upload_bytes"] / 2**30
    assert held + 1.0 <= _gib(head["resources"]["limits"]["memory"])  # uploads held by Serve
    # the pods' store is PostgreSQL (the mounted Secret); several runners need one
    monkeypatch.setenv("GEO_HIRES_DB", "postgresql://geo@db.example/jobs")
    for app in schema.applications:
        module, _, name = app.import_path.partition(":")
        build = getattr(__import__(module, fromlist=[name]), name)
        assert isinstance(build(app.args), Application)


# ---------------------------------------------------------------- command lines


def _volumes_mounted(doc: Doc) -> set[str]:
    head = cluster_spec(doc)["headGroupSpec"]["template"]["spec"]["containers"][0]
    return {m["mountPath"] for m in head.get("volumeMounts", [])}


def test_every_command_line_parses_with_the_cli_and_fits_the_cluster(rendered):
    from geo_hires.cli import _parser

    overlay, docs = rendered
    (job,) = [d for d in docs if d["kind"] == "RayJob"]
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "geo-hires"
    args = _parser().parse_args(argv[1:])
    assert args.command == "batch" and args.executor == "ray" and args.address == "auto"
    assert args.resume, "a retried RayJob must continue, not start over"
    mounts = _volumes_mounted(job)
    for path in (args.list, args.out_dir):
        if overlay == "s3":  # journals and status files in the bucket: a new cluster finds them
            assert path.startswith("s3://"), path
        else:
            assert any(Path(path).is_relative_to(m) for m in mounts), path
    group, worker = worker_group(job)
    limits = worker["resources"]["limits"]
    cpus, gpus = float(limits["cpu"]), float(limits.get("nvidia.com/gpu", 0))
    assert args.threads <= args.cpus_per_actor, "torch threads beyond the CPUs Ray reserves"
    per_pod = int(cpus // args.cpus_per_actor)
    if gpus:
        assert args.gpus_per_actor and per_pod * args.gpus_per_actor <= gpus
    else:
        assert not args.gpus_per_actor
    assert args.actors == per_pod * group["maxReplicas"], "actors should fill the largest cluster"
    for doc in docs:  # no other command line hides in a container
        for pod in as_pods([doc]) if is_ray(doc) else []:
            for c in pod["spec"]["containers"]:
                assert "command" not in c and "args" not in c


def test_a_bad_command_line_would_be_caught():
    from geo_hires.cli import _parser

    with pytest.raises(SystemExit):
        _parser().parse_args(shlex.split("batch /data/scenes.txt --out-dir /o --executor spark"))


# ---------------------------------------------------------------- object storage (overlays/s3)


def test_the_s3_overlay_has_no_volume_and_credentials_only_as_a_mounted_file():
    assert '".[service,s3]"' in (ROOT / "Dockerfile").read_text()  # boto3 in the image
    docs = render_overlay("s3")
    pods = as_pods(docs)
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    creds_file = config["data"]["AWS_SHARED_CREDENTIALS_FILE"]
    assert not [k for k in config["data"] if "SECRET" in k or k == "AWS_ACCESS_KEY_ID"]
    for pod in pods:
        spec = pod["spec"]
        assert not [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
        (aws,) = [v for v in spec["volumes"] if "secret" in v]
        assert aws["secret"]["secretName"] == "geo-hires-s3"
        for c in spec["containers"]:
            (mount,) = [m for m in c["volumeMounts"] if m["name"] == aws["name"]]
            assert mount["readOnly"] and creds_file.startswith(mount["mountPath"] + "/")
            assert c["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
            assert not [e for e in c.get("env", []) if e["name"].startswith("AWS_")]


def test_the_s3_overlays_egress_reaches_only_the_cluster_dns_and_storage():
    docs = render_overlay("s3")
    egress = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"
              and "Egress" in d["spec"]["policyTypes"]}  # fmt: skip
    batch = egress["geo-hires-batch-egress"]
    assert batch["podSelector"] == {"matchLabels": {"app.kubernetes.io/component": "batch"}}
    peers = [(rule["to"], rule.get("ports")) for rule in batch["egress"]]
    assert peers[0] == ([{"podSelector": batch["podSelector"]}], None)  # Ray, any port
    assert {p["port"] for p in peers[1][1]} == {53}  # DNS
    (storage,) = peers[2][0]
    assert set(storage) == {"ipBlock"} and storage["ipBlock"]["cidr"].endswith("/32")
    assert peers[2][1] == [{"port": 443, "protocol": "TCP"}]
    assert len(peers) == 3, "nothing else"
    head = egress["geo-hires-batch-head-egress"]
    assert head["podSelector"]["matchLabels"]["ray.io/node-type"] == "head"
    # the API server's endpoint (kubeadm's port), never the kubernetes Service's ClusterIP:443,
    # which plugins that check after the Service rewrite (Calico, Cilium, OVN) never match
    assert [r["ports"] for r in head["egress"]] == [[{"port": 6443, "protocol": "TCP"}]]
    assert head["egress"][0]["to"][0]["ipBlock"]["cidr"] != "10.96.0.1/32"


# ---------------------------------------------------------------- sizing


def _gib(quantity: str) -> float:
    units = {"Gi": 1.0, "Mi": 1 / 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    raise AssertionError(f"use Gi or Mi in manifests, not {quantity}")


def worker_memory_gib(sizing: Doc, actors: int, object_store_bytes: int) -> float:
    """Measured peaks: actors x actor peak x 1.2, plus the raylet, the idle workers Ray keeps
    (one per CPU) and the object store (in /dev/shm, charged to the pod), in GiB, rounded up.
    bench/sizing.py's "MB" are MiB (bytes / 2**20)."""
    mib = (
        actors * max(sizing["actor_peak_mb"]) * 1.2
        + sizing["raylet_peak_mb"]
        + sizing["other_workers_peak_mb"] / sizing["actors"] * actors
        + object_store_bytes / 2**20
    )
    return math.ceil(mib / 1024)


def test_requests_equal_limits_and_workers_fit_the_measured_sizing(rendered):
    sizing = json.loads((ROOT / "bench" / "results" / "sizing.json").read_text())
    _, docs = rendered
    for pod in as_pods(docs):
        for c in pod["spec"]["containers"]:
            res = c["resources"]
            assert res["requests"] == res["limits"], (pod["metadata"]["name"], c["name"])
    for doc in filter(is_ray, docs):
        group, worker = worker_group(doc)
        limits = worker["resources"]["limits"]
        store = int(group["rayStartParams"]["object-store-memory"])
        need = worker_memory_gib(sizing, int(float(limits["cpu"])), store)
        have = _gib(limits["memory"])
        assert need <= have <= need + 1, (doc["kind"], need, have)
        shm = [v for v in group["template"]["spec"]["volumes"] if v["name"] == "shm"]
        # Ray puts the store in /dev/shm only if that much is free there: with no headroom,
        # a few KiB already used (Python's semaphores) sent it to /tmp, on disk
        assert _gib(shm[0]["emptyDir"]["sizeLimit"]) * 2**30 >= store + 64 * 2**20
