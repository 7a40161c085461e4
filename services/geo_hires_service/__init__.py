"""The geo_hires HTTP service: a thin adapter over the library (jobs, store, Ray Serve app).

Nothing in ``geo_hires`` imports from here; this package only calls the library. Modules:
:mod:`.schemas` (request and response shapes, the job options generated from the library's),
:mod:`.uploads`, :mod:`.problems`, :mod:`.access`, :mod:`.routes` (one router per resource),
:mod:`.web` (the FastAPI app), :mod:`.store` (durable jobs), :mod:`.runner` (runs them),
:mod:`.app` (the Ray Serve application), :mod:`.cli` (``serve`` and ``submit``),
:mod:`.limits` (what the flags, the settings and the application share).
"""
