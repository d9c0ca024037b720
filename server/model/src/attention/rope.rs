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
                for i in 0..self.half {
                    let (x0, x1) = (head[2 * i], head[2 * i + 1]);
                    head[2 * i] = x0 * c[i] - x1 * s[i];
                    head[2 * i + 1] = x0 * s[i] + x1 * c[i];
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
