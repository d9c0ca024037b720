//! Fitting a logistic head (P(IK)) and measuring its calibration.
//!
//! For final hidden states `h_i` and soft targets `y_i ∈ [0, 1]` (the fraction of the model's
//! sampled answers that were correct), the model is `p_i = σ(w · h_i + b)`; we minimise the mean
//! cross-entropy `−y log p − (1 − y) log(1 − p)` plus `λ/2 |w|²` by full-batch gradient descent
//! with Nesterov momentum on standardised features (centred, unit variance), step `1/L` with `L`
//! bounded by power iteration. Deterministic: the same inputs give the same weights, bit for bit.

use super::fit::{dot, sigmoid, softplus_neg, top_eigen, Fitted};

/// Per-dimension mean and standard deviation (floored).
fn moments(x: &[Vec<f32>]) -> (Vec<f64>, Vec<f64>) {
    let d = x.first().map_or(0, Vec::len);
    let n = x.len().max(1) as f64;
    let mut mean = vec![0.0; d];
    for r in x {
        for k in 0..d {
            mean[k] += r[k] as f64 / n;
        }
    }
    let mut var = vec![0.0; d];
    for r in x {
        for k in 0..d {
            var[k] += (r[k] as f64 - mean[k]).powi(2) / n;
        }
    }
    (mean, var.into_iter().map(|v| v.sqrt().max(1e-6)).collect())
}

/// Mean cross-entropy of logits `z` against soft targets `y`.
pub fn cross_entropy(z: &[f64], y: &[f64]) -> f64 {
    z.iter().zip(y).map(|(z, y)| y * softplus_neg(*z) + (1.0 - y) * softplus_neg(-*z)).sum::<f64>() / z.len().max(1) as f64
}

/// Minimise on standardised rows; returns (w, b) in standardised space.
fn minimise(x: &[Vec<f64>], y: &[f64], l2: f64, iters: usize) -> (Vec<f64>, f64) {
    let d = x.first().map_or(0, Vec::len);
    let n = x.len().max(1) as f64;
    let step = 1.0 / (0.25 * (top_eigen(x) + 1.0) + l2).max(1e-12);
    let (mut w, mut prev) = (vec![0.0; d + 1], vec![0.0; d + 1]);
    for t in 0..iters {
        let mom = t as f64 / (t as f64 + 3.0);
        let v: Vec<f64> = w.iter().zip(&prev).map(|(a, b)| a + mom * (a - b)).collect();
        let mut g: Vec<f64> = v[..d].iter().map(|a| l2 * a).chain([0.0]).collect();
        for (row, yi) in x.iter().zip(y) {
            let r = sigmoid(dot(row, &v[..d]) + v[d]) - yi;
            for k in 0..d {
                g[k] += r * row[k] / n;
            }
            g[d] += r / n;
        }
        prev = w;
        w = v.iter().zip(&g).map(|(a, b)| a - step * b).collect();
    }
    let b = w.pop().unwrap_or(0.0);
    (w, b)
}

/// Logits of raw rows under a raw-space head.
pub fn logits(x: &[Vec<f32>], head: &Fitted) -> Vec<f64> {
    x.iter().map(|r| r.iter().zip(&head.weight).map(|(a, w)| *a as f64 * *w as f64).sum::<f64>() + head.bias as f64).collect()
}

/// Choose `λ` from `grid` on a validation tail, refit on all of `x`; the head is returned in the
/// raw hidden space (`w_raw = w / σ`, `b_raw = b − Σ w μ / σ`).
pub fn fit(x: &[Vec<f32>], y: &[f64], grid: &[f64], val_fraction: f64, iters: usize) -> (Fitted, f64) {
    let (mean, sd) = moments(x);
    let std = |rows: &[Vec<f32>]| -> Vec<Vec<f64>> { rows.iter().map(|r| r.iter().zip(&mean).zip(&sd).map(|((a, m), s)| (*a as f64 - m) / s).collect()).collect() };
    let cut = ((x.len() as f64) * (1.0 - val_fraction)).round() as usize;
    let cut = cut.clamp(1, x.len().saturating_sub(1).max(1));
    let (xtr, xva) = (std(&x[..cut]), std(&x[cut..]));
    let mut best = (f64::INFINITY, grid.first().copied().unwrap_or(1e-2));
    for &l2 in grid {
        let (w, b) = minimise(&xtr, &y[..cut], l2, iters);
        let z: Vec<f64> = xva.iter().map(|r| dot(r, &w) + b).collect();
        let l = cross_entropy(&z, &y[cut..]);
        tracing::info!(l2, validation_loss = l, "P(IK) head: λ candidate");
        if l < best.0 {
            best = (l, l2);
        }
    }
    let (w, b) = minimise(&std(x), y, best.1, iters);
    let weight: Vec<f32> = w.iter().zip(&sd).map(|(a, s)| (a / s) as f32).collect();
    let bias = b - w.iter().zip(&mean).zip(&sd).map(|((a, m), s)| a * m / s).sum::<f64>();
    (Fitted { weight, bias: bias as f32 }, best.1)
}

/// Brier score: mean `(p − y)²`.
pub fn brier(p: &[f64], y: &[f64]) -> f64 {
    p.iter().zip(y).map(|(p, y)| (p - y).powi(2)).sum::<f64>() / p.len().max(1) as f64
}

/// Expected calibration error over `bins` equal-width bins of `p`: Σ (n_b / n) |mean p − mean y|.
pub fn ece(p: &[f64], y: &[f64], bins: usize) -> f64 {
    let mut acc = vec![(0.0, 0.0, 0usize); bins];
    for (p, y) in p.iter().zip(y) {
        let b = ((p * bins as f64) as usize).min(bins - 1);
        acc[b].0 += p;
        acc[b].1 += y;
        acc[b].2 += 1;
    }
    let n = p.len().max(1) as f64;
    acc.iter().filter(|b| b.2 > 0).map(|(sp, sy, c)| (*c as f64 / n) * ((sp - sy) / *c as f64).abs()).sum()
}

/// Area under the ROC curve of scores `s` for binary labels (ties count one half); `None` when
/// one class is empty.
pub fn auroc(s: &[f64], positive: &[bool]) -> Option<f64> {
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for (s, p) in s.iter().zip(positive) {
        if *p {
            pos.push(*s)
        } else {
            neg.push(*s)
        }
    }
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut wins = 0.0;
    for a in &pos {
        for b in &neg {
            wins += if a > b {
                1.0
            } else if a == b {
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
    use rand::{Rng, SeedableRng};

    /// Targets from a known logistic model: the fit is better calibrated than the base rate and
    /// ranks far above chance; refitting gives the same weights.
    #[test]
    fn recovers_a_planted_logistic_model() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let d = 10;
        let x: Vec<Vec<f32>> = (0..800).map(|_| (0..d).map(|_| rng.random_range(-1.0..1.0f32) * 2.0 + 5.0).collect()).collect();
        let y: Vec<f64> = x.iter().map(|r| sigmoid(2.0 * (r[0] as f64 - 5.0) - (r[1] as f64 - 5.0))).collect();
        let (head, _) = fit(&x[..600], &y[..600], &[1e-3, 1e-1], 0.2, 400);
        let p: Vec<f64> = logits(&x[600..], &head).into_iter().map(sigmoid).collect();
        let base = y[..600].iter().sum::<f64>() / 600.0;
        let yt = &y[600..];
        assert!(brier(&p, yt) < 0.5 * brier(&vec![base; yt.len()], yt), "brier {} vs base {}", brier(&p, yt), brier(&vec![base; yt.len()], yt));
        assert!(ece(&p, yt, 10) < 0.05, "ece {}", ece(&p, yt, 10));
        let pos: Vec<bool> = yt.iter().map(|v| *v > 0.5).collect();
        assert!(auroc(&p, &pos).unwrap_or(0.0) > 0.95);
        let (again, _) = fit(&x[..600], &y[..600], &[1e-3, 1e-1], 0.2, 400);
        assert_eq!(head.weight, again.weight);
        assert_eq!(head.bias, again.bias);
    }

    #[test]
    fn metrics_on_known_values() {
        assert_eq!(auroc(&[0.9, 0.8, 0.1, 0.8], &[true, true, false, false]), Some(0.875));
        assert_eq!(auroc(&[0.9], &[true]), None);
        assert!((brier(&[1.0, 0.0], &[1.0, 1.0]) - 0.5).abs() < 1e-12);
        // Two bins: predictions 0.2 (outcome 0) and 0.8 (outcome 1): ECE 0.2.
        assert!((ece(&[0.2, 0.8], &[0.0, 1.0], 2) - 0.2).abs() < 1e-12);
    }
}
