//! `hhh-server fit-ood`: fit the in-distribution statistics of `/v1/ood/score`
//! ([`hhh_api::ood`]).
//!
//! 1. Read in-distribution prompts (JSONL with a `text`, `prompt` or `question` field, or one
//!    prompt per line), shuffle them with a seeded generator and hold out `--holdout` of them.
//! 2. Render each as `/v1/ood/score` will (`--format`: a one-turn chat request, or raw text) and
//!    take the hidden state after `--layer` at the last token (the engine's inspection path).
//! 3. Fit the mean and a Ledoit–Wolf shrunk covariance on the rest, invert it (Cholesky, f64),
//!    and record the held-out prompts' distances (calibration; threshold = 99th percentile).
//!
//! Deterministic: the same prompts, flags and model give the same file.

// Dense linear algebra reads clearest with explicit indices.
#![allow(clippy::needless_range_loop)]

use crate::{load, warm_up, Loaded, ServeArgs};
use anyhow::Context;
use clap::Args;
use hhh_api::ood::{hidden_states, OodStats, OOD_FORMAT};
use hhh_proto::PromptFormat;
use std::path::{Path, PathBuf};

/// Flags of `hhh-server fit-ood`.
#[derive(Args, Debug, Clone)]
pub struct FitOodArgs {
    /// In-distribution prompt files (JSONL with `text`/`prompt`/`question`, or plain lines).
    #[arg(long, required = true, num_args = 1..)]
    pub prompts: Vec<PathBuf>,
    /// Layer whose output is used (0-based; the model's layer count: the final hidden state).
    /// Default: two thirds of the way through the model.
    #[arg(long)]
    pub layer: Option<usize>,
    /// How prompts are rendered (default: chat when the model has a template).
    #[arg(long, value_parser = ["text", "chat"])]
    pub format: Option<String>,
    /// Fraction of the prompts held out for calibration.
    #[arg(long, default_value_t = 0.2)]
    pub holdout: f64,
    /// Use at most this many prompts (after shuffling; 0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file.
    #[arg(long, default_value = "ood-stats.json")]
    pub out: PathBuf,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Prompts of one file.
pub fn read_prompts(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => ["text", "prompt", "question"].iter().find_map(|k| v[k].as_str().map(String::from)).unwrap_or_else(|| line.to_string()),
            Err(_) => line.to_string(),
        })
        .collect())
}

/// Seeded Fisher–Yates shuffle (splitmix64).
fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut s = seed;
    for i in (1..v.len()).rev() {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        v.swap(i, ((z ^ (z >> 31)) % (i as u64 + 1)) as usize);
    }
}

/// Mean, Ledoit–Wolf shrinkage and the shrunk covariance's inverse of `xs` (`n × d`).
pub fn fit_gaussian(xs: &[Vec<f32>]) -> anyhow::Result<(Vec<f64>, f64, Vec<Vec<f64>>)> {
    let n = xs.len();
    anyhow::ensure!(n >= 2, "at least 2 prompts are needed to fit, got {n}");
    let d = xs[0].len();
    anyhow::ensure!(d > 0 && xs.iter().all(|x| x.len() == d), "hidden states of unequal width");
    let mean: Vec<f64> = (0..d).map(|j| xs.iter().map(|x| x[j] as f64).sum::<f64>() / n as f64).collect();
    let c: Vec<Vec<f64>> = xs.iter().map(|x| x.iter().zip(&mean).map(|(&a, m)| a as f64 - m).collect()).collect();
    // S = XᵀX / n (the Ledoit–Wolf estimator's normalisation).
    let mut s = vec![vec![0f64; d]; d];
    for x in &c {
        for i in 0..d {
            let xi = x[i];
            for (j, sij) in s[i].iter_mut().enumerate().take(i + 1) {
                *sij += xi * x[j];
            }
        }
    }
    for i in 0..d {
        for j in 0..=i {
            s[i][j] /= n as f64;
            s[j][i] = s[i][j];
        }
    }
    let mu = (0..d).map(|i| s[i][i]).sum::<f64>() / d as f64;
    let s_fro2: f64 = s.iter().flatten().map(|v| v * v).sum();
    let d2: f64 = (0..d).map(|i| (0..d).map(|j| (s[i][j] - if i == j { mu } else { 0.0 }).powi(2)).sum::<f64>()).sum();
    let mut b2 = 0.0;
    for x in &c {
        let norm2: f64 = x.iter().map(|v| v * v).sum();
        let xsx: f64 = (0..d).map(|i| x[i] * s[i].iter().zip(x).map(|(a, b)| a * b).sum::<f64>()).sum();
        b2 += norm2 * norm2 - 2.0 * xsx + s_fro2;
    }
    b2 /= (n * n) as f64;
    let alpha = if d2 > 0.0 { (b2.min(d2) / d2).clamp(0.0, 1.0) } else { 1.0 };
    let mut sigma = s;
    for (i, row) in sigma.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (1.0 - alpha) * *v + if i == j { alpha * mu } else { 0.0 };
        }
    }
    Ok((mean, alpha, spd_inverse(&sigma)?))
}

/// Inverse of a symmetric positive-definite matrix through its Cholesky factor.
pub fn spd_inverse(a: &[Vec<f64>]) -> anyhow::Result<Vec<Vec<f64>>> {
    let d = a.len();
    let mut l = vec![vec![0f64; d]; d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = a[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            if i == j {
                anyhow::ensure!(s > 0.0, "the covariance is not positive definite (pivot {i}: {s})");
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    // L⁻¹ by forward substitution, then A⁻¹ = L⁻ᵀ L⁻¹.
    let mut li = vec![vec![0f64; d]; d];
    for col in 0..d {
        for i in col..d {
            let rhs = if i == col { 1.0 } else { 0.0 };
            let s: f64 = (col..i).map(|k| l[i][k] * li[k][col]).sum();
            li[i][col] = (rhs - s) / l[i][i];
        }
    }
    let mut inv = vec![vec![0f64; d]; d];
    for i in 0..d {
        for j in 0..=i {
            let v: f64 = (i..d).map(|k| li[k][i] * li[k][j]).sum();
            inv[i][j] = v;
            inv[j][i] = v;
        }
    }
    Ok(inv)
}

/// Run the command; prints a summary.
pub async fn fit_ood(a: FitOodArgs) -> anyhow::Result<()> {
    anyhow::ensure!((0.0..1.0).contains(&a.holdout) && a.holdout > 0.0, "--holdout must be in (0, 1)");
    let mut prompts = Vec::new();
    for f in &a.prompts {
        prompts.extend(read_prompts(f)?);
    }
    shuffle(&mut prompts, a.seed);
    if a.limit > 0 {
        prompts.truncate(a.limit);
    }
    let n_cal = ((prompts.len() as f64 * a.holdout).round() as usize).max(1);
    anyhow::ensure!(prompts.len() >= n_cal + 2, "{} prompts: too few to fit and calibrate", prompts.len());
    let Loaded { state, engine, extra_engines } = load(&a.serve).await?;
    warm_up(&engine).await?;
    let result = async {
        let fm = state.feedback_model(None).map_err(|e| anyhow::anyhow!("{}", e.message))?;
        let format = match a.format.as_deref() {
            Some("text") => PromptFormat::Text,
            Some(_) => PromptFormat::Chat,
            None => hhh_api::honesty::default_format(&fm.template),
        };
        let probe = engine.inspect(hhh_engine::InspectRequest { tokens: vec![0], ..Default::default() }).await?;
        let layer = a.layer.unwrap_or(2 * probe.num_layers / 3);
        anyhow::ensure!(layer <= probe.num_layers, "--layer {layer}: the model has {} layers", probe.num_layers);
        let ids: Vec<Vec<u32>> = prompts.iter().enumerate().map(|(i, t)| hhh_api::routes::ood::prompt_ids(&fm, format, t, &format!("prompt {i}")).map_err(|e| anyhow::anyhow!("{}", e.message))).collect::<anyhow::Result<_>>()?;
        let started = std::time::Instant::now();
        let hs = hidden_states(&fm, layer, &ids).await.map_err(|e| anyhow::anyhow!("{}", e.message))?;
        let (cal, fit) = hs.split_at(n_cal);
        let (mean, shrinkage, precision) = fit_gaussian(fit)?;
        let mut stats = OodStats {
            format: OOD_FORMAT.into(),
            version: 1,
            model: state.model_name.clone(),
            layer,
            prompt_format: format,
            dim: mean.len(),
            n_fit: fit.len(),
            shrinkage,
            mean,
            precision,
            calibration: Vec::new(),
            threshold: 0.0,
            metadata: serde_json::json!({"prompt_files": a.prompts, "seed": a.seed, "holdout": a.holdout, "n_calibration": n_cal}),
        };
        let mut cal_d: Vec<f64> = cal.iter().map(|h| stats.distance(h)).collect();
        cal_d.sort_by(f64::total_cmp);
        stats.threshold = cal_d[((cal_d.len() as f64 * 0.99).ceil() as usize).clamp(1, cal_d.len()) - 1];
        stats.calibration = cal_d;
        std::fs::write(&a.out, serde_json::to_string(&stats)? + "\n").with_context(|| format!("writing {}", a.out.display()))?;
        let summary = serde_json::json!({"out": a.out, "model": stats.model, "layer": layer, "format": format, "n_fit": stats.n_fit, "n_calibration": n_cal, "shrinkage": shrinkage, "threshold": stats.threshold, "seconds": started.elapsed().as_secs_f64()});
        println!("{}", serde_json::to_string_pretty(&summary)?);
        Ok(())
    }
    .await;
    engine.shutdown();
    for e in &extra_engines {
        e.shutdown();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_times_matrix_is_identity() {
        let a = vec![vec![4.0, 1.0, 0.5], vec![1.0, 3.0, 0.2], vec![0.5, 0.2, 2.0]];
        let inv = spd_inverse(&a).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| a[i][k] * inv[k][j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12, "{i},{j}: {v}");
            }
        }
        assert!(spd_inverse(&[vec![1.0, 2.0], vec![2.0, 1.0]]).is_err());
    }

    #[test]
    fn fit_is_deterministic_and_shrinks_a_singular_sample() {
        // 3 samples in 4 dimensions: the sample covariance is singular; shrinkage makes it
        // invertible.
        let xs = vec![vec![1.0, 0.0, 2.0, 1.0], vec![0.0, 1.0, 1.0, 3.0], vec![2.0, 2.0, 0.0, 1.0]];
        let (m, alpha, p) = fit_gaussian(&xs).unwrap();
        assert_eq!((m.clone(), alpha, p.clone()), fit_gaussian(&xs).unwrap());
        assert!((m[0] - 1.0).abs() < 1e-12 && alpha > 0.0 && alpha <= 1.0);
        assert!(p.iter().flatten().all(|v| v.is_finite()));
        let mut v = vec![3, 1, 4, 1, 5, 9, 2, 6];
        shuffle(&mut v, 1);
        let mut w = vec![3, 1, 4, 1, 5, 9, 2, 6];
        shuffle(&mut w, 1);
        assert_eq!(v, w);
    }
}
