//! Rotary position embeddings on flat `[rows, heads * head_dim]` buffers.

/// Precomputed cos/sin tables, `[max_pos, head_dim / 2]`, computed exactly as candle's Llama
/// models do (f32 `1 / base^(2i/d)`, times the position, then cos/sin).
#[derive(Debug, Clone)]
pub struct Rope {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// Interleaved pairs `(x[2i], x[2i+1])` (GGUF Llama) or halves `(x[i], x[i+d/2])` (HF).
    interleaved: bool,
    max_pos: usize,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f32, max_pos: usize, interleaved: bool) -> Self {
        let half = head_dim / 2;
        let inv: Vec<f32> = (0..head_dim).step_by(2).map(|i| 1f32 / theta.powf(i as f32 / head_dim as f32)).collect();
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for p in 0..max_pos {
            for &f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Self { half, cos, sin, interleaved, max_pos }
    }

    pub fn max_pos(&self) -> usize {
        self.max_pos
    }

    /// Rotate every head of one row (one token at position `pos`) in place.
    pub fn apply(&self, row: &mut [f32], head_dim: usize, pos: usize) {
        let c = &self.cos[pos * self.half..(pos + 1) * self.half];
        let s = &self.sin[pos * self.half..(pos + 1) * self.half];
        for head in row.chunks_exact_mut(head_dim) {
            if self.interleaved {
                // Zipped pairs (no bounds checks, so the compiler vectorizes it with
                // shuffles); the same arithmetic per element.
                for ((p, &c), &s) in head.chunks_exact_mut(2).zip(c).zip(s) {
                    let (x0, x1) = (p[0], p[1]);
                    p[0] = x0 * c - x1 * s;
                    p[1] = x0 * s + x1 * c;
                }
            } else {
                // Zipped halves (no bounds checks in the loop, so it vectorizes); the same
                // arithmetic per element.
                let (lo, hi) = head.split_at_mut(self.half);
                for (((x0, x1), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(c).zip(s) {
                    let (a, b) = (*x0, *x1);
                    *x0 = a * c - b * s;
                    *x1 = b * c + a * s;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The zipped loops give the indexed formula's bits (`x0·c − x1·s`, `x0·s + x1·c` for
    /// interleaved pairs; the halves' pairing otherwise), at several positions and two widths.
    #[test]
    fn zipped_loops_equal_indexed_formula_bitwise() {
        for inter in [true, false] {
            for hd in [8usize, 64] {
                let r = Rope::new(hd, 10000.0, 200, inter);
                let x: Vec<f32> = (0..3 * hd).map(|i| ((i * 7919 % 2003) as f32 / 1001.0 - 1.0) * 3.0).collect();
                for pos in [1usize, 17, 199] {
                    let mut got = x.clone();
                    r.apply(&mut got, hd, pos);
                    let half = hd / 2;
                    let (c, s) = (&r.cos[pos * half..(pos + 1) * half], &r.sin[pos * half..(pos + 1) * half]);
                    let mut want = x.clone();
                    for head in want.chunks_exact_mut(hd) {
                        for i in 0..half {
                            let (a, b) = if inter { (2 * i, 2 * i + 1) } else { (i, i + half) };
                            let (x0, x1) = (head[a], head[b]);
                            head[a] = x0 * c[i] - x1 * s[i];
                            head[b] = x0 * s[i] + x1 * c[i];
                        }
                    }
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "interleaved {inter}, head_dim {hd}, position {pos}");
                }
            }
        }
    }

    #[test]
    fn position_zero_is_identity_and_norm_is_kept() {
        for inter in [true, false] {
            let r = Rope::new(8, 10000.0, 16, inter);
            let mut x: Vec<f32> = (0..16).map(|i| i as f32 * 0.1 - 0.5).collect();
            let orig = x.clone();
            r.apply(&mut x, 8, 0);
            assert_eq!(x, orig);
            r.apply(&mut x, 8, 5);
            let n0: f32 = orig.iter().map(|v| v * v).sum();
            let n1: f32 = x.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-4);
            assert_ne!(x, orig);
        }
    }
}
