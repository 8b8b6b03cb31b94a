#!/usr/bin/env bash
# Short smoke run of every fuzz target (default 10 s each) from the committed
# seed corpus. For a long run: FUZZ_SECONDS=3600 bash scripts/fuzz-smoke.sh
#
# cargo-fuzz drives libFuzzer; with the stable toolchain it needs
# RUSTC_BOOTSTRAP=1 and `--sanitizer none` (no nightly can be fetched here).
# FUZZ_BUILD picks the build (default -O; CI's smoke run uses --dev, which
# compiles in a third of the time and fuzzes plenty for a few seconds).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${FUZZ_SECONDS:-10}
build=${FUZZ_BUILD:--O}

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1
cargo fuzz build --sanitizer none "$build"
targets=$(cargo fuzz list)
for target in $targets; do
  # Work on a scratch copy so a smoke run never grows the committed corpus.
  scratch=$(mktemp -d)
  # Start from the committed seeds (a target without any starts empty).
  cp corpus/"$target"/seed-* "$scratch"/ 2>/dev/null || true
  echo "== fuzz $target for ${seconds}s"
  cargo fuzz run --sanitizer none "$build" "$target" "$scratch" -- -max_total_time="$seconds" 2>&1 | grep -E '^(Done|==[0-9]+== ERROR)|panicked' || true
  rm -rf "$scratch"
  # cargo fuzz exits non-zero on a crash; re-check the artifacts folder.
  if compgen -G "artifacts/$target/*" >/dev/null; then
    echo "fuzz target $target found a failing input:" >&2
    ls artifacts/"$target" >&2
    exit 1
  fi
done
