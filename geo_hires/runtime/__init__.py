"""Runtime stage: executors that run work units (in-process, or on Ray actors)."""

from geo_hires.pipeline import Executor, LocalExecutor
from geo_hires.runtime.ray_local import OFFLINE_ENV, ensure_ray, offline_env, offline_home

__all__ = ["OFFLINE_ENV", "Executor", "LocalExecutor", "ensure_ray", "offline_env", "offline_home"]
