# Limen: one image for `limen start` (auth, proxy, agents) and `limen operator`.
# Build: docker build -t limen .     Run: docker run -p 3080:3080 -p 3023:3023 -p 3024:3024 limen
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/limen && /opt/limen/bin/pip install --no-cache-dir --upgrade pip
COPY pyproject.toml README.md ./
COPY crds ./crds
COPY src ./src
RUN /opt/limen/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client openssh-sftp-server \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /var/lib/limen --uid 10001 limen
COPY --from=build /opt/limen /opt/limen
ENV PATH=/opt/limen/bin:$PATH LIMEN_DATA_DIR=/var/lib/limen/data
USER 10001
WORKDIR /var/lib/limen
EXPOSE 3080 3023 3024 3025
ENTRYPOINT ["limen"]
CMD ["start", "--data-dir", "/var/lib/limen/data"]
