# geo_hires image for Ray on Kubernetes (KubeRay RayJob / RayService) — CPU by default.
#   docker build -t REGISTRY/geo-hires:0.1.0-cpu .
#   docker build -t REGISTRY/geo-hires:0.1.0-cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130 .
# The CUDA variant differs only in the torch wheels (they carry the CUDA 13.0 runtime; the node
# provides the driver). Base pinned to a patch release of Debian 12 (bookworm); pin it by digest
# (python:3.11.14-slim-bookworm@sha256:…) in your registry mirror for reproducible builds.
FROM python:3.11.14-slim-bookworm AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# dependencies first (the layer is reused while only the code changes)
RUN python -m venv /opt/geo-hires \
 && /opt/geo-hires/bin/pip install --index-url "${TORCH_INDEX}" "torch==2.14.1" "torchvision==0.29.1"
COPY pyproject.toml README.md ./
COPY geo_hires ./geo_hires
COPY services ./services
# ultralytics (a base dependency: the YOLO bundles and the cascade run it) pulls the GUI build of
# OpenCV, which needs libGL, which a slim image lacks: the headless build of the same version
# replaces it. s3: scenes and results in object storage (k8s/overlays/s3)
RUN /opt/geo-hires/bin/pip install ".[service,s3]" \
 && cv="$(/opt/geo-hires/bin/python -c 'from importlib.metadata import version; print(version("opencv-python"))')" \
 && /opt/geo-hires/bin/pip uninstall -y opencv-python \
 && /opt/geo-hires/bin/pip install "opencv-python-headless==${cv}" \
 && /opt/geo-hires/bin/python -m compileall -q /opt/geo-hires

FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="geo_hires" \
      org.opencontainers.image.licenses="Apache-2.0 AND AGPL-3.0-only" \
      org.opencontainers.image.description="geo_hires (Apache-2.0) with ultralytics (AGPL-3.0-only); the shipped aircraft weights are CC-BY-NC-SA-4.0"
# wget: KubeRay's exec health probes call it (older operators, and Serve proxy checks)
RUN apt-get update \
 && apt-get install -y --no-install-recommends wget=1.21.3-1+deb12u1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 ray \
 && useradd --uid 10001 --gid 10001 --create-home --shell /bin/bash ray
COPY --from=build /opt/geo-hires /opt/geo-hires
# Ray writes only under /tmp (sessions, logs, spilling) and $HOME; both are volumes in k8s/
ENV PATH=/opt/geo-hires/bin:${PATH} \
    HOME=/home/ray \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0
USER 10001:10001
WORKDIR /home/ray
# Kubernetes probes the Ray processes (KubeRay) and the service (/v1/healthz); no Docker check
HEALTHCHECK NONE
CMD ["geo-hires", "--help"]
