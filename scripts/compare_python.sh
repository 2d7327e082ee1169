#!/usr/bin/env bash
# Side-by-side benchmark: `affectstream bench` against the Python reference pipeline
# (../shared/tools/baseline.py: OpenCV YuNet + onnxruntime, see ../shared/tools/README.md) on
# the same files, on this machine, in one go. Runs alternate (ours, python, ours, python, ...)
# so drifting machine load hits both sides alike; every metric is the median over the runs.
#
#   scripts/compare_python.sh                       # the two reference clips, 3 offline runs each
#   scripts/compare_python.sh --runs 5 --paced      # + paced (1x real time) runs
#   scripts/compare_python.sh some.mp4 other.mp4    # other files
#
# Options:
#   --runs N         offline runs per side and file (default 3)
#   --paced          also compare paced runs (ours --paced vs python --mode paced; each run
#                    lasts as long as the clip)
#   --paced-runs N   paced runs per side and file (default 1)
#   --no-build       use the existing target/release/affectstream instead of building it
#   --bin PATH       measure this affectstream binary (no build)
#   --baseline PATH  also measure this second affectstream binary, in the same rounds (ours,
#                    baseline, python, ...), with its ratios to python and ours/baseline
#   --out DIR        keep the reports and logs here (default: a new temporary directory)
#   -h, --help       this text
# Environment:
#   AFFECTSTREAM_REF_VENV  Python venv for the reference (default /tmp/affectstream-refvenv;
#                          created from ../shared/tools/requirements-baseline.txt when missing)
#   AFFECTSTREAM_TESTDATA  test media directory (default ../shared/testdata)
#
# Requires ffmpeg (installed with apt-get when missing and running as root) and python3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=$(cd "$ROOT/.." && pwd)/shared
TOOLS="$SHARED/tools"
BASELINE="$TOOLS/baseline.py"
REQUIREMENTS="$TOOLS/requirements-baseline.txt"
TESTDATA=${AFFECTSTREAM_TESTDATA:-$SHARED/testdata}
VENV=${AFFECTSTREAM_REF_VENV:-/tmp/affectstream-refvenv}
BIN="$ROOT/target/release/affectstream"
BASE_BIN=""

RUNS=3
PACED=0
PACED_RUNS=1
BUILD=1
OUT=""
FILES=()

die() {
    echo "compare_python: error: $*" >&2
    exit 1
}
note() { echo "compare_python: $*" >&2; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
positive_int() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive whole number, got '$2'"; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --runs) [[ $# -ge 2 ]] || die "--runs needs a value"; positive_int --runs "$2"; RUNS=$2; shift 2 ;;
        --paced) PACED=1; shift ;;
        --paced-runs) [[ $# -ge 2 ]] || die "--paced-runs needs a value"; positive_int --paced-runs "$2"; PACED_RUNS=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --bin) [[ $# -ge 2 ]] || die "--bin needs a path"; BIN=$2; BUILD=0; shift 2 ;;
        --baseline) [[ $# -ge 2 ]] || die "--baseline needs a path"; BASE_BIN=$2; shift 2 ;;
        --out) [[ $# -ge 2 ]] || die "--out needs a directory"; OUT=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        --) shift; FILES+=("$@"); break ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *) FILES+=("$1"); shift ;;
    esac
done
if [[ ${#FILES[@]} -eq 0 ]]; then
    FILES=("$TESTDATA/av/streams/tedlieu_60s_256.mp4" "$TESTDATA/av/streams/obama_dnc2020_cspan_64s_720p.mp4")
fi
for f in "${FILES[@]}"; do
    [[ -f $f ]] || die "media file not found: $f (set AFFECTSTREAM_TESTDATA or pass files)"
done
[[ -f $BASELINE ]] || die "the Python reference is missing: $BASELINE"
command -v python3 >/dev/null || die "python3 is needed (for the reference and to read the reports)"

# --- ffmpeg (baseline.py decodes the audio with it) ---------------------------------------------
if ! command -v ffmpeg >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        note "ffmpeg missing: installing it with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null \
            || die "apt-get could not install ffmpeg"
    else
        die "ffmpeg is needed by the Python reference: install it (apt-get install ffmpeg)"
    fi
fi

# --- the reference's venv -------------------------------------------------------------------------
PY="$VENV/bin/python"
venv_ok() { [[ -x $PY ]] && "$PY" -c 'import cv2, onnxruntime, numpy' 2>/dev/null; }
if ! venv_ok; then
    note "setting up the reference venv at $VENV (from $(basename "$REQUIREMENTS"))"
    [[ -f $REQUIREMENTS ]] || die "missing $REQUIREMENTS"
    [[ -x $PY ]] || python3 -m venv "$VENV" || die "cannot create a venv at $VENV (python3-venv installed?)"
    "$PY" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS" \
        || die "pip could not install $REQUIREMENTS into $VENV"
    venv_ok || die "the venv at $VENV still cannot import cv2, onnxruntime and numpy"
fi

# --- our binary -----------------------------------------------------------------------------------
if [[ $BUILD -eq 1 ]]; then
    note "building the release binary (cargo build --release; --no-build skips this)"
    (cd "$ROOT" && cargo build --release --quiet --bin affectstream) \
        || die "cargo build --release failed (fix the build, or use --no-build with an existing binary)"
fi
[[ -x $BIN ]] || die "no binary at $BIN (run cargo build --release)"
[[ -z $BASE_BIN || -x $BASE_BIN ]] || die "no baseline binary at $BASE_BIN"

if [[ -z $OUT ]]; then
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/affectstream-compare.XXXXXX")
else
    mkdir -p "$OUT" || die "cannot create $OUT"
fi
OUT=$(cd "$OUT" && pwd)
note "reports and logs go to $OUT"
# A private copy: a rebuild of target/release during the runs cannot mix two versions.
cp "$BIN" "$OUT/affectstream" || die "cannot copy $BIN to $OUT"
BIN="$OUT/affectstream"
if [[ -n $BASE_BIN ]]; then
    cp "$BASE_BIN" "$OUT/affectstream-baseline" || die "cannot copy $BASE_BIN to $OUT"
    BASE_BIN="$OUT/affectstream-baseline"
fi

# busy_ms (the whole machine's busy CPU ms) and now_ms.
# shellcheck source=scripts/machine_load.sh
source "$ROOT/scripts/machine_load.sh"

# "failed with exit code N", or the signal that ended it.
failure() {
    if [[ $1 -gt 128 ]]; then
        echo "was killed by signal $(kill -l "$(($1 - 128))" 2>/dev/null || echo "$(($1 - 128))") (not by this script)"
    else
        echo "failed with exit code $1"
    fi
}

# Runs one side once. $1 ours|base|py, $2 offline|paced, $3 file index, $4 repetition.
run_one() {
    local side=$1 mode=$2 idx=$3 rep=$4
    local file=${FILES[$idx]}
    local stem="$side-$mode-$idx-$rep"
    local log="$OUT/$stem.log"
    local started=$SECONDS busy0 t0 rc=0 TIMEFORMAT='%3U %3S'  # `time`: CPU s of the run and its children
    busy0=$(busy_ms)
    t0=$(now_ms)
    if [[ $side == ours || $side == base ]]; then
        local bin=$BIN
        [[ $side == base ]] && bin=$BASE_BIN
        local args=(bench --source "$file" --device cpu --report "$OUT/$stem.json" --plot "$OUT/$stem.png")
        [[ $mode == paced ]] && args+=(--paced)
        { time RUST_LOG=${RUST_LOG:-warn} "$bin" "${args[@]}" >"$log" 2>&1; } 2>"$OUT/$stem.cpu" || rc=$?
        if [[ $rc -ne 0 ]]; then
            tail -n 20 "$log" >&2
            die "$(basename "$bin") ${args[*]} $(failure "$rc") (log: $log)"
        fi
    else
        { time "$PY" "$BASELINE" "$file" --mode "$mode" --cv-threads -1 >"$OUT/$stem.stdout" 2>"$log"; } 2>"$OUT/$stem.cpu" || rc=$?
        if [[ $rc -ne 0 ]]; then
            tail -n 20 "$log" >&2
            die "baseline.py $file --mode $mode $(failure "$rc") (log: $log)"
        fi
        grep '^{' "$OUT/$stem.stdout" | tail -n 1 >"$OUT/$stem.json" || true
        [[ -s $OUT/$stem.json ]] || die "baseline.py printed no JSON summary (see $OUT/$stem.stdout, $log)"
    fi
    # Machine-wide busy CPU ms and wall ms of this run (ours and everything else).
    echo "$(($(busy_ms) - busy0)) $(($(now_ms) - t0))" >"$OUT/$stem.load"
    note "  $side $mode run $((rep + 1)): $(basename "$file") done in $((SECONDS - started)) s"
}

note "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//')"
for idx in "${!FILES[@]}"; do
    note "$(basename "${FILES[$idx]}"): $RUNS offline run(s) per side, alternating"
    for ((rep = 0; rep < RUNS; rep++)); do
        run_one ours offline "$idx" "$rep"
        [[ -n $BASE_BIN ]] && run_one base offline "$idx" "$rep"
        run_one py offline "$idx" "$rep"
    done
    if [[ $PACED -eq 1 ]]; then
        note "$(basename "${FILES[$idx]}"): $PACED_RUNS paced run(s) per side (each as long as the clip)"
        for ((rep = 0; rep < PACED_RUNS; rep++)); do
            run_one ours paced "$idx" "$rep"
            [[ -n $BASE_BIN ]] && run_one base paced "$idx" "$rep"
            run_one py paced "$idx" "$rep"
        done
    fi
done

# --- the table --------------------------------------------------------------------------------
python3 - "$OUT" "$RUNS" "$PACED" "$PACED_RUNS" "$([[ -n $BASE_BIN ]] && echo 1 || echo 0)" "${FILES[@]}" <<'EOF'
import json, os, statistics, sys

out, runs, paced, paced_runs = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
baseline = sys.argv[5] == "1"
files = sys.argv[6:]


def load(side, mode, idx, n):
    reports = []
    for rep in range(n):
        path = os.path.join(out, f"{side}-{mode}-{idx}-{rep}.json")
        try:
            with open(path) as f:
                reports.append(json.load(f))
        except (OSError, ValueError) as e:
            sys.exit(f"compare_python: error: cannot read {path}: {e}")
    return reports


def med(reports, get):
    """Median of one metric over the runs (each metric separately)."""
    try:
        return statistics.median(float(get(r)) for r in reports)
    except (KeyError, IndexError, TypeError) as e:
        sys.exit(f"compare_python: error: a report lacks a field ({e!r}); did a format change?")


def ours_offline(r):
    s = r["per_stream"][0]
    return {"frames": s["frames_in"], "fps": s["input_fps"], "p50": s["end_to_end_ms"]["p50"],
            "p99": s["end_to_end_ms"]["p99"], "rss": r["peak_rss_mb"], "cpu": r["cpu_percent"] / 100}


def py_offline(r):
    o = r["offline"]
    return {"frames": r["frames"], "fps": o["fps"], "p50": o["latency_ms"]["p50"], "p99": o["latency_ms"]["p99"],
            "rss": r["peak_rss_mb"], "ffmpeg_rss": r.get("ffmpeg_peak_rss_mb", 0.0), "cpu": o["cpu_s"] / o["wall_s"]}


def ours_paced(r):
    s = r["per_stream"][0]
    return {"frames": s["frames_in"], "p50": s["end_to_end_ms"]["p50"], "p99": s["end_to_end_ms"]["p99"],
            "lag99": s["lag_ms"]["p99"], "late": s["frames_late"], "rss": r["peak_rss_mb"],
            "cpu": r["cpu_percent"] / 100}


def py_paced(r):
    p = r["paced"]
    return {"frames": r["frames"], "p50": p["latency_ms"]["p50"], "p99": p["latency_ms"]["p99"],
            "lag99": p["lag_ms"]["p99"], "late": p["late_frames"], "rss": r["peak_rss_mb"],
            "cpu": p["cpu_s"] / p["wall_s"]}


def medians(reports, extract, side, mode, idx):
    rows = [extract(r) for r in reports]
    for rep, row in enumerate(rows):
        # Cores busy with anything but the measured process (and its children) during its run.
        stem = os.path.join(out, f"{side}-{mode}-{idx}-{rep}")
        try:
            with open(stem + ".load") as f:
                busy_ms, wall_ms = (float(x) for x in f.read().split())
            with open(stem + ".cpu") as f:
                own_ms = 1000 * sum(float(x) for x in f.read().split()[-2:])
            row["other"] = max(0.0, (busy_ms - own_ms) / max(wall_ms, 1.0))
        except (OSError, ValueError):
            row["other"] = float("nan")
    return {k: med(rows, lambda x, k=k: x[k]) for k in rows[0]}


def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"


def table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).rjust(w) for c, w in zip(cells, widths)) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


summary = {"runs": runs, "paced_runs": paced_runs if paced else 0, "files": []}
rows = []
for idx, path in enumerate(files):
    o = medians(load("ours", "offline", idx, runs), ours_offline, "ours", "offline", idx)
    p = medians(load("py", "offline", idx, runs), py_offline, "py", "offline", idx)
    entry = {"file": path, "offline": {"ours": o, "python": p}}
    row = [os.path.basename(path), f"{o['frames']:.0f}/{p['frames']:.0f}",
           f"{o['fps']:.1f}", f"{p['fps']:.1f}", ratio(o["fps"], p["fps"]),
           f"{o['p50']:.2f}", f"{p['p50']:.2f}", f"{o['p99']:.2f}", f"{p['p99']:.2f}",
           f"{o['cpu']:.2f}", f"{p['cpu']:.2f}", f"{o['other']:.2f}/{p['other']:.2f}",
           f"{o['rss']:.0f}", f"{p['rss']:.0f} (+{p['ffmpeg_rss']:.0f})"]
    if baseline:
        b = medians(load("base", "offline", idx, runs), ours_offline, "base", "offline", idx)
        entry["offline"]["baseline"] = b
        row += [f"{b['fps']:.1f}", ratio(b["fps"], p["fps"]), ratio(o["fps"], b["fps"]), f"{b['rss']:.0f}"]
    rows.append(row)
    summary["files"].append(entry)

print()
print(f"Offline (as fast as it decodes), median of {runs} run(s) per side; ours: affectstream bench "
      f"--device cpu, python: baseline.py --mode offline --cv-threads -1")
table(["file", "frames ours/py", "fps ours", "fps py", "fps ours/py", "p50 ms ours", "p50 ms py",
       "p99 ms ours", "p99 ms py", "cores ours", "cores py", "other load ours/py", "peak RSS MB ours",
       "peak RSS MB py (+ffmpeg)"]
      + (["fps base", "fps base/py", "fps ours/base", "peak RSS MB base"] if baseline else []), rows)

if paced:
    rows = []
    for idx, path in enumerate(files):
        o = medians(load("ours", "paced", idx, paced_runs), ours_paced, "ours", "paced", idx)
        p = medians(load("py", "paced", idx, paced_runs), py_paced, "py", "paced", idx)
        summary["files"][idx]["paced"] = {"ours": o, "python": p}
        row = [os.path.basename(path), f"{o['p50']:.2f}", f"{p['p50']:.2f}", f"{o['p99']:.2f}",
               f"{p['p99']:.2f}", ratio(o["p99"], p["p99"]), f"{o['lag99']:.2f}", f"{p['lag99']:.2f}",
               f"{o['late']:.0f}/{o['frames']:.0f}", f"{p['late']:.0f}/{p['frames']:.0f}",
               f"{o['cpu']:.2f}", f"{p['cpu']:.2f}", f"{o['other']:.2f}/{p['other']:.2f}"]
        if baseline:
            b = medians(load("base", "paced", idx, paced_runs), ours_paced, "base", "paced", idx)
            summary["files"][idx]["paced"]["baseline"] = b
            row += [f"{b['p50']:.2f}", f"{b['p99']:.2f}", f"{b['late']:.0f}/{b['frames']:.0f}", f"{b['cpu']:.2f}"]
        rows.append(row)
    print()
    print(f"Paced at 1x real time, median of {paced_runs} run(s) per side")
    table(["file", "p50 ms ours", "p50 ms py", "p99 ms ours", "p99 ms py", "p99 ours/py", "lag p99 ms ours",
           "lag p99 ms py", "late ours", "late py", "cores ours", "cores py", "other load ours/py"]
          + (["p50 ms base", "p99 ms base", "late base", "cores base"] if baseline else []), rows)

print()
if baseline:
    print("base = the --baseline binary, run in the same rounds as ours and python (ours, base, python, ...).")
print("fps ours/py > 1: we are faster. Latency: ours = frame decoded -> record ready through the threaded")
print("pipeline (offline this includes waiting in the bounded queues between stages); python = cap.read()")
print("returned -> result ready in one sequential loop. Python's fps includes its ffmpeg audio decode;")
print("its peak RSS is the Python process alone, the ffmpeg child's peak is in parentheses.")
print("cores = CPU time / wall time of the measured process. other load = cores busy with everything else")
print("during its runs (machine-wide busy time from /proc/stat minus the run's own CPU time, children")
print("included): well above 0.1 means something else was running and the figures are noisy.")
print("Late = result more than one frame interval after the frame was due.")
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
print(f"Reports, logs and summary.json: {out}")
EOF
