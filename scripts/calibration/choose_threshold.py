#!/usr/bin/env python3
"""Chooses the conflict event threshold (`[fusion.conflict] on`, with off = 0.6 * on) from
congruent data for a stated false-alarm rate, and shows what it costs in detection.

Congruent data: the talking-head streams of testdata/av/streams (ordinary speech: no conflict
expected) and the congruent constructed pairs. The rule (docs/fusion.md section 6): the lowest
`on` (steps of 0.01) at which a conflict is active in at most MAX_STREAM of the records of any
one stream and at most MAX_POOLED of all their records together.

The pipeline runs once per clip with events switched off (on = 1), so each record carries the
smoothed conflict; the hysteresis (on / off / min_duration_s) is then replayed here exactly as
`ConflictTracker` does it. Usage:
    scripts/calibration/choose_threshold.py [--bin target/release/affectstream] [--config F]
"""
import argparse
import glob
import json
import os
import subprocess
import tempfile

MAX_STREAM = 0.05
MAX_POOLED = 0.01
SHOWN = 0.2  # a clip shows a conflict when an event is active in >= 20 % of its records


def series(path):
    out = []
    with open(path) as f:
        for line in f:
            if not line.strip() or '"state"' in line:
                continue
            r = json.loads(line)
            fused = r.get("fused")
            out.append((r["t"], fused["conflict"] if fused else 0.0))
    return out


def active_share(ser, on, off, min_duration):
    start, confirmed, active = None, False, 0
    for t, s in ser:
        if start is None:
            if s > on:
                start, confirmed = t, min_duration <= 0
        elif s < off:
            start, confirmed = None, False
        elif not confirmed and t - start >= min_duration:
            confirmed = True
        active += start is not None and confirmed
    return active / max(1, len(ser))


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(root, "target/release/affectstream"))
    ap.add_argument("--testdata", default=os.path.join(root, "../shared/testdata"))
    ap.add_argument("--config", help="a config whose [fusion] section is used (events are switched off on top)")
    ap.add_argument("--min-duration", type=float, default=0.5)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="affectstream-threshold-")
    cfg = os.path.join(tmp, "no-events.toml")
    base = open(args.config).read() if args.config else ""
    if "[fusion.conflict]" in base:
        base = base.replace("[fusion.conflict]", "[fusion.conflict]\non = 1.0\noff = 0.99\n", 1)
    else:
        base += "\n[fusion.conflict]\non = 1.0\noff = 0.99\n"
    open(cfg, "w").write(base)
    streams = sorted(glob.glob(os.path.join(args.testdata, "av/streams/*.mp4")))
    pairs = sorted(glob.glob(os.path.join(args.testdata, "av/constructed_pairs/*.mp4")))
    S = {}
    for src in streams + pairs:
        out = os.path.join(tmp, os.path.basename(src) + ".jsonl")
        subprocess.run([args.bin, "run", "--source", src, "--out", out, "--device", "cpu",
                        "--config", cfg], check=True, stderr=subprocess.DEVNULL)
        S[src] = series(out)
    congruent_pairs = [p for p in pairs if os.path.basename(p).startswith("congruent")]
    conflict_pairs = [p for p in pairs if os.path.basename(p).startswith("conflict")]
    chosen = None
    print(f"{'on':>5} {'max stream':>10} {'pooled':>7} {'conflict shown':>15} {'congruent shown':>16}")
    for step in range(2, 60):
        on = step / 100
        off = 0.6 * on
        share = {s: active_share(S[s], on, off, args.min_duration) for s in S}
        per_stream = [share[s] for s in streams]
        pooled = sum(share[s] * len(S[s]) for s in streams) / sum(len(S[s]) for s in streams)
        shown_c = sum(share[p] >= SHOWN for p in conflict_pairs)
        shown_k = sum(share[p] >= SHOWN for p in congruent_pairs)
        ok = max(per_stream) <= MAX_STREAM and pooled <= MAX_POOLED
        if ok and chosen is None:
            chosen = on
        if step % 2 == 0 or on == chosen:
            mark = "  <- chosen" if on == chosen else ""
            print(f"{on:5.2f} {max(per_stream) * 100:9.1f}% {pooled * 100:6.1f}% "
                  f"{shown_c:>9}/{len(conflict_pairs):<5} {shown_k:>10}/{len(congruent_pairs):<5}{mark}")
    print(f"chosen on = {chosen}, off = {chosen and round(0.6 * chosen, 3)} "
          f"(max {MAX_STREAM:.0%} of any stream's records, {MAX_POOLED:.0%} pooled)")


if __name__ == "__main__":
    main()
