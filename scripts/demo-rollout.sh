#!/usr/bin/env bash
# Progressive delivery on the embedded default: build gtc and the example
# service, then run `gtc demo --rollout` (a throwaway node under load, a
# good candidate promoted 10 % → 50 % → 100 % by analysis of the routers'
# own counts, and a candidate failing 20 % of its requests rolled back by
# it; the observed split and the analysis of every step are printed).
# Extra arguments go to `gtc demo`, e.g. `bash scripts/demo-rollout.sh --keep`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin gtc --bin demo-service
exec target/release/gtc demo --rollout "$@"
