# syntax=docker/dockerfile:1
#
# The guestreset controller image:
#   docker build -t ghcr.io/guestreset/guestreset:$(version) \
#     --build-arg VERSION=$(version) --build-arg REVISION=$(git rev-parse HEAD) .
#
# Without Docker or a registry, scripts/image.sh builds the equivalent image with buildah
# (same user, entrypoint, command, port and labels; the binary with exactly the libraries
# it links, the CA bundle and the passwd entry). tests/image.rs compares the two and runs
# that image; change both together.
#
# Runtime base: gcr.io/distroless/cc-debian12:nonroot. The binary is dynamically linked
# against glibc, libgcc_s and, through azure_identity's PKCS#12 support (the `openssl`
# crate), libssl3/libcrypto3. distroless/cc is distroless/base (glibc, libssl3,
# ca-certificates, tzdata) plus libgcc, all from Debian 12 like the builder below, so every
# library the binary needs is there at the ABI it was linked against, and is patched with
# the base image rather than frozen at build time. It has no shell and no package manager,
# and its `nonroot` user is uid/gid 65532, the user the Helm chart enforces.
# (A static musl build would allow distroless/static, but needs a musl OpenSSL too.)

ARG RUST_VERSION=1

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# tests/ holds workspace members (the test harness, the Graph simulator): Cargo loads the
# whole workspace even to build one binary. .dockerignore lets nothing else in.
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY tests tests
# Cache mounts keep the registry and the compiled dependencies between builds; the binary
# is copied out of the target cache, which is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p guestreset --bin guestreset \
    && install -D -m 0755 target/release/guestreset /out/guestreset

FROM gcr.io/distroless/cc-debian12:nonroot
# The crate's version and the commit built (OCI annotations, as labels).
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="guestreset" \
      org.opencontainers.image.description="Kubernetes operator that resets Microsoft Entra B2B guest redemptions declaratively, once per spec generation" \
      org.opencontainers.image.source="https://github.com/guestreset/guestreset" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/guestreset /usr/local/bin/guestreset
# Numeric, so that runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# /metrics, /healthz, /readyz
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/guestreset"]
CMD ["run"]
