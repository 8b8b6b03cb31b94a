#!/usr/bin/env bash
# Request-driven autoscaling on the embedded default: build gtc and the
# example service, then run `gtc demo --autoscale` (a throwaway node; one
# revision scales to zero when idle, from zero through a cold start to what
# a load generator needs, and back to zero when the load stops; the
# instances, the autoscaler's decisions and the cold start are printed).
# Extra arguments go to `gtc demo`, e.g. `bash scripts/demo-autoscale.sh --keep`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin gtc --bin demo-service
exec target/release/gtc demo --autoscale "$@"
