"""Detect stage: planning work units, the kinds of level, zoom, cascade, journal, executors.

``options`` (the settings, defined once) → ``levels``/``blocks``/``plan`` (the one planner:
keyed units of same-shape blocks) → ``forward``/``kinds``/``runner`` (what a unit computes)
→ ``zoom`` and ``cascade`` (which windows a second pass sees) → ``journal`` (finished units,
for resume) → ``executors``/``ray_executor`` (where units run). Wiring them for a scene is
:mod:`geo_hires.pipeline`'s job.
"""
