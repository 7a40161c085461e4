"""Run named mutants in one pytest process: a pytest plugin for mutmut's ``mutants/`` folder.

mutmut runs each mutant in a fresh process. Where the tests need a Ray cluster and actors, that
is about a minute per mutant here, most of it starting Ray. This plugin runs every selected test
once per named mutant in one process with one Ray: each test gets a ``mutant_switch`` parameter
that sets ``MUTANT_UNDER_TEST``, the variable mutmut's trampolines read on every call. It can
only switch code that runs in the pytest process (the driver side of the Ray executor, not its
actors' methods).

    cd OUT/mutants   # a scratch copy made by scripts/mutate_module.sh, after its mutmut run
    MUTANT_LIST=names.txt MUTANT_OUT=results.txt PYTHONPATH=. \\
        python -m pytest -p scripts.mutant_driver tests/detect/test_ray.py -m "not slow" \\
        --timeout=120

``names.txt`` holds one mutant name per line; the name ``none`` (no such mutant) runs the code
unmutated and must pass. Each result line is ``NAME TEST PHASE:OUTCOME CLEAN``: a mutant is
killed when any of its tests failed (its remaining tests are then skipped). ``CLEAN`` says
whether the Ray cluster had all its CPUs free when the test started: a kill with ``False``
may be an actor leaked by an earlier mutant, so run it again alone. A mutant can hang where
pytest-timeout's signal cannot reach (a C call waiting forever, e.g. ``ray.wait`` with no
timeout): each test's start is logged as ``# start NAME TEST``, so a supervisor that sees no
new line for a while can kill the process, count that mutant as a timeout (killed, as mutmut
counts it) and start again with the names after it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

NAMES = Path(os.environ["MUTANT_LIST"]).read_text().split()
OUT = Path(os.environ["MUTANT_OUT"])
KILLED: set[str] = set()
CLEAN: dict[str, bool] = {}
# cheap tests first, so that a mutant they kill does not wait for a Ray test
CHEAP_FIRST = ("bounds", "run_stats", "placement_timeout", "read_limits", "no_placeable")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    ids = [f"m{i}" for i in range(len(NAMES))]
    metafunc.parametrize("mutant_switch", NAMES, indirect=True, ids=ids)


def _mutant_index(item: pytest.Item) -> int:
    return int(item.callspec.indices["mutant_switch"])  # type: ignore[attr-defined]


def _cost(item: pytest.Item) -> int:
    name = item.originalname  # type: ignore[attr-defined]
    return next((i for i, k in enumerate(CHEAP_FIRST) if k in name), len(CHEAP_FIRST))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    order = {id(it): i for i, it in enumerate(items)}
    items.sort(key=lambda it: (_mutant_index(it), _cost(it), order[id(it)]))


def _all_cpus_free(wait_s: float = 20.0) -> bool:
    import ray

    if not ray.is_initialized():
        return True
    deadline = time.monotonic() + wait_s
    total = ray.cluster_resources().get("CPU", 0.0)
    while ray.available_resources().get("CPU", 0.0) < total:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


@pytest.fixture(autouse=True)
def mutant_switch(request: pytest.FixtureRequest) -> Iterator[str]:
    name = request.param
    if name in KILLED:
        pytest.skip("mutant already killed")
    CLEAN[request.node.nodeid] = _all_cpus_free()
    with OUT.open("a") as f:  # the last started, if a mutant hangs where no timeout reaches
        f.write(f"# start {name} {request.node.originalname}\n")
    os.environ["MUTANT_UNDER_TEST"] = name
    yield name
    os.environ["MUTANT_UNDER_TEST"] = ""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    name = item.callspec.params["mutant_switch"]  # type: ignore[attr-defined]
    if rep.skipped and call.when == "setup":
        return
    if rep.failed or call.when == "call":
        line = f"{name} {item.originalname} {call.when}:{rep.outcome} {CLEAN.get(item.nodeid)}"  # type: ignore[attr-defined]
        with OUT.open("a") as f:
            f.write(line + "\n")
        if rep.failed:
            KILLED.add(name)
