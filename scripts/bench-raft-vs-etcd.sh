#!/usr/bin/env bash
# gtc's Raft write path against etcd 3.4 on the same machine (issue #12):
# three members of each on loopback, both fsyncing, small durable writes at
# 1 and 16 concurrent clients (gtc: the admin API end to end; etcd: its v3
# HTTP gateway), legs alternating in one run, plus the fsync floor. Copy the
# table into BENCHMARKS.md. Installs Debian's etcd-server when etcd is
# missing (needs root). Knobs: BENCH_SECONDS (10), BENCH_ROUNDS (2), ETCD_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v "${ETCD_BIN:-etcd}" >/dev/null; then
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq etcd-server
fi
"${ETCD_BIN:-etcd}" --version | head -1
cargo bench --quiet -p node --bench raft_vs_etcd
