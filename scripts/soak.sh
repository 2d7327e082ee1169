#!/usr/bin/env bash
# Soak test (not run in CI): the pipeline paced at 1x on a looped testdata stream for a while
# (default 10 minutes), then RSS and latency over time, which must stay flat.
# Usage: scripts/soak.sh [SECONDS] [SOURCE]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECONDS_TO_RUN=${1:-600}
SOURCE=${2:-../shared/testdata/av/streams/obama_dnc2020_cspan_64s_720p.mp4}
OUT=${SOAK_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/affectstream-soak.XXXXXX")}
cargo build --release --quiet
./target/release/affectstream bench --source "$SOURCE" --paced --duration "$SECONDS_TO_RUN" \
  --device cpu --report "$OUT/soak.json"
python3 - "$OUT/soak.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["per_stream"][0]
print("\nRSS and CPU over time (every 30 s):")
for r in d["resources"][::30]:
    print(f"  {r['at_s']:6.0f} s  RSS {r['rss_mb']:6.1f} MB  CPU {r['cpu_percent']:5.1f} %")
rss = [r["rss_mb"] for r in d["resources"]]
third = max(1, len(rss) // 3)
print(f"RSS: first third max {max(rss[:third]):.1f} MB, last third max {max(rss[-third:]):.1f} MB")
fl = s.get("p99_first_last_minute_ms")
if fl:
    first, last = fl
    print(f"latency p99: first minute {first:.2f} ms, last minute {last:.2f} ms ({100 * (last - first) / first:+.1f} %)")
print(f"frames {s['frames_in']}, dropped {s['frames_dropped']}, late {s['frames_late']}")
PY
echo "report and plot: $OUT"
