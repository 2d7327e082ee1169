#!/usr/bin/env python3
"""Per-category valence/arousal statistics of AffectNet annotations: the face label ->
(valence, arousal) table in models/models.toml comes from this script.

Input: a CSV with columns number,exp,val,aro (AffectNet's expression code and its expert
valence/arousal in [-1, 1]; -2 marks uncertain/no-face rows, skipped), e.g. the validation-set
annotations redistributed with CAGE (github wagner-niklas/CAGE_expression_inference @ 88611a7,
affectnet_annotations/val_set_annotation_without_lnd.csv).
Expression codes (AffectNet readme): 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust,
6 Anger, 7 Contempt.

Usage: scripts/face_va_table.py val_set_annotation_without_lnd.csv
Prints count, mean, std and median per category, then the TOML lines for the manifest.
"""
import csv
import statistics
import sys

NAMES = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", "contempt"]


def main(path):
    rows = {i: [] for i in range(len(NAMES))}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            v, a = float(r["val"]), float(r["aro"])
            if v == -2 or a == -2:
                continue
            rows[int(r["exp"])].append((v, a))
    print(f"{'category':<9} {'n':>5} {'mean V':>7} {'mean A':>7} {'std V':>6} {'std A':>6} {'med V':>6} {'med A':>6}")
    table = {}
    for code, name in enumerate(NAMES):
        vs = [v for v, _ in rows[code]]
        as_ = [a for _, a in rows[code]]
        if len(vs) < 2:
            continue
        table[name] = (statistics.mean(vs), statistics.mean(as_))
        print(f"{name:<9} {len(vs):>5} {table[name][0]:7.3f} {table[name][1]:7.3f} "
              f"{statistics.stdev(vs):6.3f} {statistics.stdev(as_):6.3f} "
              f"{statistics.median(vs):6.3f} {statistics.median(as_):6.3f}")
    print()
    for name in ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]:
        if name in table:
            print(f"{name} = [{table[name][0]:.3f}, {table[name][1]:.3f}]")


if __name__ == "__main__":
    main(sys.argv[1])
