# walrus images. Targets:
#   serve     (default) slim serving image: onnxruntime, tokenizers, faiss, numpy; no torch
#   pipeline  torch CPU + transformers: `walrus data|train|export` into a volume
#   loadtest  locust and the load-test file
#   serve-gpu CUDA base, onnxruntime-gpu and FAISS GPU (build with --target serve-gpu)
#   redis     Debian's redis-server with persistence on /data: users' recent events
#   spark     a Spark master, worker or driver for `wals.engine = "spark"`: a JRE, pyspark
#             (with its Arrow extras), numpy and the job's own modules; no torch, no scipy
# BASE_IMAGE replaces python:3.11-slim (e.g. a mirror, or a locally imported stand-in).
ARG BASE_IMAGE=python:3.11-slim
ARG GPU_BASE_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# The project's sources, copied once and reused by every stage that installs it.
FROM base AS source
COPY pyproject.toml README.md ./
COPY docker/serve.lock docker/serve.lock
COPY models/ models/
COPY export/ export/
COPY service/ service/
COPY walrus/ walrus/

# ---------------------------------------------------------------- serving
FROM base AS serve-build
COPY --from=source /app /app
# Every package pinned and hashed (docker/serve.lock, `make lock`): a changed or substituted
# wheel fails the build. walrus itself goes in without dependencies, then `pip check`
# proves the lock covers them all.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip setuptools wheel \
    && /opt/venv/bin/pip install --require-hashes --no-deps -r docker/serve.lock \
    && /opt/venv/bin/pip install --no-deps --no-build-isolation . \
    && /opt/venv/bin/pip check

FROM base AS pipeline-build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY --from=source /app /app
# CPU torch from its own index: PyPI's default torch wheel is a multi-GB CUDA build.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip setuptools wheel \
    && /opt/venv/bin/pip install --index-url "${TORCH_INDEX_URL}" "torch==2.13.0" \
    && /opt/venv/bin/pip install ".[train,serve]"

FROM base AS pipeline
COPY --from=pipeline-build /opt/venv /opt/venv
COPY configs/ configs/
ENV PATH=/opt/venv/bin:$PATH HF_HUB_OFFLINE=1
RUN groupadd --system --gid 10001 walrus && useradd --system --uid 10001 --gid walrus --home-dir /app walrus \
    && mkdir -p /app/artifacts && chown 10001:10001 /app/artifacts
USER 10001:10001
ENTRYPOINT ["walrus"]
CMD ["--help"]

# ---------------------------------------------------------------- Redis (users' recent events)
# Debian's redis-server, as the tests run it: every acknowledged write is in the append-only
# file on the /data volume before the reply (appendfsync always), so a restart loses none.
FROM base AS redis
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
VOLUME ["/data"]
EXPOSE 6379
HEALTHCHECK --interval=5s --timeout=3s --retries=12 CMD ["redis-cli", "ping"]
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data", \
     "--appendonly", "yes", "--appendfsync", "always", "--save", ""]

# ---------------------------------------------------------------- Spark (compose profile spark)
FROM base AS spark
ARG PYSPARK_VERSION=4.3.0
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install "pyspark[sql]==${PYSPARK_VERSION}" "numpy>=1.26"
# Only what the job imports (import-linter keeps it so): the package roots, core and spark.
COPY models/__init__.py models/__init__.py
COPY models/core/ models/core/
COPY models/spark/ models/spark/
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app \
    SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=/opt/venv/bin/python SPARK_NO_DAEMONIZE=1
RUN groupadd --system --gid 10001 walrus && useradd --system --uid 10001 --gid walrus --home-dir /app walrus \
    && mkdir -p /app/work && chown 10001:10001 /app/work
USER 10001:10001
CMD ["spark-class", "org.apache.spark.deploy.master.Master"]

FROM base AS loadtest
RUN python -m venv /opt/venv && /opt/venv/bin/pip install "locust>=2.20"
COPY bench/locustfile.py bench/locustfile.py
ENV PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 walrus && useradd --system --uid 10001 --gid walrus --home-dir /app walrus \
    && mkdir -p /app/results && chown 10001:10001 /app/results
USER 10001:10001
ENTRYPOINT ["locust", "-f", "bench/locustfile.py"]

FROM ${GPU_BASE_IMAGE} AS serve-gpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=source /app /app
# The GPU wheels install the same modules as the CPU ones: never both in one environment.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip setuptools wheel \
    && /opt/venv/bin/pip install ".[serve]" \
    && /opt/venv/bin/pip uninstall -y onnxruntime faiss-cpu \
    && /opt/venv/bin/pip install ".[gpu]"
ENV PATH=/opt/venv/bin:$PATH WALRUS_HOST=0.0.0.0 WALRUS_PORT=8000 WALRUS_BUNDLE=/bundles WALRUS_DEVICE=auto
RUN groupadd --system --gid 10001 walrus && useradd --system --uid 10001 --gid walrus --home-dir /app walrus
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('WALRUS_PORT', '8000') + '/readyz', timeout=2)"]
CMD ["walrus", "serve"]

# The default target comes last: `docker build .` gives the slim serving image.
FROM base AS serve
COPY --from=serve-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH WALRUS_HOST=0.0.0.0 WALRUS_PORT=8000 WALRUS_BUNDLE=/bundles
RUN groupadd --system --gid 10001 walrus && useradd --system --uid 10001 --gid walrus --home-dir /app walrus
USER 10001:10001
EXPOSE 8000
# The start period fits the seed-scale bundle (10M users: ~5 GB hashed and mapped).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('WALRUS_PORT', '8000') + '/readyz', timeout=2)"]
CMD ["walrus", "serve"]
