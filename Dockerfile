# rlchat's server image: Debian's Python 3.11, CPU PyTorch, `rlchat serve` as the entrypoint.
#
#   podman build --format docker -t rlchat .            # torch from PyTorch's CPU index
#   podman build --format docker --build-arg WHEELS=wheels -t rlchat .   # offline: ./wheels
#   podman run -p 8000:8000 -v ./runs/ce:/models:ro rlchat            # or docker ...
#
# The server runs as an unprivileged user: runs are written world-readable (runs made by
# older versions may need chmod -R a+rX runs).
#
# (--format docker keeps the HEALTHCHECK, which the OCI format has no field for.)
# WHEELS names a directory in the build context holding every wheel rlchat needs, torch
# 2.13.0+cpu, setuptools and wheel included (scripts/image_smoke.sh makes one); nothing is
# then fetched from an index.

ARG BASE=docker.io/library/debian:bookworm-slim

# Debian's interpreter, shared by both stages so that the venv's python3 link stays valid.
FROM ${BASE} AS python
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

FROM python AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/rlchat
# PATH spelled out: a base image imported from a tarball may carry no PATH to extend.
ENV PATH=/opt/rlchat/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
ARG WHEELS=
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Torch first, in its own layer: a source change does not fetch its 200 MB again. Without
# WHEELS this copies only pyproject.toml (COPY needs something to copy).
COPY ${WHEELS:-pyproject.toml} /wheels/
# Pinned, as in pyproject.toml: a bare torch from PyPI would be a multi-GB CUDA build.
RUN if [ -n "$WHEELS" ]; then \
        pip install --no-index --find-links /wheels torch==2.13.0; \
    else \
        pip install --index-url "$TORCH_INDEX" torch==2.13.0; \
    fi
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN if [ -n "$WHEELS" ]; then \
        pip install --no-index --find-links /wheels /src; \
    else \
        pip install /src; \
    fi \
    && python -c "import torch; assert not torch.version.cuda, torch.version.cuda"
# The torch wheel's C++ headers and test programs (about 190 MB): serving needs none of them.
RUN torch=/opt/rlchat/lib/python3.11/site-packages/torch \
    && rm -rf "$torch/include" "$torch/test" \
    && find "$torch/bin" -type f ! -name torch_shm_manager -delete

FROM python
COPY --from=builder /opt/rlchat /opt/rlchat
# A system user without a login shell; its home holds the default SQLite file of ratings
# (the user data dir) when no --database is given.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/rlchat \
        --shell /usr/sbin/nologin rlchat \
    && mkdir /models
ENV PATH=/opt/rlchat/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/rlchat
USER rlchat
WORKDIR /var/lib/rlchat
# Mount a run directory (from `rlchat train`) here, or several under it and name them in CMD.
VOLUME /models
EXPOSE 8000
# bookworm-slim has no curl: the venv's Python asks the liveness route, on the default
# CMD's port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["rlchat", "serve"]
CMD ["/models", "--host", "0.0.0.0", "--port", "8000"]
