#!/usr/bin/env bash
# Issue 14: secrets put / get / get-with-reveal latency through the admin
# API on loopback, side by side in one run: one real node, then a real
# three-member cluster (BENCH_REQUESTS of each, default 500).
# Copy the table into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet -p node --bench secrets_latency "$@"
