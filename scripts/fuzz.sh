#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each; not in CI). Needs cargo-fuzz
# (`cargo install cargo-fuzz`); works on the stable toolchain without a sanitizer.
# A crash is saved under fuzz/artifacts/<target>/: turn it into a regression test.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_PER_TARGET=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in config_and_manifest yunet_decode speech_features vad_chunker; do
  echo "== $target (${SECONDS_PER_TARGET} s)"
  cargo fuzz run --sanitizer none --release "$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 2>&1 | tail -n 3
done
