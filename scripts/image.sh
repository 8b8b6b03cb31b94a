#!/usr/bin/env bash
# Builds the gtc container image FROM scratch around a static binary:
#   musl (x86_64-unknown-linux-musl, needs musl-tools) when it can be set
#   up, else glibc with +crt-static. Prints the image size.
# Also leaves a static example service in target/image-service/demo-service:
# the bundles that the container fault tests deploy run inside the image,
# which has no libc. Knob: IMAGE (default gtc:dev).
set -euo pipefail
cd "$(dirname "$0")/.."
image=${IMAGE:-gtc:dev}
command -v docker >/dev/null || { echo "docker is not installed: cannot build $image" >&2; exit 1; }

target=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -q "^$target$"; then
  rustup target add "$target" >/dev/null 2>&1 || target=""
fi
if [ -n "$target" ] && ! command -v x86_64-linux-musl-gcc >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools) >/dev/null 2>&1 || target=""
fi
if [ -n "$target" ]; then
  cargo build --release --quiet --locked --target "$target" --bin gtc --bin demo-service
  binary=target/$target/release/gtc
else
  echo "musl is not available here; building a static glibc binary instead" >&2
  target=x86_64-unknown-linux-gnu
  RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --quiet --locked --target "$target" --bin gtc --bin demo-service
  binary=target/$target/release/gtc
fi

mkdir -p target/image-service
cp "$(dirname "$binary")/demo-service" target/image-service/demo-service
strip target/image-service/demo-service 2>/dev/null || true

context=target/image
rm -rf "$context" && mkdir -p "$context/data"
cp "$binary" "$context/gtc"
strip "$context/gtc" 2>/dev/null || true
cp container/Dockerfile "$context/Dockerfile"
docker build --quiet -t "$image" "$context" >/dev/null
bytes=$(docker image inspect --format '{{.Size}}' "$image")
kind=$(command -v file >/dev/null && file -b "$context/gtc" | cut -d, -f1-2 || echo "a static binary")
echo "image $image: $((bytes / 1024 / 1024)) MiB ($bytes bytes; target < 30 MB), $kind"
