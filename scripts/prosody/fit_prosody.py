#!/usr/bin/env python3
"""Fit the prosody linear heads (arousal, valence) on RAVDESS features.

Input: CSVs written by `cargo run --release --example dump_features`:
  OUT_DIR/features_{utt,win}.csv            clean audio
  OUT_DIR/noise_*/features_{utt,win}.csv    same files with added noise (optional;
                                            made with PROSODY_NOISE_DBFS / _COLOR)
"utt" = whole utterance, "win" = 2.5 s windows every 0.5 s (what the product runs).
Labels: emotion -> (valence, arousal) from VA_MAPPING_NRC_VAD.csv.

Evaluation is leave-one-speaker-out (LOSO): each actor is held out once, with
all of its noise conditions. Hyper-parameters (ridge alpha and a feature subset
from a short list fixed in advance) are chosen *inside* each outer fold by an
inner LOSO over the training actors, so the reported Spearman rho is never
tuned on the held-out actor. Two training regimes are compared:
  clean       train on clean rows only; inner objective: rho on clean rows
  multi       train on clean + noisy rows (multi-condition); inner objective:
              rho pooled over all conditions, which also penalises noise shifts
  multi_free  as multi, but the subset is fixed a priori to gain_speaker_free:
              absolute level and absolute F0 cannot be validated here (one
              recording gain, six male actors) and would misfire on other
              microphones and on female voices. Only alpha is chosen by LOSO.
Both are scored on the held-out actor's clean rows and on each noisy condition.

Writes (heads fit on all actors, hyper-parameters from LOSO on all actors):
  prosody_head.json        2.5 s windows, multi_free (shipped head)
  prosody_head_clean.json  2.5 s windows, clean-only (reference)

Usage: fit_prosody.py [OUT_DIR] [MAPPING_CSV]
"""

import csv
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

OUT_DIR = Path(sys.argv[1] if len(sys.argv) > 1 else "out")
MAPPING = Path(
    sys.argv[2] if len(sys.argv) > 2 else "../shared/testdata/VA_MAPPING_NRC_VAD.csv"
)
EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
ALPHAS = [0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0]
META = ["file", "actor", "emotion", "intensity", "duration_s", "start_s"]
TARGETS = ("arousal", "valence")

# Feature subsets fixed a priori (literature arousal correlates), not searched.
SUBSETS = {
    "all": None,
    "core": [
        "loud_mean_db",
        "f0_mean_st",
        "f0_range_st",
        "alpha_ratio_db",
        "hammarberg_db",
        "syllable_rate",
    ],
    # Drops absolute level and absolute pitch (microphone gain; speaker, and all
    # fitting actors are male) and the pause-dependent voiced_frac / onset_rate.
    "gain_speaker_free": [
        "loud_range_db",
        "f0_range_st",
        "f0_delta_st",
        "voicing_strength",
        "syllable_rate",
        "centroid_khz",
        "alpha_ratio_db",
        "hammarberg_db",
        "spectral_slope_db_khz",
    ],
}


def load_mapping():
    va = {}
    with open(MAPPING, newline="") as f:
        for row in csv.DictReader(f):
            va[row["dataset_label"]] = (
                float(row["valence_m1_p1"]),
                float(row["arousal_m1_p1"]),
            )
    return va


class Data:
    """Rows of one level (utt / win) over all conditions."""

    def __init__(self, level, va):
        dirs = [("clean", OUT_DIR)] + [
            (d.name, d) for d in sorted(OUT_DIR.glob("noise_*")) if d.is_dir()
        ]
        rows, conds = [], []
        for cond, d in dirs:
            with open(d / f"features_{level}.csv", newline="") as f:
                for r in csv.DictReader(f):
                    rows.append(r)
                    conds.append(cond)
        self.names = [k for k in rows[0] if k not in META]
        self.x = np.array([[float(r[n]) for n in self.names] for r in rows])
        self.y = {
            "valence": np.array([va[EMOTIONS[r["emotion"]]][0] for r in rows]),
            "arousal": np.array([va[EMOTIONS[r["emotion"]]][1] for r in rows]),
        }
        self.actor = np.array([r["actor"] for r in rows])
        self.file = np.array([r["file"] for r in rows])
        self.emotion = np.array([EMOTIONS[r["emotion"]] for r in rows])
        self.key = np.array([f"{r['file']}@{r.get('start_s', '')}" for r in rows])
        self.cond = np.array(conds)
        self.conds = [c for c, _ in dirs]

    def subset_rows(self, mask):
        """Shallow copy restricted to rows in `mask`."""
        out = object.__new__(Data)
        out.names = self.names
        out.x = self.x[mask]
        out.y = {k: v[mask] for k, v in self.y.items()}
        for attr in ("actor", "file", "emotion", "key", "cond"):
            setattr(out, attr, getattr(self, attr)[mask])
        out.conds = [c for c in self.conds if (out.cond == c).any()]
        return out


def columns(names, subset):
    if subset is None:
        return list(range(len(names)))
    return [names.index(n) for n in subset]


def fit(x, y, alpha):
    scaler = StandardScaler().fit(x)
    model = Ridge(alpha=alpha).fit(scaler.transform(x), y)
    return scaler, model


def rho(a, b):
    if len(a) < 3:
        return 0.0
    r = spearmanr(a, b).statistic
    return float(r) if np.isfinite(r) else 0.0


def loso_predict(d, y, train_mask, alpha, cols):
    """Held-out predictions for every row; fold = actor, training rows limited to train_mask."""
    pred = np.zeros_like(y)
    for a in np.unique(d.actor):
        tr = (d.actor != a) & train_mask
        te = d.actor == a
        scaler, model = fit(d.x[tr][:, cols], y[tr], alpha)
        pred[te] = model.predict(scaler.transform(d.x[te][:, cols]))
    return pred


def uses_noise(regime):
    return regime.startswith("multi")


def subsets_for(regime):
    """Subsets a regime may pick from (multi_free: fixed a priori to the gain/speaker-free set)."""
    if regime == "multi_free":
        return {"gain_speaker_free": SUBSETS["gain_speaker_free"]}
    return SUBSETS


def select(d, y, regime):
    """(rho, subset, alpha) with the best LOSO objective on d."""
    train_mask = np.ones(len(y), bool) if uses_noise(regime) else d.cond == "clean"
    score_mask = train_mask
    best = None
    for sname, subset in subsets_for(regime).items():
        cols = columns(d.names, subset)
        for alpha in ALPHAS:
            pred = loso_predict(d, y, train_mask, alpha, cols)
            r = rho(pred[score_mask], y[score_mask])
            if best is None or r > best[0] + 1e-9:
                best = (r, sname, alpha)
    return best


def train_head(d, y, regime):
    """Select (subset, alpha) by LOSO on d, fit, and calibrate the output scale.

    Ridge shrinkage (and Spearman-based selection, which ignores scale) leaves
    the raw output compressed towards the mean. A 1-D linear map y ~ a + b*p,
    fitted on the LOSO predictions of this same selection, restores the scale;
    it is monotonic (b > 0) so rank metrics are unchanged. Returns
    (cols, mean, std, weights, bias, subset, alpha, (a, b)).
    """
    _, sname, alpha = select(d, y, regime)
    cols = columns(d.names, SUBSETS[sname])
    tr = (d.cond == "clean") | uses_noise(regime)
    p = loso_predict(d, y, tr, alpha, cols)
    b, a = np.polyfit(p[tr], y[tr], 1)
    if not np.isfinite(b) or b <= 0:
        a, b = 0.0, 1.0
    scaler, model = fit(d.x[tr][:, cols], y[tr], alpha)
    weights = model.coef_ * b
    bias = float(model.intercept_) * b + a
    return cols, scaler.mean_, scaler.scale_, weights, bias, sname, alpha, (float(a), float(b))


def apply_head(x, cols, mean, std, weights, bias):
    return np.clip((x[:, cols] - mean) / std @ weights + bias, -1.0, 1.0)


def nested_loso(d, target, regime):
    y = d.y[target]
    pred = np.zeros_like(y)
    picks = []
    for a in np.unique(d.actor):
        inner = d.subset_rows(d.actor != a)
        cols, mean, std, w, b, sname, alpha, cal = train_head(inner, inner.y[target], regime)
        te = d.actor == a
        pred[te] = apply_head(d.x[te], cols, mean, std, w, b)
        picks.append(f"{a}:{sname}/a={alpha:g}/x{cal[1]:.1f}")
    return pred, picks


def per_file(pred, y, files):
    uniq = sorted(set(files))
    return (
        np.array([pred[files == f].mean() for f in uniq]),
        np.array([y[files == f][0] for f in uniq]),
    )


def scores(d, target, pred):
    """Per-condition row and per-file rho, plus mean shift vs clean on matched rows."""
    y = d.y[target]
    clean = {k: p for k, p, c in zip(d.key, pred, d.cond) if c == "clean"}
    out = {}
    for c in d.conds:
        m = d.cond == c
        pf, tf = per_file(pred[m], y[m], d.file[m])
        shift = [p - clean[k] for k, p in zip(d.key[m], pred[m]) if k in clean]
        out[c] = {
            "rows": rho(pred[m], y[m]),
            "mse": float(np.mean((pred[m] - y[m]) ** 2)),
            "pred_sd": float(np.std(pred[m])),
            "files": rho(pf, tf),
            "shift": float(np.mean(shift)) if shift else 0.0,
            "n": int(m.sum()),
        }
    return out


def head_json(d, target, regime):
    cols, m, sd, w, b, sname, alpha, cal = train_head(d, d.y[target], regime)
    n = len(d.names)
    mean, std, weights = [0.0] * n, [1.0] * n, [0.0] * n
    for j, c in enumerate(cols):
        mean[c] = float(m[j])
        std[c] = float(sd[j])
        weights[c] = float(w[j])
    return {
        "mean": mean,
        "std": std,
        "weights": weights,
        "bias": float(b),
        "subset": sname,
        "alpha": alpha,
        "regime": regime,
        "calibration_a_b": [round(cal[0], 4), round(cal[1], 4)],
    }


def feature_table(d):
    m = d.cond == "clean"
    print("per-feature Spearman with the label (clean rows):")
    for j, n in enumerate(d.names):
        print(
            f"  {n:24s} arousal {rho(d.x[m, j], d.y['arousal'][m]):+.2f}"
            f"  valence {rho(d.x[m, j], d.y['valence'][m]):+.2f}"
        )


def evaluate(tag, d, regimes):
    print(f"\n=== {tag}: {int((d.cond == 'clean').sum())} clean rows, "
          f"{len(set(d.file))} files, {len(set(d.actor))} actors, conditions {d.conds} ===")
    feature_table(d)
    results = {}
    for regime in regimes:
        for target in TARGETS:
            pred, picks = nested_loso(d, target, regime)
            s = scores(d, target, pred)
            results[(regime, target)] = s
            print(f"[{regime} / {target}] nested LOSO: "
                  + " | ".join(f"{c} rho {v['rows']:+.3f} (files {v['files']:+.3f}, shift {v['shift']:+.3f})"
                               for c, v in s.items()))
            c = s["clean"]
            print(f"    clean: mse {c['mse']:.3f} (label var {np.var(d.y[target][d.cond == 'clean']):.3f}),"
                  f" prediction sd {c['pred_sd']:.3f}")
            print(f"    inner picks: {' '.join(picks)}")
            m = d.cond == "clean"
            print("    mean held-out clean prediction by emotion: "
                  + " ".join(f"{e}:{pred[m & (d.emotion == e)].mean():+.2f}" for e in EMOTIONS.values()))
    return results


def best_window_rows(d):
    """Clean rows: the window with the highest voiced fraction of each file."""
    vf = d.names.index("voiced_frac")
    keep = np.zeros(len(d.x), bool)
    for f in sorted(set(d.file)):
        idx = np.where((d.file == f) & (d.cond == "clean"))[0]
        keep[idx[np.argmax(d.x[idx, vf])]] = True
    return keep


def write_head(path, d, regime, res):
    out = {"features": d.names, "level": "2.5 s windows, hop 0.5 s", "regime": regime}
    for target in TARGETS:
        out[target] = head_json(d, target, regime)
    clean_a, clean_v = res[(regime, "arousal")]["clean"], res[(regime, "valence")]["clean"]
    out["loso_spearman_arousal"] = round(clean_a["rows"], 4)
    out["loso_spearman_valence"] = round(clean_v["rows"], 4)
    out["loso_spearman_arousal_per_file"] = round(clean_a["files"], 4)
    out["loso_spearman_valence_per_file"] = round(clean_v["files"], 4)
    out["loso_by_condition"] = {
        t: {c: {k: round(v, 4) for k, v in s.items()} for c, s in res[(regime, t)].items()}
        for t in TARGETS
    }
    out["n_files"] = len(set(d.file))
    out["n_rows_clean"] = int((d.cond == "clean").sum())
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {path}: arousal {out['arousal']['subset']}/a={out['arousal']['alpha']:g}, "
          f"valence {out['valence']['subset']}/a={out['valence']['alpha']:g}")


def main():
    va = load_mapping()
    utt = Data("utt", va)
    win = Data("win", va)
    has_noise = len(win.conds) > 1
    regimes = ["clean", "multi", "multi_free"] if has_noise else ["clean"]
    ru = evaluate("whole utterance", utt, regimes)
    rw = evaluate("2.5 s windows (every 0.5 s)", win, regimes)
    best = win.subset_rows(best_window_rows(win))
    rb = evaluate("best clean 2.5 s window per file (max voiced_frac)", best, ["clean"])

    print("\n=== summary: nested LOSO Spearman on clean held-out rows (per-file mean in brackets) ===")
    for tag, r, regs in (("utterance", ru, regimes), ("2.5 s windows", rw, regimes),
                         ("best window", rb, ["clean"])):
        for regime in regs:
            a, v = r[(regime, "arousal")]["clean"], r[(regime, "valence")]["clean"]
            print(f"  {tag:14s} {regime:5s} arousal {a['rows']:+.3f} [{a['files']:+.3f}]"
                  f"  valence {v['rows']:+.3f} [{v['files']:+.3f}]")

    if has_noise:
        write_head("prosody_head.json", win, "multi_free", rw)
        write_head("prosody_head_clean.json", win, "clean", rw)
    else:
        write_head("prosody_head.json", win, "clean", rw)


if __name__ == "__main__":
    main()
