#!/usr/bin/env bash
# Traffic-change propagation on a 3-member loopback cluster: how long after
# `gtc op traffic set` is acknowledged every member's router serves the new
# split (p50/p99 over BENCH_CHANGES changes, default 200). Copy the table
# into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p demo-service
cargo bench --quiet -p node --bench propagation
