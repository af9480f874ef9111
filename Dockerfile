# syntax=docker/dockerfile:1.7
#
# mlbox: one static binary on a tiny base.
#
#   docker build -t mlbox .
#   docker run --init --stop-timeout 45 -p 8080:8080 \
#     -v mlbox-data:/data -v "$PWD/pipelines:/pipelines:ro" mlbox
#
# --init: `shell` tasks may leave background children; mlbox runs as PID 1 and does not reap
#         orphans, so let tini do it.
# --stop-timeout: mlbox gives running tasks 30 s (MLBOX_GRACE) after SIGTERM; Docker's default
#         10 s would SIGKILL it first. Keep the two consistent.

ARG RUST_VERSION=1.95

# ---- build: a static musl binary -------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build

RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add x86_64-unknown-linux-musl
# C code (bundled SQLite, ring for rustls) is compiled with the musl toolchain.
ENV CC_x86_64_unknown_linux_musl=musl-gcc

WORKDIR /src
# The whole workspace: the root crate, the `ui` member and `benches/` (named in Cargo.toml).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin mlbox \
 && cp target/x86_64-unknown-linux-musl/release/mlbox /mlbox \
 && mkdir /empty

# ---- runtime -----------------------------------------------------------------------------------
# Distroless, in its `debug-nonroot` flavour: no package manager, runs as uid 65532, and carries
# busybox under /busybox (on PATH). The `shell` op runs `sh -c COMMAND`, so a plain static image
# with no shell at all would break every shell task. For tasks that need more (python, curl, git),
# copy /mlbox onto a fuller base such as debian:bookworm-slim.
FROM gcr.io/distroless/static-debian12:debug-nonroot

COPY --from=build /mlbox /mlbox
# Example pipelines. Mount your own directory over /pipelines to replace them.
COPY pipelines /pipelines
# The data dir must belong to the runtime user; a new named volume copies this ownership.
COPY --from=build --chown=65532:65532 /empty /data
# The demo pipelines read `sample-data/...` relative to the working dir (/data). A new named volume
# gets a copy; with a bind mount, copy sample-data/ into it yourself or set the `source` param.
COPY --chown=65532:65532 sample-data /data/sample-data

USER 65532:65532
# Tasks run here unless they set `cwd`; an mlbox.toml placed in /data is read at start.
WORKDIR /data

ENV MLBOX_DATA_DIR=/data \
    MLBOX_ADDR=0.0.0.0:8080 \
    MLBOX_PIPELINES=/pipelines

VOLUME /data
EXPOSE 8080

# busybox wget (on PATH in the debug image); change the port here if you change MLBOX_ADDR.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/readyz"]

ENTRYPOINT ["/mlbox"]
CMD ["serve"]
