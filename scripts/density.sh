#!/usr/bin/env bash
# Streams per machine, before and after: the current affectstream binary against a baseline
# binary, each figure measured back to back in one run (baseline, current, baseline, current,
# ...) so drifting machine load hits both alike; medians over the rounds.
#
#   scripts/density.sh /path/to/baseline/affectstream
#   scripts/density.sh --runs 3 --bin target/release/affectstream /tmp/affectstream-before
#
# The table (720p clip: av/streams/obama_dnc2020_cspan_64s_720p.mp4):
#   - CPU per stream (% of one core) and end-to-end p50/p99 of 1 paced 720p stream
#   - capacity: the most paced 720p streams at once with at most 1 % late frames each
#   - MB per extra stream: peak RSS of 4 paced streams minus that of 1, over 3
#   - offline fps over the Python reference's on the 256x256 clip and on 720p
#     (scripts/compare_python.sh --baseline: both binaries and Python in the same rounds)
#
# Capacity: when both binaries have `bench --capacity`, each runs it (warm-up left out);
# otherwise this script runs the same search for both (1, doubling, then bisection) with plain
# `bench --paced --streams N --duration WARMUP+DURATION` runs, late frames counted over the
# whole run. Either way both sides are measured the same way; the table says which.
#
# Options:
#   --bin PATH            the current binary (default: build with cargo build --release)
#   --runs N              offline rounds per side and clip (default 3)
#   --paced-runs N        rounds of the 1- and 4-stream paced runs (default 1)
#   --clip FILE           the paced and capacity runs' source (default the 720p clip)
#   --duration S          length of the 1- and 4-stream paced runs (default 30)
#   --trial S             counted length of each capacity trial (default 20)
#   --warmup S            uncounted start of each capacity trial (default 5)
#   --max-streams N       cap of the capacity search (default 64)
#   --skip-capacity       leave the capacity row out
#   --skip-python         leave the offline rows (and the Python reference) out
#   --out DIR             keep the reports and logs here (default: a new temporary directory)
#   -h, --help            this text
# Environment: AFFECTSTREAM_TESTDATA (default ../shared/testdata), AFFECTSTREAM_REF_VENV (as
# for scripts/compare_python.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=$(cd "$ROOT/.." && pwd)/shared
TESTDATA=${AFFECTSTREAM_TESTDATA:-$SHARED/testdata}
CLIP720="$TESTDATA/av/streams/obama_dnc2020_cspan_64s_720p.mp4"
LABEL=720p

BIN=""
BASE=""
RUNS=3
PACED_RUNS=1
DURATION=30
TRIAL=20
WARMUP=5
MAX_STREAMS=64
CAPACITY=1
PYTHON=1
OUT=""

die() {
    echo "density: error: $*" >&2
    exit 1
}
note() { echo "density: $*" >&2; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
positive_int() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive whole number, got '$2'"; }
seconds() { [[ $2 =~ ^[0-9]+([.][0-9]+)?$ ]] || die "$1 needs seconds, got '$2'"; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --bin) [[ $# -ge 2 ]] || die "--bin needs a path"; BIN=$2; shift 2 ;;
        --clip) [[ $# -ge 2 ]] || die "--clip needs a file"; CLIP720=$2; LABEL=$(basename "$2"); shift 2 ;;
        --runs) [[ $# -ge 2 ]] || die "--runs needs a value"; positive_int --runs "$2"; RUNS=$2; shift 2 ;;
        --paced-runs) [[ $# -ge 2 ]] || die "--paced-runs needs a value"; positive_int --paced-runs "$2"; PACED_RUNS=$2; shift 2 ;;
        --duration) [[ $# -ge 2 ]] || die "--duration needs a value"; seconds --duration "$2"; DURATION=$2; shift 2 ;;
        --trial) [[ $# -ge 2 ]] || die "--trial needs a value"; seconds --trial "$2"; TRIAL=$2; shift 2 ;;
        --warmup) [[ $# -ge 2 ]] || die "--warmup needs a value"; seconds --warmup "$2"; WARMUP=$2; shift 2 ;;
        --max-streams) [[ $# -ge 2 ]] || die "--max-streams needs a value"; positive_int --max-streams "$2"; MAX_STREAMS=$2; shift 2 ;;
        --skip-capacity) CAPACITY=0; shift ;;
        --skip-python) PYTHON=0; shift ;;
        --out) [[ $# -ge 2 ]] || die "--out needs a directory"; OUT=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *) [[ -z $BASE ]] || die "one baseline binary, got '$BASE' and '$1'"; BASE=$1; shift ;;
    esac
done
[[ -n $BASE ]] || die "give the baseline binary: scripts/density.sh /path/to/baseline-affectstream"
[[ -x $BASE ]] || die "no executable baseline binary at $BASE"
[[ -f $CLIP720 ]] || die "missing $CLIP720 (set AFFECTSTREAM_TESTDATA)"
command -v python3 >/dev/null || die "python3 is needed to read the reports"

if [[ -z $BIN ]]; then
    note "building the current binary (cargo build --release; --bin skips this)"
    (cd "$ROOT" && cargo build --release --quiet --bin affectstream) || die "cargo build --release failed"
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/affectstream"
fi
[[ -x $BIN ]] || die "no current binary at $BIN"

if [[ -z $OUT ]]; then
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/affectstream-density.XXXXXX")
else
    mkdir -p "$OUT" || die "cannot create $OUT"
fi
OUT=$(cd "$OUT" && pwd)
note "reports and logs go to $OUT"
# Private copies: a rebuild during the runs cannot change what is measured.
cp "$BASE" "$OUT/affectstream-base" || die "cannot copy $BASE"
cp "$BIN" "$OUT/affectstream-current" || die "cannot copy $BIN"
declare -A BINS=([base]="$OUT/affectstream-base" [current]="$OUT/affectstream-current")
export RUST_LOG=${RUST_LOG:-warn}

# busy_ms (the whole machine's busy CPU ms) and now_ms.
# shellcheck source=scripts/machine_load.sh
source "$ROOT/scripts/machine_load.sh"

# Runs a command, its output to STEM.log; STEM.load gets "machine busy ms, wall ms, own CPU ms".
measured() {
    local stem=$1 busy0 t0 rc=0 TIMEFORMAT='%3U %3S'
    shift
    busy0=$(busy_ms)
    t0=$(now_ms)
    { time "$@" >"$stem.log" 2>&1; } 2>"$stem.cpu" || rc=$?
    local own
    own=$(awk '{printf "%d", ($(NF-1) + $NF) * 1000}' "$stem.cpu" 2>/dev/null || echo 0)
    echo "$(($(busy_ms) - busy0)) $(($(now_ms) - t0)) $own" >"$stem.load"
    return $rc
}

has_capacity() { "$1" bench --help 2>/dev/null | grep -q -- '--capacity'; }

# One paced bench run. $1 side, $2 streams, $3 round.
paced() {
    local side=$1 n=$2 rep=$3 stem="$OUT/paced-$1-$2-$3"
    note "  $side: $n paced $LABEL stream(s), ${DURATION} s"
    measured "$stem" "${BINS[$side]}" bench --source "$CLIP720" --device cpu --paced --streams "$n" \
        --duration "$DURATION" --report "$stem.json" || { tail -n 20 "$stem.log" >&2; die "$side bench failed (log: $stem.log)"; }
}

note "machine: $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
note "paced runs: $PACED_RUNS round(s) of 1 and 4 streams per side"
for ((rep = 0; rep < PACED_RUNS; rep++)); do
    for side in base current; do paced "$side" 1 "$rep"; done
    for side in base current; do paced "$side" 4 "$rep"; done
done

CAP_MODE=none
if [[ $CAPACITY -eq 1 ]]; then
    if has_capacity "${BINS[base]}" && has_capacity "${BINS[current]}"; then
        CAP_MODE=builtin
    else
        CAP_MODE=script
    fi
    for side in base current; do
        note "capacity of $side ($CAP_MODE search; trials of ${WARMUP} s + ${TRIAL} s)"
        if [[ $CAP_MODE == builtin ]]; then
            measured "$OUT/capacity-$side" "${BINS[$side]}" bench --source "$CLIP720" --device cpu --capacity \
                --warmup "$WARMUP" --duration "$TRIAL" --max-streams "$MAX_STREAMS" --report "$OUT/capacity-$side.json" \
                || { tail -n 20 "$OUT/capacity-$side.log" >&2; die "$side bench --capacity failed"; }
        else
            python3 - "${BINS[$side]}" "$CLIP720" "$WARMUP" "$TRIAL" "$MAX_STREAMS" "$OUT" "$side" <<'EOF' \
                || die "the capacity search of $side failed (logs in $OUT)"
import json, os, subprocess, sys, time

binary, clip, warmup, trial, max_streams, out, side = sys.argv[1:]
max_streams = int(max_streams)
length = float(warmup) + float(trial)


def busy_s():
    """Busy CPU seconds of the whole machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[i] for i in (0, 1, 2, 5, 6, 7)) / os.sysconf("SC_CLK_TCK")


def own_s():
    """CPU seconds of the finished children (the bench runs)."""
    t = os.times()
    return t.children_user + t.children_system


def next_step(trials):
    """Same rule as affectstream's bench::capacity::next_step: ('try', n) or ('done', n)."""
    bad = min((n for n, held in trials if not held), default=None)
    good = max((n for n, held in trials if held and (bad is None or n < bad)), default=None)
    if good is None:
        return ("try", 1) if bad is None else ("done", 0)
    if bad is None:
        return ("done", min(good, max_streams)) if good >= max_streams else ("try", min(2 * good, max_streams))
    return ("done", good) if bad <= good + 1 else ("try", good + (bad - good) // 2)


trials, rows = [], []
while True:
    step, n = next_step(trials)
    if step == "done":
        break
    stem = f"{out}/capacity-{side}-{n}"
    busy0, wall0, own0 = busy_s(), time.monotonic(), own_s()
    with open(stem + ".log", "w") as log:
        rc = subprocess.call([binary, "bench", "--source", clip, "--device", "cpu", "--paced", "--streams", str(n),
                              "--duration", f"{length:g}", "--report", stem + ".json"], stdout=log, stderr=log)
    other = max(0.0, (busy_s() - busy0) - (own_s() - own0)) / max(time.monotonic() - wall0, 1e-9)
    if rc != 0:
        sys.exit(f"density: error: {binary} bench --streams {n} exited {rc} (log: {stem}.log)")
    with open(stem + ".json") as f:
        r = json.load(f)
    late = [100.0 * s["frames_late"] / max(s["frames_in"], 1) for s in r["per_stream"]]
    held = all(s["frames_in"] > 0 for s in r["per_stream"]) and max(late) <= 1.0
    p99 = max(s["end_to_end_ms"]["p99"] for s in r["per_stream"])
    print(f"density:   {side}: {n} stream(s): worst late {max(late):.2f} %, worst p99 {p99:.1f} ms, "
          f"CPU {r['cpu_percent']:.0f} %, other processes {100 * other:.0f} % -> {'holds' if held else 'late'}",
          file=sys.stderr)
    trials.append((n, held))
    rows.append({"streams": n, "held": held, "late_percent": max(late), "worst_stream_p99_ms": p99,
                 "cpu_percent": r["cpu_percent"], "peak_rss_mb": r["peak_rss_mb"], "other_cpu_percent": 100 * other})
with open(f"{out}/capacity-{side}.json", "w") as f:
    json.dump({"capacity": n, "max_streams": max_streams, "trials": rows}, f, indent=2)
EOF
        fi
    done
fi

if [[ $PYTHON -eq 1 ]]; then
    note "offline against the Python reference: scripts/compare_python.sh --runs $RUNS (both binaries and python per round)"
    "$ROOT/scripts/compare_python.sh" --bin "${BINS[current]}" --baseline "${BINS[base]}" --runs "$RUNS" \
        --out "$OUT/compare" >"$OUT/compare.log" 2>&1 || { tail -n 20 "$OUT/compare.log" >&2; die "compare_python.sh failed (log: $OUT/compare.log)"; }
fi

python3 - "$OUT" "$PACED_RUNS" "$CAP_MODE" "$PYTHON" "$WARMUP" "$TRIAL" "$LABEL" <<'EOF'
import json, os, statistics, sys

out, paced_runs, cap_mode, python, warmup, trial, label = sys.argv[1:]
paced_runs, python = int(paced_runs), python == "1"


def load(path):
    with open(os.path.join(out, path)) as f:
        return json.load(f)


def paced(side, n):
    rows = []
    for rep in range(paced_runs):
        r = load(f"paced-{side}-{n}-{rep}.json")
        s = r["per_stream"]
        rows.append({"cpu_per_stream": r["cpu_percent"] / len(s), "p50": max(x["end_to_end_ms"]["p50"] for x in s),
                     "p99": max(x["end_to_end_ms"]["p99"] for x in s), "rss": r["peak_rss_mb"],
                     "late": max(x["frames_late"] / max(x["frames_in"], 1) for x in s) * 100})
    return {k: statistics.median(row[k] for row in rows) for k in rows[0]}


one = {side: paced(side, 1) for side in ("base", "current")}
four = {side: paced(side, 4) for side in ("base", "current")}
mb = {side: (four[side]["rss"] - one[side]["rss"]) / 3 for side in ("base", "current")}


def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"


rows = [
    [f"CPU per stream, 1 paced {label} stream (% of one core)", f"{one['base']['cpu_per_stream']:.1f}",
     f"{one['current']['cpu_per_stream']:.1f}", ratio(one["current"]["cpu_per_stream"], one["base"]["cpu_per_stream"]), "half"],
    [f"end-to-end p50, 1 paced {label} stream (ms)", f"{one['base']['p50']:.2f}", f"{one['current']['p50']:.2f}",
     ratio(one["current"]["p50"], one["base"]["p50"]), ""],
    [f"end-to-end p99, 1 paced {label} stream (ms)", f"{one['base']['p99']:.2f}", f"{one['current']['p99']:.2f}",
     ratio(one["current"]["p99"], one["base"]["p99"]), "<= 6"],
    [f"end-to-end p99, worst of 4 paced {label} streams (ms)", f"{four['base']['p99']:.2f}", f"{four['current']['p99']:.2f}",
     ratio(four["current"]["p99"], four["base"]["p99"]), ""],
    ["MB per extra stream (peak RSS, (4 streams - 1) / 3)", f"{mb['base']:.1f}", f"{mb['current']:.1f}",
     ratio(mb["current"], mb["base"]), "<= 40"],
]
if cap_mode != "none":
    cap = {side: load(f"capacity-{side}.json") for side in ("base", "current")}

    def capacity(c):
        at = "" if c["capacity"] < c["max_streams"] else " (cap)"
        return f"{c['capacity']}{at}"

    how = "bench --capacity" if cap_mode == "builtin" else "searched by this script, start counted"
    rows.append([f"capacity: paced {label} streams, each <= 1 % late ({how}; {warmup}+{trial} s trials)",
                 capacity(cap["base"]), capacity(cap["current"]),
                 ratio(cap["current"]["capacity"], cap["base"]["capacity"]), ">= 8 (p99 <= 33)"])
def other_load(stem):
    """Cores busy with other processes during a measured run."""
    try:
        with open(os.path.join(out, stem + ".load")) as f:
            busy, wall, own = (float(x) for x in f.read().split())
        return max(0.0, busy - own) / max(wall, 1.0)
    except (OSError, ValueError):
        return float("nan")


others = {}
for side in ("base", "current"):
    loads = [other_load(f"paced-{side}-{n}-{rep}") for n in (1, 4) for rep in range(paced_runs)]
    if cap_mode == "script":
        loads += [t["other_cpu_percent"] / 100 for t in cap[side]["trials"]]
    elif cap_mode == "builtin":
        loads += [(t.get("other_cpu_percent") or 0) / 100 for t in cap[side]["trials"]]
    others[side] = max(loads)
rows.append(["other processes' CPU during the paced and capacity runs (cores, the most of any run)",
             f"{others['base']:.2f}", f"{others['current']:.2f}", "", "~0 (quiet machine)"])
if python:
    summary = load("compare/summary.json")
    for entry, target in zip(summary["files"], [">= 3", ">= 12"]):
        o = entry["offline"]
        name = os.path.basename(entry["file"])
        b, c, p = o["baseline"]["fps"], o["ours"]["fps"], o["python"]["fps"]
        rows.append([f"offline fps / Python's, {name} (fps base, current, python: {b:.0f}, {c:.0f}, {p:.0f})",
                     f"{b / p:.2f}x", f"{c / p:.2f}x", ratio(c, b), target])

header = ["figure", "baseline", "current", "current/baseline", "issue 15 target"]
widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
print(line(header))
print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
for r in rows:
    print(line(r))
print()
print(f"Paced runs: median of {paced_runs} round(s), each side run back to back; CPU = process CPU time over wall "
      "time; p50/p99 = frame decoded -> record ready; late = record ready more than one frame interval after the "
      "frame was due.")
for side in ("base", "current"):
    if cap_mode != "none":
        trials = ", ".join(f"{t['streams']}:{'ok' if t['held'] else 'late'} ({t['late_percent']:.1f} %)"
                           for t in cap[side]["trials"])
        print(f"capacity trials {side}: {trials}")
if max(others.values()) > 0.2:
    print("note: other processes were busy during the runs (see above): the figures are noisy, and capacity "
          "measures what was left; rerun on a quieter machine.")
if python:
    print("The offline rows' own load figures: compare/ (scripts/compare_python.sh's table, 'other load').")
print(f"Reports and logs: {out}")
EOF
note "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
