#!/usr/bin/env bash
# The console's browser test and the observability tests with their real
# tools: installs Debian's chromium, chromium-driver and prometheus when
# missing (needs root, as CI has), then runs both tests and prints the
# console's first paint and the PromQL answers. Screenshots land in
# target/console-screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromedriver >/dev/null || ! command -v promtool >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver prometheus >/dev/null
fi
export GTC_REQUIRE_BROWSER=1 GTC_REQUIRE_PROMETHEUS=1
cargo test -p node --locked --test console --test observability -- --nocapture
