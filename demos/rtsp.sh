#!/usr/bin/env bash
# RTSP processing, headless: one JSON record per frame from a camera stream into a file.
# Usage: demos/rtsp.sh rtsp://HOST:PORT/PATH [OUT.jsonl]   (default out: records.jsonl)
# Watch the same stream in the overlay instead: demos/webcam.sh --source rtsp://...
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ $# -lt 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  sed -n '2,4p' "$0"
  exit 2
fi
SOURCE=$1
OUT=${2:-records.jsonl}
cd "$ROOT"
scripts/setup.sh
cargo build --release --quiet
./target/release/affectstream run --source "$SOURCE" --out "$OUT"
echo "records: $OUT" >&2
