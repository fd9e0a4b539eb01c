# Build: the release binary, against the locked dependency versions, without the emulator (the
# fake Salesforce org of the demo and tests): the production image carries none of its code.
# The emulator's folder is copied only because the workspace names it.
# The context has no .git, so the revision `--version` and sfbulk_build_info name comes as an
# argument: `docker build --build-arg SFBULK_GIT_REVISION=$(git rev-parse --short=12 HEAD) .`
# (without it, `unknown`).
FROM rust:1-slim-bookworm AS build
ARG SFBULK_GIT_REVISION=
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY config ./config
COPY src ./src
COPY emulator ./emulator
RUN cargo build --release --locked --no-default-features

# Run: a small Debian base, a non-root user, the binary and nothing else.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/sfbulk sfbulk \
    && mkdir -p /var/lib/sfbulk/registry \
    && chown -R sfbulk /var/lib/sfbulk \
    && chmod 700 /var/lib/sfbulk/registry
COPY --from=build /src/target/release/sfbulk-proxy /usr/local/bin/sfbulk-proxy
# Numeric, so a runtime that refuses root (Kubernetes' runAsNonRoot) can check it.
USER 10001
WORKDIR /var/lib/sfbulk
# The admin port (probes, metrics) listens beyond loopback here, for the kubelet and Prometheus.
ENV SFBULK__REGISTRY__DIR=/var/lib/sfbulk/registry \
    SFBULK__LOG__FORMAT=json \
    SFBULK__ADMIN__LISTEN=0.0.0.0:9280
VOLUME ["/var/lib/sfbulk/registry"]
EXPOSE 8280 9280
# The URL comes from the settings: admin.listen's /livez.
HEALTHCHECK --interval=10s --timeout=3s --start-period=2s \
    CMD ["sfbulk-proxy", "healthcheck"]
ENTRYPOINT ["sfbulk-proxy"]
CMD ["serve"]
