# Limen: one image for the daemon and the Kubernetes operator.
#
#   docker build -t limen .
#   docker run -p 3080:3080 -p 3023:3023 -p 3024:3024 limen          # limen start (default)
#   docker run limen operator --auth auth:3025 -i /identity            # the operator
#   docker run limen operator seed-ca --ca-dir D --data-dir D2         # a Cluster's init step
#
# The entrypoint is `limen`; the command picks the part: `start` (auth, proxy, agents; data in
# /var/lib/limen/data, mount a volume there) or `operator` (see docs/kubernetes.md and
# manifests/). Runs as the unprivileged user limen (uid 10001), read-only root filesystem
# friendly (no bytecode writes; /tmp is the only scratch space the operator needs).

# The web UI's bundle (web/ → src/limen/proxy/webui/dist, as scripts/build-web does), from the
# committed lock file; the wheel below carries it.
FROM node:20-bookworm-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY web ./
RUN npm run build --silent

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/limen
COPY pyproject.toml README.md constraints.txt ./
COPY crds ./crds
COPY src ./src
COPY --from=web /src/src/limen/proxy/webui/dist ./src/limen/proxy/webui/dist
RUN /opt/limen/bin/pip install -c constraints.txt . \
 && /opt/limen/bin/python -m compileall -q /opt/limen/lib

FROM python:3.11-slim
LABEL org.opencontainers.image.title="limen" \
      org.opencontainers.image.description="Identity-aware access platform: daemon (limen start) and Kubernetes operator (limen operator)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client openssh-sftp-server \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /var/lib/limen --uid 10001 --user-group limen \
 && install -d -o limen -g limen -m 0700 /var/lib/limen/data
COPY --from=build /opt/limen /opt/limen
ENV PATH=/opt/limen/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LIMEN_DATA_DIR=/var/lib/limen/data
USER 10001:10001
WORKDIR /var/lib/limen
VOLUME ["/var/lib/limen/data"]
# web/API, SSH proxy, reverse tunnel, auth API (limen start); operator liveness probe
EXPOSE 3080 3023 3024 3025 8080
ENTRYPOINT ["limen"]
CMD ["start", "--data-dir", "/var/lib/limen/data"]
