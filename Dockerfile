# mailer image. Build: docker build -t mailer:latest .
# One image for every process; the command picks it: api (default), worker, migrate, ...
#   docker run mailer:latest worker
# The builder installs mailer with deploy/install.sh, the same script CI (.ci/run) and
# scripts/*.sh run, so the image holds exactly what CI tested.

# For reproducible builds pin a digest: --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A compiler only for dependencies without a wheel for this platform; it stays in this stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The repository layout install.sh expects: it installs its own parent directory ("$root").
COPY pyproject.toml README.md ./
COPY src ./src
COPY deploy/install.sh ./deploy/install.sh
RUN bash deploy/install.sh /opt/venv runtime

FROM ${PYTHON_IMAGE} AS runtime
# The venv was made at the same path by the same Python: its scripts run as they are.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=3000 \
    MAILER_DATA_DIR=/app/data
# Numeric uid/gid so Kubernetes' runAsNonRoot can verify the user without a passwd lookup.
RUN groupadd --system --gid 10001 mailer \
    && useradd --system --uid 10001 --gid mailer --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin mailer \
    && mkdir -p /app/data \
    && chown -R mailer:mailer /app
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
EXPOSE 3000
# The API drains on SIGTERM; the worker stops taking jobs and finishes in-flight sends
# within SHUTDOWN_TIMEOUT. Give the container longer than that before SIGKILL.
STOPSIGNAL SIGTERM
# slim has no curl: Python's urllib. Only meaningful for the api command (the worker and
# migrate have no HTTP server; compose disables this check for them).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/v1/health' % os.environ.get('PORT', '3000'), timeout=4)"]
ENTRYPOINT ["mailer"]
CMD ["api"]
