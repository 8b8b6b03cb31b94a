#!/usr/bin/env bash
# The main job on the embedded default: build gtc and the example service,
# then run `gtc demo` (a throwaway node, two revisions, a measured 90/10
# split, and a 0/100 shift under load with no dropped request).
# Extra arguments go to `gtc demo`, e.g. `bash scripts/demo.sh --keep`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin gtc --bin demo-service
exec target/release/gtc demo "$@"
