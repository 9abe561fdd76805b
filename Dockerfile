# syntax=docker/dockerfile:1
# Runtime image (default target "runtime"): the service on the shipped model, CPU only.
#   docker build -t mnist-cvae .
#   docker run -p 8000:8000 mnist-cvae
# GPU image: docker build --target gpu -t mnist-cvae:gpu .   (run with --gpus all)
# Serve other models: mount a repository of <name>/<version>/ folders and point CVAE_MODEL_REPOSITORY at it;
# versions copied into it later are loaded, checked and swapped in while serving, e.g.
#   docker run -p 8000:8000 -v /srv/models:/models:ro -e CVAE_MODEL_REPOSITORY=/models mnist-cvae

ARG PYTHON_IMAGE=python:3.11-slim
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# ---- build: install the base package (no extras: no torch, no dev tools) into a venv ----
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
COPY client ./client
COPY cvae ./cvae
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

# ---- runtime: the venv, the shipped model repository, a non-root user; nothing else ----
FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --no-create-home cvae
COPY --from=build /opt/venv /opt/venv
COPY models /opt/cvae/models
ENV PATH=/opt/venv/bin:$PATH \
    CVAE_HOST=0.0.0.0 \
    CVAE_PORT=8000 \
    CVAE_MODEL_REPOSITORY=/opt/cvae/models \
    CVAE_LOG_FORMAT=json
USER cvae
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["cvae-serve"]

# ---- gpu: the same service on CUDA, with onnxruntime-gpu in place of onnxruntime ----
FROM ${CUDA_IMAGE} AS gpu
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 --no-create-home cvae
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
COPY client ./client
COPY cvae ./cvae
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir '.[gpu]' \
    && /opt/venv/bin/pip uninstall -y onnxruntime && /opt/venv/bin/pip install --no-cache-dir --force-reinstall --no-deps onnxruntime-gpu \
    && rm -rf /src
COPY models /opt/cvae/models
ENV PATH=/opt/venv/bin:$PATH \
    CVAE_HOST=0.0.0.0 \
    CVAE_PORT=8000 \
    CVAE_MODEL_REPOSITORY=/opt/cvae/models \
    CVAE_LOG_FORMAT=json \
    CVAE_PROVIDERS=auto
USER cvae
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["cvae-serve"]
