#!/usr/bin/env bash
# Runs every check the project has, on a fresh machine too: setup (packages, ONNX Runtime,
# models), formatting, lints, then the whole test suite in release mode (tests decode real media
# and run real models; release keeps them fast and shares one build with `affectstream run`).
# The tests read the labeled media from ../shared/testdata (or $AFFECTSTREAM_TESTDATA).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --release --all-targets --locked -- -D warnings
# The library as an embedding program gets it (no default features) builds clean too.
cargo clippy --release --no-default-features --lib --example embed --locked -- -D warnings
cargo test --release --locked "$@"
