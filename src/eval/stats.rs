//! Agreement statistics for evaluation: concordance, rank correlation, sign agreement, ROC AUC.

/// Mean of `x` (0 for an empty slice).
pub fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        0.0
    } else {
        x.iter().sum::<f64>() / x.len() as f64
    }
}

/// Lin's concordance correlation coefficient: 2 cov / (var x + var y + (mean x − mean y)²).
/// None with fewer than 2 pairs or no variance at all.
pub fn ccc(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len().min(y.len());
    if n < 2 {
        return None;
    }
    let (mx, my) = (mean(&x[..n]), mean(&y[..n]));
    let (mut vx, mut vy, mut cov) = (0.0, 0.0, 0.0);
    for i in 0..n {
        vx += (x[i] - mx).powi(2);
        vy += (y[i] - my).powi(2);
        cov += (x[i] - mx) * (y[i] - my);
    }
    let (vx, vy, cov) = (vx / n as f64, vy / n as f64, cov / n as f64);
    let denominator = vx + vy + (mx - my).powi(2);
    (denominator > 0.0).then(|| 2.0 * cov / denominator)
}

/// Ranks with ties averaged (1-based).
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            r[order[k]] = rank;
        }
        i = j + 1;
    }
    r
}

/// Pearson correlation; None without variance.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len().min(y.len());
    if n < 2 {
        return None;
    }
    let (mx, my) = (mean(&x[..n]), mean(&y[..n]));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        sxy += (x[i] - mx) * (y[i] - my);
        sxx += (x[i] - mx).powi(2);
        syy += (y[i] - my).powi(2);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// Spearman rank correlation (Pearson on tie-averaged ranks).
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    pearson(&ranks(x), &ranks(y))
}

/// Share of pairs whose signs agree, over labels at least `min_abs` away from 0 (near-zero
/// labels such as neutral have no sign to agree with). Returns (agreeing, counted).
pub fn sign_agreement(pred: &[f64], label: &[f64], min_abs: f64) -> (usize, usize) {
    let mut agree = 0;
    let mut counted = 0;
    for (p, l) in pred.iter().zip(label) {
        if l.abs() < min_abs {
            continue;
        }
        counted += 1;
        if p.signum() == l.signum() && *p != 0.0 {
            agree += 1;
        }
    }
    (agree, counted)
}

/// ROC AUC of `scores` for telling positives from negatives: the probability that a random
/// positive scores above a random negative (ties count half). None without both classes.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let pos: Vec<f64> = scores
        .iter()
        .zip(positive)
        .filter(|(_, p)| **p)
        .map(|(s, _)| *s)
        .collect();
    let neg: Vec<f64> = scores
        .iter()
        .zip(positive)
        .filter(|(_, p)| !**p)
        .map(|(s, _)| *s)
        .collect();
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut wins = 0.0;
    for p in &pos {
        for n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (pos.len() * neg.len()) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ccc_is_one_for_identity_and_penalises_bias() {
        let x = [0.1, 0.5, -0.3, 0.9];
        assert!((ccc(&x, &x).unwrap() - 1.0).abs() < 1e-12);
        let shifted: Vec<f64> = x.iter().map(|v| v + 0.5).collect();
        assert!(ccc(&x, &shifted).unwrap() < 0.8);
        assert!(pearson(&x, &shifted).unwrap() > 0.999);
        assert!(ccc(&[1.0], &[1.0]).is_none());
    }

    #[test]
    fn spearman_handles_ties_and_monotone_maps() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let y = [10.0, 20.0, 30.0, 1000.0];
        assert!((spearman(&x, &y).unwrap() - 1.0).abs() < 1e-12);
        let rev = [4.0, 3.0, 2.0, 1.0];
        assert!((spearman(&x, &rev).unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(ranks(&[1.0, 1.0, 2.0]), vec![1.5, 1.5, 3.0]);
    }

    #[test]
    fn sign_agreement_skips_near_zero_labels() {
        let (a, n) = sign_agreement(&[0.5, -0.2, 0.3, 0.1], &[0.9, 0.4, -0.01, -0.5], 0.1);
        assert_eq!((a, n), (1, 3));
    }

    #[test]
    fn auc_of_perfect_random_and_tied_scores() {
        assert_eq!(
            roc_auc(&[0.9, 0.8, 0.1, 0.2], &[true, true, false, false]),
            Some(1.0)
        );
        assert_eq!(
            roc_auc(&[0.1, 0.2, 0.9, 0.8], &[true, true, false, false]),
            Some(0.0)
        );
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(roc_auc(&[0.5], &[true]), None);
    }
}
