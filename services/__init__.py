"""The HTTP service: a thin adapter over the geo_hires library (jobs, store, Ray Serve app).

Nothing in ``geo_hires`` imports from here; this package only calls the library.
"""
