# digest as a container: `docker compose up` (see compose.yaml) or
#   docker build -t digest . && docker run -v digest-data:/data -p 8080:8080 digest
# BASE_IMAGE is any Debian-like image with python3 >= 3.11 and its venv module (python:3.12-slim by default).
# VERSION and SOURCE only label the image (org.opencontainers.image.*), e.g.
#   docker build --build-arg VERSION="$(git describe --tags)" --build-arg SOURCE=https://github.com/you/digest .
ARG BASE_IMAGE=python:3.12-slim

# Stage 1: wheels for digest and every dependency, installed into a venv that is copied out whole.
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so a source change does not download them again.
COPY pyproject.toml ./
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --quiet --upgrade pip setuptools wheel \
 && python3 -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
      > requirements.txt \
 && /opt/venv/bin/pip wheel --wheel-dir /wheels -r requirements.txt
COPY README.md ./
COPY digest ./digest
COPY templates ./templates
# A regular (non-editable) install: templates and the demo sample must travel as package data.
# (python -I: the installed package is checked, not ./digest from this directory.)
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-index --find-links /wheels digest \
 && /opt/venv/bin/python -I -c "import importlib.resources as r; assert r.files('digest.templates').joinpath('email').is_dir(); assert r.files('digest').joinpath('data/sample.json').is_file()" \
 && /opt/venv/bin/digest --version \
 && /opt/venv/bin/python -m pip uninstall --quiet --yes pip setuptools wheel \
 && find /opt/venv -depth -type d -path '*/site-packages/numpy/*' -name tests -exec rm -rf {} + \
 && /opt/venv/bin/python -c "import numpy"
# (numpy's own test suites are ~17 MB that digest never imports.)

# Stage 2: the base image, the venv and an unprivileged user; nothing of the build toolchain.
FROM ${BASE_IMAGE}
ARG VERSION=dev
ARG SOURCE=""
LABEL org.opencontainers.image.title="digest" \
      org.opencontainers.image.description="Email each subscriber a daily digest of the new papers that match their own keyword rules" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}"
RUN groupadd --system --gid 10001 digest \
 && useradd --system --uid 10001 --gid digest --home-dir /app --no-create-home --shell /usr/sbin/nologin digest \
 && mkdir -p /app/config /data \
 && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
# Settings come only from DIGEST_* variables, a mounted /app/config/digest.toml, or secret files
# (DIGEST_SMTP__PASSWORD_FILE=/run/secrets/...). The data volume holds the store, journal, outbox and key.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DIGEST_DATA_DIR=/data \
    DIGEST_WEB__HOST=0.0.0.0
WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot and the host (for chown of a bind-mounted ./data) can check it.
USER 10001:10001
VOLUME /data
EXPOSE 8080
# Python rather than curl, so the check works on python:*-slim too. Unhealthy while the last cycle failed.
# The address comes from digest's own settings (web.host/web.port from the environment or the TOML file).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import urllib.request as u; from digest.settings import healthz_url; u.urlopen(healthz_url(), timeout=4)"]
ENTRYPOINT ["digest"]
CMD ["serve"]
