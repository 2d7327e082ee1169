#!/usr/bin/env bash
# RTSP processing, headless: records from one or more camera streams, reconnecting on drops.
# Usage: demos/rtsp.sh rtsp://HOST:PORT/PATH [rtsp://... ...]   (OUT=records.jsonl CSV=faces.csv)
# Live feed and metrics while it runs: ws://127.0.0.1:9750/records, http://127.0.0.1:9750/metrics
# Watch one stream in the overlay instead: demos/webcam.sh --source rtsp://...
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ $# -lt 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  sed -n '2,5p' "$0"
  exit 2
fi
OUT=${OUT:-records.jsonl}
CSV=${CSV:-faces.csv}
sources=()
for url in "$@"; do sources+=(--source "$url"); done
cd "$ROOT"
scripts/setup.sh
cargo build --release --quiet
./target/release/affectstream run "${sources[@]}" --out "$OUT" --csv "$CSV"
echo "records: $OUT, faces: $CSV" >&2
