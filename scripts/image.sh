#!/usr/bin/env bash
# Builds the gtc container image FROM scratch around a static binary:
#   musl (x86_64-unknown-linux-musl, needs musl-tools) when it can be set
#   up, else glibc with +crt-static. Prints the image size.
# Also leaves a static example service in target/image-service/demo-service:
# the bundles that the container fault tests deploy run inside the image,
# which has no libc. Knob: IMAGE (default gtc:dev). Honours CARGO_TARGET_DIR
# for cargo's output; the image context and the example service stay under
# this repository's target/.
#
# gtc is built without its default features, that is without `kube` (the
# Kubernetes client, k8s-apply over kube): a node in a container never
# applies to a cluster, and the client is 4.1 MiB of the 40 MiB image. This
# gtc refuses `env reconcile` without --render and the credentials verbs of
# a Kubernetes-bound environment (exit 2) and skips the preflight's cluster
# checks; run those from a full build. `env reconcile --render` works.
#
# It is built with the `image` profile (Cargo.toml): the release build with
# whole-program LTO and opt-level "s" everywhere but the request path, which
# keeps opt-level 3. BENCHMARKS.md has the size and the router's speed in
# this build beside the release build's.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${IMAGE:-gtc:dev}
out=${CARGO_TARGET_DIR:-target}
build=(build --profile image --quiet --locked -p node -p demo-service --no-default-features --bin gtc --bin demo-service)
command -v docker >/dev/null || { echo "docker is not installed: cannot build $image" >&2; exit 1; }

target=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -q "^$target$"; then
  rustup target add "$target" >/dev/null 2>&1 || target=""
fi
if [ -n "$target" ] && ! command -v x86_64-linux-musl-gcc >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools) >/dev/null 2>&1 || target=""
fi
if [ -n "$target" ]; then
  cargo "${build[@]}" --target "$target"
else
  echo "musl is not available here; building a static glibc binary instead" >&2
  target=x86_64-unknown-linux-gnu
  RUSTFLAGS='-C target-feature=+crt-static' cargo "${build[@]}" --target "$target"
fi
binary=$out/$target/image/gtc

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
