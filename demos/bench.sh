#!/usr/bin/env bash
# Latency benchmark: the pipeline paced at 1x (like a camera) on a media file; prints
# per-stage and end-to-end latency percentiles and writes a JSON report and a PNG plot.
# Usage: demos/bench.sh [SOURCE] [REPORT.json]
#   SOURCE defaults to the 720p test stream in ../shared/testdata (when present).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case "${1:-}" in -h|--help) sed -n '2,5p' "$0"; exit 0 ;; esac
DEFAULT="$ROOT/../shared/testdata/av/streams/obama_dnc2020_cspan_64s_720p.mp4"
SOURCE=${1:-$DEFAULT}
REPORT=${2:-bench.json}
if [ ! -e "$SOURCE" ] && [[ "$SOURCE" != *://* ]]; then
  echo "no such source: $SOURCE (usage: demos/bench.sh [SOURCE] [REPORT.json])" >&2
  exit 2
fi
cd "$ROOT"
scripts/setup.sh
cargo build --release --quiet
./target/release/affectstream bench --source "$SOURCE" --paced --report "$REPORT"
echo "report: $REPORT, plot: ${REPORT%.json}.png" >&2
