"""The one way a test waits for what another thread, process or node does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    get: Callable[[], T],
    ready: Callable[[T], Any] = bool,
    *,
    timeout: float,
    every: float = 0.05,
    what: str = "",
) -> T:
    """Call ``get()`` every ``every`` seconds until ``ready`` holds on what it returned, and
    return that. After ``timeout`` seconds the test fails, naming ``what`` it waited for and
    the last value seen, so a hang reads as a finding, not as a CI timeout."""
    deadline = time.monotonic() + timeout
    while not ready(value := get()):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what or get} not ready after {timeout} s; last: {value!r:.2000}"
            )
        time.sleep(every)
    return value
