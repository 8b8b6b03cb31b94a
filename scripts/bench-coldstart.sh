#!/usr/bin/env bash
# Request-driven autoscaling on one real node (issue #19): BENCH_COLD_STARTS
# cold starts (default 1000) spread over BENCH_DEPLOYMENTS deployments
# (default 20) scaling to zero, with the warm latency of the same run; a
# step from zero to a load needing 4 instances; and idle back to zero.
# Copy the tables into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p demo-service
cargo bench --quiet -p node --bench coldstart
