# The semisync-kv image: one static binary in an empty (scratch) image, by one of two paths.
#
#   source   (default) builds the binary inside Docker from the official Rust image; needs a
#            registry to pull it from. `docker compose up -d --build` uses this path.
#   prebuilt packages a static binary built on the host by scripts/build-static.sh into dist/;
#            pulls nothing. `KV_IMAGE_TARGET=prebuilt docker compose up -d --build`.
#
# Stage order matters: Docker's legacy builder builds every stage up to the target, so the
# `prebuilt` stage comes first and uses nothing but the build context. (No `# syntax=` line
# either: BuildKit would pull the frontend image it names.)

FROM scratch AS prebuilt
# Copies dist/semisync-kv when scripts/build-static.sh has put it there (dist/ always exists).
COPY dist/ /
EXPOSE 8000 6379
HEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD ["/semisync-kv", "health"]
ENTRYPOINT ["/semisync-kv"]
CMD ["serve"]

FROM rust:1-alpine AS builder
RUN apk add --no-cache musl-dev
WORKDIR /build
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --no-default-features --bin semisync-kv \
    && cp target/release/semisync-kv /semisync-kv

FROM scratch AS source
COPY --from=builder /semisync-kv /semisync-kv
EXPOSE 8000 6379
HEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD ["/semisync-kv", "health"]
ENTRYPOINT ["/semisync-kv"]
CMD ["serve"]
