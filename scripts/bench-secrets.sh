#!/usr/bin/env bash
# Issue 14: secrets put / get / get-with-reveal latency through one real
# node's admin API on loopback (BENCH_REQUESTS of each, default 500).
# Copy the table into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet -p node --bench secrets_latency "$@"
