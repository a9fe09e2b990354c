# One image for every role; the command picks it:
#   docker run IMAGE api                      (the default)
#   docker run IMAGE worker --queues audio
#   docker run IMAGE flower --address 0.0.0.0
# Configuration and secrets come from ASYNCML_* variables at run time, never from the image.

# --- builder: resolve the locked dependencies into /opt/venv --------------------------------
FROM python:3.11-slim-bookworm AS builder

# uv comes from PyPI like everything else, pinned: a build needs no other download site.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

# Byte-compile now: the final stage's venv is read-only to the service user.
# The venv must use the base image's own interpreter, which the final stage has at the
# same path: uv must never download a Python of its own.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/opt/venv

WORKDIR /src

# Dependencies first, from the lock file alone: this layer survives source edits. Every
# extra: the image runs every role (flower too) and every model format.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-extras --no-install-project

# Then the project itself, as a real install (not editable: /src stays behind).
COPY README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-extras --no-editable

# --- runtime: the venv on a clean slim base, no uv, no pip cache, no compiler ---------------
FROM python:3.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="asyncml" \
      org.opencontainers.image.description="Asynchronous inference service: API, Celery workers, Flower" \
      org.opencontainers.image.licenses="MIT"

# A numeric, unprivileged user: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 asyncml \
    && useradd --system --uid 10001 --gid asyncml --no-log-init \
        --create-home --home-dir /home/asyncml --shell /usr/sbin/nologin asyncml \
    && install -d -o asyncml -g asyncml -m 0750 /var/lib/asyncml

# Owned by root: the service can run its code but not change it.
COPY --from=builder /opt/venv /opt/venv

# ASYNCML_API_HOST: a container's API must listen beyond its own loopback.
# ASYNCML_DATA_DIR: the embedded engine's folder (unused once the broker URLs are set).
# NUMBA_CACHE_DIR: librosa's numba caches compiled code; site-packages is read-only here.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ASYNCML_API_HOST=0.0.0.0 \
    ASYNCML_API_PORT=8000 \
    ASYNCML_DATA_DIR=/var/lib/asyncml \
    NUMBA_CACHE_DIR=/tmp/numba-cache

USER 10001:10001
WORKDIR /home/asyncml

# 8000: the API; 5555: Flower.
EXPOSE 8000 5555

# The API's liveness, with the interpreter already here (no curl in a slim image). Worker
# and Flower services override it (compose.yaml): they serve no /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ASYNCML_API_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["asyncml"]
CMD ["api"]
