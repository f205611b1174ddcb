#!/usr/bin/env bash
# Builds the static (musl) release binary on the host and puts it in dist/, for the image's
# no-registry path: KV_IMAGE_TARGET=prebuilt docker compose up -d --build
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
if ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target"
fi
# Without the default `bench` feature: the server image needs no charts.
cargo build --release --locked --no-default-features --target "$target" --bin semisync-kv
mkdir -p dist
cp "target/$target/release/semisync-kv" dist/semisync-kv
echo "dist/semisync-kv: $(du -h dist/semisync-kv | cut -f1), $(file -b dist/semisync-kv 2>/dev/null || echo static binary)"
