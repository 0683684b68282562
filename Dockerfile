# HELIOS in a container: one image for every daemon (atlasd, gateway, proxy, worker).
#
#   docker build -t helios .
#   docker run -d -p 8080:8080 -v helios-data:/data helios           # the gateway on its own data
#   docker compose up -d                                             # atlasd + gateway + proxy + workers
#
# The default command runs the gateway on /data; give another command for the
# other daemons (compose.yaml does).  Processes run as the unprivileged user
# "helios" (uid 10001), and `helios` itself keeps umask 077, so the volume's
# files are that user's alone.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # atlasd records "port -> data directory" here, so `helios health --url atlas://127.0.0.1:PORT`
    # in the same container finds the password on its own.
    HELIOS_RUNTIME_DIR=/tmp/helios \
    HELIOS_LOG__FORMAT=json

# Only what the package needs: tests, bench and the docs stay out (see .dockerignore).
COPY pyproject.toml setup.cfg README.md /src/
COPY helios_core/ /src/helios_core/
COPY helios_cli/ /src/helios_cli/
RUN pip install /src \
    && rm -rf /src \
    && groupadd --system --gid 10001 helios \
    && useradd --system --uid 10001 --gid helios --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin helios \
    && mkdir -p /data \
    && chown helios:helios /data \
    && chmod 0700 /data

# A named volume mounted here starts as a copy of this directory: owned by helios, mode 0700.
VOLUME /data
WORKDIR /data
USER helios

# 8080 gateway, 6379 atlasd (as compose.yaml runs it), 8000 proxy.
EXPOSE 8080 6379 8000

# The gateway's /healthz; compose.yaml gives each other daemon its own check.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["helios", "health", "--url", "http://127.0.0.1:8080", "--timeout", "5"]

# Every HELIOS daemon drains and exits 0 on SIGTERM (docker stop's default, said here on purpose).
STOPSIGNAL SIGTERM
CMD ["helios", "gateway", "--data", "/data", "--bind", "0.0.0.0"]
