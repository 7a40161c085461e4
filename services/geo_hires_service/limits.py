"""Limits that the CLI's flags, the service's settings and the Serve application share
(imported by ``geo-hires --help``, so nothing heavy here)."""

__all__ = ["MAX_UPLOAD_BYTES"]

MAX_UPLOAD_BYTES = 1024**3
"""The default upload limit. Why 1 GiB: under Ray Serve an upload is held in memory as it
arrives (about 2.3x its size in the proxy and the ingress together, measured with 667 MiB), and
4 arrive at once (``uploads.MAX_UPLOADS``): about 9 GiB at this limit. Larger scenes go by path
or ``s3://``; the Kubernetes RayService sets 256 MiB for its 4 GiB head pod."""
