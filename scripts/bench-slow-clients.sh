#!/usr/bin/env bash
# Issue #21's target: BENCH_SLOW (default 1 000) slowloris clients per
# listener for BENCH_SECONDS (default 30) against a node with its default
# limits, from the normal clients' own address; every normal request
# answered, p99 within 100 ms. Copy the table into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 20000 2>/dev/null || true
cargo bench --quiet -p node --bench slow_clients "$@"
