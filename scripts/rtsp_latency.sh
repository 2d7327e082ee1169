#!/usr/bin/env bash
# End-to-end latency of live RTSP processing with 1 and with N concurrent streams, on this
# machine: serves a clip N times over RTSP (affectstream-rtsp-serve, 127.0.0.1), runs
# `affectstream run` on 1 stream then on N for DURATION seconds each, and prints the p50/p99
# of the records' latency_ms (decoded frame -> record ready) and the frames dropped.
# Usage: scripts/rtsp_latency.sh [N=4] [DURATION=30] [CLIP=../shared/testdata/av/streams/tedlieu_60s_256.mp4]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
N=${1:-4}
DURATION=${2:-30}
CLIP=$(realpath "${3:-../shared/testdata/av/streams/tedlieu_60s_256.mp4}")
cargo build --release --quiet
BIN=target/release
WORK=$(mktemp -d)
mounts=()
for i in $(seq 1 "$N"); do mounts+=(--mount "/cam$i=$CLIP"); done
"$BIN/affectstream-rtsp-serve" --port 0 "${mounts[@]}" > "$WORK/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
for _ in $(seq 1 50); do [ -s "$WORK/server.log" ] && break; sleep 0.1; done
PORT=$(head -n 1 "$WORK/server.log" | sed -E 's#.*:([0-9]+)/.*#\1#')

run() { # $1 = streams
  local sources=()
  for i in $(seq 1 "$1"); do sources+=(--source "rtsp://127.0.0.1:$PORT/cam$i"); done
  "$BIN/affectstream" run "${sources[@]}" --no-listen --duration "$DURATION" \
    --out "$WORK/records-$1.jsonl" 2> "$WORK/run-$1.log"
  python3 - "$WORK/records-$1.jsonl" "$1" <<'EOF'
import json, sys
lat, dropped = [], {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "state" in r:
        dropped[r["stream"]] = r["dropped_frames"]
    elif r.get("latency_ms") is not None:
        lat.append(r["latency_ms"])
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"{sys.argv[2]} stream(s): {len(lat)} records, latency p50 {q(0.5):.1f} ms, "
      f"p99 {q(0.99):.1f} ms, max {lat[-1]:.1f} ms, dropped {sum(dropped.values())}")
EOF
}
run 1
run "$N"
