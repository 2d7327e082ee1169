#!/usr/bin/env bash
# Live webcam demo: the first camera and the default microphone into the overlay.
# Usage: demos/webcam.sh [--camera N] [--mic NAME] [--source FILE_OR_URI] [--device cpu|cuda]
#   e.g. demos/webcam.sh                       # /dev/video0 + default microphone
#        demos/webcam.sh --camera 1 --mic USB  # another camera, a microphone whose name has "USB"
#        demos/webcam.sh --source clip.mp4     # no camera: a file with its own audio, at 1x
# Keys in the window: space pause, r record (JSONL), s screenshot, q quit.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
case "${1:-}" in -h|--help) sed -n '2,7p' "$0"; exit 0 ;; esac
scripts/setup.sh
cargo build --release --quiet
exec ./target/release/affectstream demo "$@"
