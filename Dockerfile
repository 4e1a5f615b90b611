# Hearth's one image: every service of the stack runs from it
# (`hearth serve <part>`; `hearth up` runs the whole mesh in one process).
#
# What users build (`docker compose build`, or `docker build -t hearth:local .`):
# Hearth compiled from this clone in a Rust image, then a slim Debian runtime
# with the binary, the default model, the embedding model and the Python
# sandbox's interpreter: nothing is fetched when it runs.
#
# What the test on a machine with no registry builds (tests/tests/compose.rs):
# the same runtime stage, with the binary and files this machine already
# built and fetched (`scripts/compose-prebuilt`, then
# `--build-arg HEARTH_BUILD=prebuilt`): the `build-source` stage is skipped.
ARG HEARTH_BUILD=source

# ---- build from source: the binary and the files it runs with, under /out
FROM docker.io/library/rust:1.95-bookworm AS build-source
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cmake clang libclang-dev pkg-config python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/src/target \
    --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked -p hearth \
 && mkdir -p /out \
 && cp target/release/hearth /out/hearth
# The default model, the embedding model and CPython for WASI, each checked
# against its pinned SHA-256 (scripts/setup), laid out as the runtime wants.
RUN HEARTH_DATA_DIR=/tmp/data PIP_BREAK_SYSTEM_PACKAGES=1 scripts/setup \
 && scripts/compose-prebuilt --assets-only /tmp/data /out

# ---- or take what this machine built (scripts/compose-prebuilt)
FROM scratch AS build-prebuilt
COPY .compose-prebuilt/ /out/

FROM build-${HEARTH_BUILD} AS build

# ---- the runtime
FROM docker.io/library/debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/hearth hearth \
 && mkdir -p /var/lib/hearth \
 && chown hearth:hearth /var/lib/hearth
COPY --from=build /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# One layer each, largest last to change: the interpreter, the models, the binary.
COPY --from=build --chown=hearth:hearth /out/python/ /var/lib/hearth/python/
COPY --from=build --chown=hearth:hearth /out/models/ /var/lib/hearth/models/
COPY --from=build /out/hearth /usr/local/bin/hearth
USER hearth
WORKDIR /var/lib/hearth
ENV HEARTH_DATA_DIR=/var/lib/hearth \
    HEARTH_GATEWAY_ADDR=0.0.0.0:8777 \
    RUST_LOG=info
EXPOSE 8777
ENTRYPOINT ["hearth"]
CMD ["up"]
