//! Statistics of a run on plain numbers: percentiles, summaries, inter-token latencies, TPOT,
//! goodput SLOs and peak concurrency. Everything here is deterministic and unit-tested.

use crate::LoadtestError;
use serde::{Deserialize, Serialize};

/// Distribution summary of one latency metric, in the unit of the inputs (milliseconds in reports).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

/// Percentile `q` (0–100) of ascending `sorted` values by linear interpolation between closest
/// ranks (numpy's default, as vLLM's `bench serve` reports). `None` when empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

/// Mean, median, p90, p99, min and max of `values` (any order; NaNs are dropped). `None` when
/// there is nothing to summarise.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let p = |q| percentile(&v, q).unwrap_or(f64::NAN);
    Some(Summary { count: v.len(), mean: v.iter().sum::<f64>() / v.len() as f64, median: p(50.0), p90: p(90.0), p99: p(99.0), min: v[0], max: v[v.len() - 1] })
}

/// Inter-token latencies of one streamed response: the gaps between consecutive content-bearing
/// chunks (times since the request was sent, ascending). The first chunk's time is the TTFT and
/// is not an ITL.
pub fn inter_token_latencies(chunk_times: &[f64]) -> Vec<f64> {
    chunk_times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Time per output token after the first: `(e2e − ttft) / (output_tokens − 1)`; `None` for
/// responses with fewer than two tokens.
pub fn tpot(ttft: f64, e2e: f64, output_tokens: usize) -> Option<f64> {
    (output_tokens >= 2).then(|| (e2e - ttft) / (output_tokens - 1) as f64)
}

/// Per-request service-level objectives, in milliseconds (`--goodput ttft:500 tpot:50 e2e:10000`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpot_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2e_ms: Option<f64>,
}

impl Slo {
    /// Parse `key:ms` items (`ttft`, `tpot`, `e2e`; milliseconds, positive).
    pub fn parse(items: &[String]) -> Result<Slo, LoadtestError> {
        let mut slo = Slo::default();
        for it in items {
            let bad = || LoadtestError::Config(format!("--goodput item `{it}`: expected ttft:MS, tpot:MS or e2e:MS with MS > 0"));
            let (k, v) = it.split_once(':').ok_or_else(bad)?;
            let ms: f64 = v.trim().parse().map_err(|_| bad())?;
            if !(ms > 0.0 && ms.is_finite()) {
                return Err(bad());
            }
            match k.trim() {
                "ttft" => slo.ttft_ms = Some(ms),
                "tpot" => slo.tpot_ms = Some(ms),
                "e2e" | "e2el" => slo.e2e_ms = Some(ms),
                _ => return Err(bad()),
            }
        }
        Ok(slo)
    }

    /// Whether any objective is set.
    pub fn is_set(&self) -> bool {
        self.ttft_ms.is_some() || self.tpot_ms.is_some() || self.e2e_ms.is_some()
    }

    /// Whether one completed request met every objective (a request without a TTFT or TPOT —
    /// non-streaming, or a single output token — is judged on the objectives it has).
    pub fn met(&self, ttft_ms: Option<f64>, tpot_ms: Option<f64>, e2e_ms: f64) -> bool {
        let ok = |limit: Option<f64>, v: Option<f64>| match (limit, v) {
            (Some(l), Some(v)) => v <= l,
            _ => true,
        };
        ok(self.ttft_ms, ttft_ms) && ok(self.tpot_ms, tpot_ms) && ok(self.e2e_ms, Some(e2e_ms))
    }
}

/// Largest number of `[start, end)` intervals open at one instant (an interval ending exactly
/// when another starts does not overlap it).
pub fn peak_concurrency(intervals: &[(f64, f64)]) -> usize {
    let mut ev: Vec<(f64, i32)> = intervals.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    ev.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut cur, mut peak) = (0i64, 0i64);
    for (_, d) in ev {
        cur += d as i64;
        peak = peak.max(cur);
    }
    peak as usize
}

/// Empirical CDF points `(value, fraction ≤ value)` of `values`, ascending.
pub fn cdf(values: &[f64]) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    v.into_iter().enumerate().map(|(i, x)| (x, (i + 1) as f64 / n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        // numpy.percentile(range(1, 11), [50, 90, 99]) == [5.5, 9.1, 9.91]
        assert!((percentile(&v, 50.0).unwrap() - 5.5).abs() < 1e-12);
        assert!((percentile(&v, 90.0).unwrap() - 9.1).abs() < 1e-12);
        assert!((percentile(&v, 99.0).unwrap() - 9.91).abs() < 1e-12);
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(10.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_of_unsorted_values() {
        let s = summarize(&[30.0, 10.0, 20.0, f64::NAN, 40.0]).unwrap();
        assert_eq!(s.count, 4);
        assert_eq!((s.min, s.max, s.mean, s.median), (10.0, 40.0, 25.0, 25.0));
        assert!((s.p90 - 37.0).abs() < 1e-12);
        assert!((s.p99 - 39.7).abs() < 1e-12);
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn itl_and_tpot_from_chunk_times() {
        let t = [0.100, 0.120, 0.150, 0.150, 0.200];
        let itl = inter_token_latencies(&t);
        let want = [0.020, 0.030, 0.0, 0.050];
        assert_eq!(itl.len(), 4);
        for (a, b) in itl.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{itl:?}");
        }
        assert!(inter_token_latencies(&[0.1]).is_empty());
        // 5 tokens in 0.2 s after a 0.1 s first token: 0.05 s per token after the first.
        assert!((tpot(0.1, 0.3, 5).unwrap() - 0.05).abs() < 1e-12);
        assert_eq!(tpot(0.1, 0.3, 1), None);
    }

    #[test]
    fn goodput_slos() {
        let slo = Slo::parse(&["ttft:500".into(), "tpot:50".into()]).unwrap();
        assert_eq!(slo, Slo { ttft_ms: Some(500.0), tpot_ms: Some(50.0), e2e_ms: None });
        assert!(slo.met(Some(500.0), Some(50.0), 99999.0));
        assert!(!slo.met(Some(501.0), Some(10.0), 1.0));
        assert!(!slo.met(Some(100.0), Some(50.5), 1.0));
        assert!(slo.met(Some(100.0), None, 1.0), "one-token responses have no TPOT");
        let e2e = Slo::parse(&["e2e:1000".into()]).unwrap();
        assert!(e2e.met(None, None, 1000.0) && !e2e.met(None, None, 1000.1));
        for bad in ["ttft", "ttft:", "ttft:-1", "itl:5", "ttft:abc", "ttft:inf"] {
            assert!(Slo::parse(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(!Slo::default().is_set());
    }

    #[test]
    fn peak_concurrency_counts_overlaps() {
        assert_eq!(peak_concurrency(&[]), 0);
        assert_eq!(peak_concurrency(&[(0.0, 1.0), (1.0, 2.0)]), 1, "touching intervals do not overlap");
        assert_eq!(peak_concurrency(&[(0.0, 3.0), (1.0, 2.0), (1.5, 4.0), (3.5, 5.0)]), 3);
    }

    #[test]
    fn cdf_is_ascending_and_ends_at_one() {
        let c = cdf(&[3.0, 1.0, 2.0, 2.0]);
        assert_eq!(c, vec![(1.0, 0.25), (2.0, 0.5), (2.0, 0.75), (3.0, 1.0)]);
    }
}
