#!/usr/bin/env bash
# A rollback's reach on a 3-member loopback cluster (issue #13): decision →
# every router serves 100 % stable, and the last in-flight candidate answer,
# for `gtc op rollouts abort` and, side by side, `gtc op traffic set`
# (BENCH_ROUNDS, default 40). Copy the table into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p demo-service
cargo bench --quiet -p node --bench rollback
