#!/usr/bin/env bash
# Failover and rejoin on a 3-member loopback cluster (issue #12): leader
# SIGKILL → a write through a survivor acknowledged; a killed leader or
# follower started again → its router serves the committed generation; and
# whether a returning member moved the term. BENCH_KILLS rounds (default 20).
# Copy the table into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p demo-service
cargo bench --quiet -p node --bench failover
