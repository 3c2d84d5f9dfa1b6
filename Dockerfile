# newsletter-enhancer: CPU image (API, worker, CLI). Model files and SQLite live in the /data volume.
#
# Build:   docker build -t newsletter-enhancer .
# Run:     docker run -p 8000:8000 -v enhancer-data:/data newsletter-enhancer
#
# torch is pinned to 2.13.0 (see pyproject.toml). On PyPI's default index that version resolves to a
# CUDA build of several GB; to get the CPU build, pass PyTorch's CPU-only wheel index (the URL that
# PyTorch's "Get Started" page gives for Compute Platform "CPU") as a build argument:
#     docker build --build-arg PIP_EXTRA_INDEX_URL=<PyTorch CPU wheel index> -t newsletter-enhancer .
# PIP_INDEX_URL works the same way for a private mirror. Neither has a default: no index host is baked
# into the image, and the values do not leak into the runtime stage.
#
# Intel GPU (Iris Xe, Arc) for OpenVINO's GPU device: build with --build-arg INTEL_GPU_RUNTIME=1 to add
# Debian's Intel OpenCL compute runtime, and pass /dev/dri to the container (docker-compose.yml does both).

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: resolve and install everything into a self-contained virtual environment -------------
FROM ${PYTHON_IMAGE} AS builder

ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

WORKDIR /src
# torch first, in its own layer: it is by far the largest dependency and changes least often.
RUN pip install --no-cache-dir torch==2.13.0

COPY pyproject.toml README.md constraints.txt ./
COPY app ./app
COPY worker ./worker
COPY training ./training
COPY migrations ./migrations
# The project and its dependencies from pyproject.toml (a local path, not a registry name), at the
# versions the test suite passed with (constraints.txt).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir -c constraints.txt . \
    && python -c "import torch, app, worker; assert torch.__version__.startswith('2.13.0'), torch.__version__"

# --- runtime: slim base + the venv; no compilers, no build arguments, non-root -------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG INTEL_GPU_RUNTIME=0
# Debian's packages are taken at the release's current version; pinning exact Debian revisions breaks the
# build every time the security archive moves them on.
# hadolint ignore=DL3008
RUN if [ "${INTEL_GPU_RUNTIME}" = "1" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends intel-opencl-icd ocl-icd-libopencl1 \
        && rm -rf /var/lib/apt/lists/*; \
    fi

RUN groupadd --system --gid 10001 enhancer \
    && useradd --system --uid 10001 --gid enhancer --groups video --create-home --home-dir /home/enhancer enhancer \
    && mkdir -p /data \
    && chown enhancer:enhancer /data

COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ENHANCER_DATA_DIR=/data \
    HF_HOME=/data/hf-cache

# SQLite database, broker file (embedded default), model registry and caches.
VOLUME ["/data"]
WORKDIR /data
# uid only (no :gid), so the user keeps its supplementary groups (video) from /etc/group.
USER 10001
EXPOSE 8000

# /healthz answers as soon as the API process is up (the first start pulls the default model: allow time).
# A container running only `enhancer worker` has no API: override this check (docker-compose.yml checks
# the worker's heartbeat instead) or run it with --no-healthcheck.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["enhancer"]
CMD ["serve", "--host", "0.0.0.0"]
