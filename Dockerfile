# TrialScreen CDS Hooks service: gunicorn (`trialscreen serve`) as a non-root user, configured only through the
# environment (docs/deployment.md lists every variable).
#
#   docker build -t trialscreen .
#   docker run -p 8080:8080 -v trialscreen-state:/var/lib/trialscreen \
#     -e TRIALSCREEN_PUBLIC_URL=https://cds.example.org -e TRIALSCREEN_FHIR_ALLOWLIST=https://ehr.example.org/fhir \
#     -e TRIALSCREEN_TRUSTED_CLIENTS=/run/secrets/trusted-clients.yaml trialscreen
#   docker run --rm trialscreen trialscreen demo --no-serve      # the demo patients, from the packaged fixtures
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The code tables, trial rules, demo fixtures and example site tables ship inside the wheel (pyproject.toml maps
# them to cds_service/data/*): the installed package needs no TRIALSCREEN_* variable to find them, and
# `docker run … trialscreen demo --no-serve` replays the demo patients. /app is only the build context.
WORKDIR /app
COPY pyproject.toml README.md openapi.yaml ./
COPY cds_service ./cds_service
COPY fhir_mappings ./fhir_mappings
COPY fixtures ./fixtures
COPY examples ./examples
RUN pip install . \
    && cd / && rm -rf /app \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/trialscreen --shell /usr/sbin/nologin trialscreen \
    && mkdir -p /var/lib/trialscreen /tmp/trialscreen-metrics \
    && chown trialscreen:trialscreen /var/lib/trialscreen /tmp/trialscreen-metrics
WORKDIR /var/lib/trialscreen

# Defaults; override any with -e / the orchestrator's env. Authentication stays on (TRIALSCREEN_AUTH_REQUIRED):
# the service refuses to start until TRIALSCREEN_TRUSTED_CLIENTS names the trusted CDS clients.
ENV TRIALSCREEN_STATE_DIR=/var/lib/trialscreen \
    TRIALSCREEN_LOG_LEVEL=INFO \
    PROMETHEUS_MULTIPROC_DIR=/tmp/trialscreen-metrics \
    TRIALSCREEN_PORT=8080 \
    TRIALSCREEN_WORKERS=2 \
    TRIALSCREEN_THREADS=4 \
    TRIALSCREEN_WORKER_TIMEOUT=30

USER trialscreen:trialscreen
# SQLite store (the default) and anything else the service keeps; with TRIALSCREEN_DATABASE_URL (PostgreSQL)
# nothing needed across restarts is written here.
VOLUME ["/var/lib/trialscreen"]
EXPOSE 8080

# Liveness through the service's own /healthz, with the image's Python (the slim image has no curl).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TRIALSCREEN_PORT', '8080'), timeout=4)"]

# `trialscreen serve` checks the configuration and migrates the database once, then execs gunicorn in place
# (PID 1 is gunicorn's master: SIGTERM from the orchestrator stops the workers gracefully).
CMD ["sh", "-c", "exec trialscreen serve --host 0.0.0.0 --port \"$TRIALSCREEN_PORT\" --workers \"$TRIALSCREEN_WORKERS\" --threads \"$TRIALSCREEN_THREADS\" --timeout \"$TRIALSCREEN_WORKER_TIMEOUT\""]
