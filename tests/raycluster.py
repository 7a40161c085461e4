"""A multi-node Ray cluster on one machine, as the multi-node tests use it.

``ray.cluster_utils.Cluster`` starts a head without CPUs (it only coordinates, like a KubeRay
head with ``num-cpus: 0``) and worker nodes that are separate raylets, all on 127.0.0.1 and
offline (:func:`geo_hires.detect.ray_local.offline_env`). At the end the worker nodes are
killed, not drained, as a lost machine would be.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def local_cluster(workers: int, cpus_per_worker: int, gpus_per_worker: int = 0) -> Iterator[Any]:
    """``gpus_per_worker``: GPUs the worker nodes declare to Ray (none is there: a node whose
    GPU a run asks for but cannot use, as a GPU-less head meets its GPU workers' requests)."""
    from ray import cluster_utils

    from geo_hires.detect.ray_local import offline_env

    with offline_env():
        c = cluster_utils.Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "include_dashboard": False,
                            "node_ip_address": "127.0.0.1"},
        )  # fmt: skip
        for _ in range(workers):
            c.add_node(
                num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, node_ip_address="127.0.0.1"
            )
        c.wait_for_nodes()
    try:
        yield c
    finally:
        for node in list(c.worker_nodes):
            c.remove_node(node, allow_graceful=False)
        c.shutdown()
