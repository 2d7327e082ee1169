#!/usr/bin/env python3
"""Fits the calibration priors (the population's resting raw face and voice valence/arousal,
`[fusion.calibration] face_prior / voice_prior`) on the talking-head streams, and checks them
with a leave-one-stream-out split.

What may be fitted: ../shared/testdata/av/streams (ordinary talking heads, unlabeled) and, as a
check only, the RAVDESS neutral/calm clips. Each clip is run through `affectstream run
--calibration off`; a clip's resting value is the median of its reliable raw estimates
(face: reliability >= 0.3; voice: each new window with reliability >= 0.3); the prior is the
median of the clips' medians (each speaker counts once, whatever the clip's length).

Held-out check: for each stream, the prior is refitted without it and the stream is run with
that prior (calibration on); its conflict false-alarm rate (share of records with an active
conflict) is printed next to the one with the full-data prior.

Usage: scripts/calibration/fit_priors.py [--bin target/release/affectstream] [--testdata DIR]
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile


def records(path):
    with open(path) as f:
        for line in f:
            if line.strip() and '"state"' not in line:
                yield json.loads(line)


def run(binary, source, out, extra=()):
    subprocess.run([binary, "run", "--source", source, "--out", out, "--device", "cpu", *extra],
                   check=True, stderr=subprocess.DEVNULL)


def resting(path):
    face, voice, seen = [], [], set()
    for r in records(path):
        fused = r.get("fused") or {}
        rel = fused.get("reliability", [0.0, 0.0])
        if r["faces"] and rel[0] >= 0.3:
            f = r["faces"][0]
            face.append((f["valence_raw"], f["arousal_raw"]))
        v = r.get("voice")
        if v and v.get("valence_raw") is not None and rel[1] >= 0.3:
            key = (v["valence_raw"], v["arousal_raw"])
            if key not in seen:
                seen.add(key)
                voice.append(key)
    med = lambda xs: (statistics.median(x for x, _ in xs), statistics.median(y for _, y in xs)) if xs else None
    return med(face), med(voice)


def prior(values):
    values = [v for v in values if v]
    return [round(statistics.median(v[0] for v in values), 2),
            round(statistics.median(v[1] for v in values), 2)]


def false_alarms(path):
    recs = list(records(path))
    return sum(1 for r in recs if (r.get("fused") or {}).get("conflict_active")) / max(1, len(recs))


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--bin", default=os.path.join(root, "target/release/affectstream"))
    ap.add_argument("--testdata", default=os.path.join(root, "../shared/testdata"))
    args = ap.parse_args()
    streams = sorted(glob.glob(os.path.join(args.testdata, "av/streams/*.mp4")))
    rest = []
    labels = os.path.join(args.testdata, "LABELS.csv")
    for line in open(labels):
        cols = line.split(",")
        if len(cols) > 2 and cols[2] == "speech" and cols[1] in ("neutral", "calm"):
            rest.append(os.path.join(args.testdata, cols[0]))
    tmp = tempfile.mkdtemp(prefix="affectstream-priors-")
    per = {}
    for s in streams + rest:
        out = os.path.join(tmp, os.path.basename(s) + ".jsonl")
        run(args.bin, s, out, ["--calibration", "off"])
        per[s] = resting(out)
    print("resting raw (valence, arousal) per clip, median of reliable estimates:")
    for s in streams:
        f, v = per[s]
        print(f"  {os.path.basename(s):<36} face {fmt(f)}  voice {fmt(v)}")
    face_prior = prior([per[s][0] for s in streams])
    voice_prior = prior([per[s][1] for s in streams])
    print(f"face_prior  = {face_prior}   (median of {len(streams)} streams)")
    print(f"voice_prior = {voice_prior}   (median of {len(streams)} streams)")
    print(f"check: RAVDESS neutral/calm voice, median of {len(rest)} clips: "
          f"{prior([per[s][1] for s in rest])} (acted calm speech reads lower arousal)")
    print("leave-one-stream-out: prior without the stream -> its false alarms (full prior)")
    for s in streams:
        others = [o for o in streams if o != s]
        fp, vp = prior([per[o][0] for o in others]), prior([per[o][1] for o in others])
        results = []
        for name, (f, v) in (("held-out", (fp, vp)), ("full", (face_prior, voice_prior))):
            cfg = os.path.join(tmp, f"{os.path.basename(s)}.{name}.toml")
            with open(cfg, "w") as c:
                c.write(f"[fusion.calibration]\nface_prior = {f}\nvoice_prior = {v}\n")
            out = os.path.join(tmp, f"{os.path.basename(s)}.{name}.jsonl")
            run(args.bin, s, out, ["--config", cfg])
            results.append(false_alarms(out))
        print(f"  {os.path.basename(s):<36} face {fp} voice {vp}: {results[0] * 100:.1f} % "
              f"({results[1] * 100:.1f} %)")


def fmt(x):
    return "-" if x is None else f"({x[0]:+.2f}, {x[1]:+.2f})"


if __name__ == "__main__":
    sys.exit(main())
