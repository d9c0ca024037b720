//! Naive references in f64 for the kernels' tests: contiguous per-sequence keys and values (no
//! block tables), attention by the definition.

/// Causal attention of one sequence. `q`: `[rows, num_heads * head_dim]` for positions
/// `start..start + rows`; `k`, `v`: `[start + rows, num_kv_heads * head_dim]` (every position of
/// the sequence). Query head `h` uses KV head `h / (num_heads / num_kv_heads)`; scores are scaled
/// by `1 / sqrt(head_dim)`. Returns `[rows, num_heads * head_dim]` in f64.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], num_heads: usize, num_kv_heads: usize, head_dim: usize, start: usize) -> Vec<f64> {
    let (nh, nkv, hd) = (num_heads, num_kv_heads, head_dim);
    let rows = q.len() / (nh * hd);
    let group = nh / nkv;
    let scale = 1.0 / (hd as f64).sqrt();
    let mut out = vec![0f64; rows * nh * hd];
    for r in 0..rows {
        let pos = start + r;
        for h in 0..nh {
            let kvh = h / group;
            let qh = &q[(r * nh + h) * hd..(r * nh + h + 1) * hd];
            let scores: Vec<f64> = (0..=pos)
                .map(|j| {
                    let kj = &k[(j * nkv + kvh) * hd..(j * nkv + kvh + 1) * hd];
                    qh.iter().zip(kj).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale
                })
                .collect();
            let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for d in 0..hd {
                out[(r * nh + h) * hd + d] = (0..=pos).map(|j| e[j] / z * v[(j * nkv + kvh) * hd + d] as f64).sum();
            }
        }
    }
    out
}

/// Split-context attention as the CUDA decode kernel computes it: the context cut into
/// `partition` positions at a time, each part's softmax-weighted sum and log-sum-exp computed
/// alone, then combined. Equal to [`attention`] up to rounding; this is the reference for that
/// combination step (one query row at position `ctx - 1`).
#[allow(clippy::too_many_arguments)] // a reference by the definition: the kernel's own arguments
pub fn attention_split(q: &[f32], k: &[f32], v: &[f32], num_heads: usize, num_kv_heads: usize, head_dim: usize, ctx: usize, partition: usize) -> Vec<f64> {
    let (nh, nkv, hd) = (num_heads, num_kv_heads, head_dim);
    let group = nh / nkv;
    let scale = 1.0 / (hd as f64).sqrt();
    let mut out = vec![0f64; nh * hd];
    for h in 0..nh {
        let kvh = h / group;
        let qh = &q[h * hd..(h + 1) * hd];
        // (max, sum of exp, weighted values) per part.
        let parts: Vec<(f64, f64, Vec<f64>)> = (0..ctx)
            .step_by(partition.max(1))
            .map(|p0| {
                let idx: Vec<usize> = (p0..(p0 + partition.max(1)).min(ctx)).collect();
                let s: Vec<f64> = idx.iter().map(|&j| qh.iter().zip(&k[(j * nkv + kvh) * hd..]).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale).collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let acc = (0..hd).map(|d| idx.iter().zip(&e).map(|(&j, w)| w * v[(j * nkv + kvh) * hd + d] as f64).sum()).collect();
                (m, e.iter().sum(), acc)
            })
            .collect();
        let gm = parts.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = parts.iter().map(|p| p.1 * (p.0 - gm).exp()).sum();
        for d in 0..hd {
            out[h * hd + d] = parts.iter().map(|p| p.2[d] * (p.0 - gm).exp()).sum::<f64>() / z;
        }
    }
    out
}
