#!/usr/bin/env bash
# Builds the static (musl) release binary on the host and puts it in dist/, for the image's
# no-registry path: KV_IMAGE_TARGET=prebuilt docker compose up -d --build
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
if ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target"
fi
# mimalloc, the binary's allocator, is C code: for the musl target it is compiled by musl-gcc.
if ! command -v musl-gcc >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq musl-tools >/dev/null || { apt-get update -qq && apt-get install -y -qq musl-tools >/dev/null; }
  else
    echo "musl-gcc is missing: install musl-tools (Debian/Ubuntu: sudo apt-get install musl-tools)" >&2
    exit 2
  fi
fi
# Without the default `bench` feature: the server image needs no charts.
cargo build --release --locked --no-default-features --target "$target" --bin semisync-kv
mkdir -p dist
cp "target/$target/release/semisync-kv" dist/semisync-kv
echo "dist/semisync-kv: $(du -h dist/semisync-kv | cut -f1), $(file -b dist/semisync-kv 2>/dev/null || echo static binary)"
