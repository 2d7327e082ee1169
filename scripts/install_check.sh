#!/usr/bin/env bash
# An installed binary works (issue 13): `cargo install` from a copy of this clone, the copy then
# deleted, and the installed `affectstream run --source x.mp4`, started in an empty temporary
# directory with no AFFECTSTREAM_MODELS_TOML / AFFECTSTREAM_MODEL_DIR / ORT_DYLIB_PATH, must
# write records with faces and voice from the data directory alone. Then, with an empty data
# directory and with one that lacks ONNX Runtime, it must fail (exit 1) naming what is missing,
# where it looked and scripts/setup.sh.
# Usage: scripts/install_check.sh [CLIP]   (default: av/streams/Obama_clip2_muxed.mp4 of the
#        test media, $AFFECTSTREAM_TESTDATA or ../shared/testdata)
# Run scripts/setup.sh first: it fills the data directory ($AFFECTSTREAM_HOME, else
# $XDG_DATA_HOME/affectstream, else ~/.local/share/affectstream). The build goes to
# $CARGO_TARGET_DIR (default: this clone's target/), so the dependencies of an earlier release
# build are reused and a re-run finds the copy's build up to date.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf 'install_check: %s\n' "$*" >&2; }
fail() {
  say "FAIL: $*"
  exit 1
}

testdata=${AFFECTSTREAM_TESTDATA:-$ROOT/../shared/testdata}
clip=${1:-$testdata/av/streams/Obama_clip2_muxed.mp4}
[ -f "$clip" ] || fail "no clip at $clip (pass one, or set AFFECTSTREAM_TESTDATA)"
clip=$(realpath "$clip")
data=$(python3 "$ROOT/models/fetch.py" --print-home)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

# One fixed place per user: the copy keeps its path (and, with cp -p semantics, its files'
# times) from run to run, so cargo finds its build fresh.
work="${TMPDIR:-/tmp}/affectstream-install-check-$(id -u)"
rm -rf "$work"
mkdir -p "$work/affectstream" "$work/run" "$work/empty" "$work/no-ort"
trap 'rm -rf "$work"' EXIT

# 1. Install from a copy of the clone (tracked and untracked, not ignored, files), then delete it.
say "copying the clone to $work/affectstream"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
  tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xpf - -C "$work/affectstream"
say "cargo install --path $work/affectstream --root $work/root --locked (target dir $CARGO_TARGET_DIR)"
started=$SECONDS
cargo install --quiet --path "$work/affectstream" --root "$work/root" --locked
say "installed in $((SECONDS - started)) s; deleting the copy"
rm -rf "$work/affectstream"
bin="$work/root/bin/affectstream"
[ -x "$bin" ] || fail "cargo install left no $bin"

# Runs the installed binary in an empty directory on x.mp4 there, with only the data directory
# (arguments: extra VAR=value settings).
cp "$clip" "$work/run/x.mp4"
run() {
  (cd "$work/run" && env -u AFFECTSTREAM_MODELS_TOML -u AFFECTSTREAM_MODEL_DIR -u ORT_DYLIB_PATH \
    RUST_LOG=warn "$@" "$bin" run --source x.mp4 --out records.jsonl --no-listen)
}

# 2. With the data directory setup filled: records with faces and voice.
say "running $bin run --source x.mp4 in $work/run (data directory $data)"
run || fail "the installed binary failed (did scripts/setup.sh run?)"
python3 - "$work/run/records.jsonl" <<'PY' || fail "the records are not what a run gives"
import json, sys
records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
records = [r for r in records if 'state' not in r]
faces = sum(1 for r in records if r.get('faces'))
voice = sum(1 for r in records if (r.get('voice') or {}).get('speech_prob', 0) > 0.5)
print(f'install_check: {len(records)} records, {faces} with faces, {voice} with speech',
      file=sys.stderr)
sys.exit(0 if records and faces * 2 > len(records) and voice > 0 else 1)
PY

# 3. An empty data directory: the manifest is missing, and the message says how to install it.
expect_failure() { # NAME WHAT... : the run fails with exit 1 and its message contains each WHAT
  local name=$1 out rc=0
  shift
  out=$(run "AFFECTSTREAM_HOME=$work/$name" 2>&1) || rc=$?
  [ "$rc" -eq 1 ] || fail "with AFFECTSTREAM_HOME=$work/$name: exit $rc, not 1: $out"
  for what in "$@"; do
    grep -qF -- "$what" <<<"$out" || fail "with AFFECTSTREAM_HOME=$work/$name the message lacks '$what': $out"
  done
  say "AFFECTSTREAM_HOME=$work/$name: $(grep -m1 -i error <<<"$out" || printf '%s' "$out" | tail -n 1)"
}
expect_failure empty "$work/empty/models.toml" "is missing" "scripts/setup.sh"

# 4. Manifest and models but no ONNX Runtime: the library is what is missing.
cp "$data/models.toml" "$data/prosody_head.json" "$work/no-ort/"
ln -s "$data/models" "$work/no-ort/models"
expect_failure no-ort "ONNX Runtime library not found" "$work/no-ort/lib/libonnxruntime.so" \
  "scripts/setup.sh"
say "OK"
