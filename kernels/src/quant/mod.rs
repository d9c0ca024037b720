//! Quantized weight × activation matrix products (ggml block formats), CPU.
//!
//! Each weight format quantizes the activations the way candle does for it (Q8_1 for Q4_1,
//! Q8_0 for Q8_0) and has a scalar reference dot product with candle's arithmetic and an AVX2
//! tile kernel that multiplies one weight row with up to 4 activation rows (the weight block is
//! loaded and unpacked once per tile). The integer part of every block dot is exact; only the
//! order of float additions may differ from the reference (tests in each format's module).
//!
//! Where the CPU has AVX-512 VNNI ([`has_vnni512`]) the model loads both formats interleaved 16
//! weight rows at a time (`interleaved()`; modules `q4_1_x16`, `q8_0_x16`) and a `vpdpbusd` kernel
//! computes 16 outputs at once, with candle's arithmetic bit for bit, for any number of rows.
//! Where it has AVX2 but not VNNI-512 ([`has_avx2_x16`]: AMD Zen 2/3, older Intel) both are
//! interleaved the same way and AVX2 kernels (`vpmaddubsw`, 8 lanes) compute the same bits.
//!
//! [`matmul_many`] is the shared driver: several matrices of one input width applied to the
//! same activations (Q/K/V, gate/up) in one parallel loop over 16-column tasks, so the weights
//! are read once per step for every row of the batch.

pub mod dense;
pub mod isa;
pub mod q4_1;
mod q4_1_x16;
pub mod q8_0;
mod q8_0_x16;
mod q8_1;

pub use q4_1_x16::{has_avx2_x16, has_vnni512};

pub use dense::{matmul_f32_many, matmul_split};
pub use q4_1::Q4_1Matrix;
pub use q8_0::Q8_0Matrix;

/// Quantization block length of every supported format.
pub const QK: usize = 32;

/// A quantized `[n, k]` weight matrix (row-major, rows of `k / 32` blocks).
///
/// # Safety
/// [`Self::dot_panel`] must write every element of the window it is given: the matmuls hand it
/// memory that was not zero-filled and read all of it afterwards (the default does).
pub unsafe trait QuantMatrix: Sync {
    /// The activation block type the weights are multiplied with.
    type Act: Copy + Send + Sync;
    /// Output width (rows of the weight matrix).
    fn n(&self) -> usize;
    /// Input width.
    fn k(&self) -> usize;
    /// One block of 32 activations, quantized with candle's arithmetic.
    fn quantize(xs: &[f32]) -> Self::Act;
    /// The blocks of `x` (32 values each) into `out` (as many as both hold), as
    /// [`Self::quantize`] gives them; a format may override it with a faster loop that gives
    /// the same blocks.
    fn quantize_into(x: &[f32], out: &mut [Self::Act]) {
        for (o, c) in out.iter_mut().zip(x.chunks_exact(QK)) {
            *o = Self::quantize(c);
        }
    }
    /// Weight row `j` against `ys.len()` (1–4) activation rows into `out`; `simd` selects the
    /// AVX2 tile kernel (callers pass it only when [`has_avx2_fma`]), else the scalar reference.
    fn dot_tile(&self, j: usize, ys: &[&[Self::Act]], out: &mut [f32], simd: bool);

    /// Weight rows `j0..j1` against every row of `rows` into `part` (`[rows.len(), j1 - j0]`,
    /// a window onto the output), walking [`Self::dot_tile`] (one weight row × up to 4
    /// activation rows). A format may override it with a larger register tile, as long as each
    /// output is computed with the same arithmetic whatever the tile (outputs must not depend on
    /// the batch) and every element of `part` is written (the trait's safety contract).
    fn dot_panel(&self, j0: usize, j1: usize, rows: &[&[Self::Act]], part: &mut PanelOut, simd: bool) {
        dot_panel_rows(self, j0, j1, rows, part, simd)
    }
}

/// [`QuantMatrix::dot_panel`]'s default: [`QuantMatrix::dot_tile`] over weight rows `j0..j1`,
/// up to 4 activation rows at a time.
fn dot_panel_rows<W: QuantMatrix + ?Sized>(w: &W, j0: usize, j1: usize, rows: &[&[W::Act]], part: &mut PanelOut, simd: bool) {
    let m = rows.len();
    for j in j0..j1 {
        let mut r = 0;
        while r < m {
            let t = (m - r).min(4);
            let mut res = [0f32; 4];
            w.dot_tile(j, &rows[r..r + t], &mut res[..t], simd);
            for (i, v) in res[..t].iter().enumerate() {
                part.write(r + i, j - j0, &[*v]);
            }
            r += t;
        }
    }
}

/// Whether the AVX2 + FMA tile kernels can run here (checked once).
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static A: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *A.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `x [m, k] · Wᵀ → [m, n]` for each matrix of `ws` that has input width `k` of the first (the
/// others get zeros). `x` is quantized once. `simd = false` forces the scalar reference.
pub fn matmul_many<W: QuantMatrix>(ws: &[&W], x: &[f32], m: usize, simd: bool) -> Vec<Vec<f32>> {
    let Some(first) = ws.first() else { return vec![] };
    let k = first.k();
    let nb = k / QK;
    let xq = quantize_rows::<W>(x, m, nb);
    let rows: Vec<&[W::Act]> = (0..m).map(|r| &xq[r * nb..(r + 1) * nb]).collect();
    let simd = simd && has_avx2_fma();
    let shapes: Vec<(usize, usize)> = ws.iter().map(|w| (w.n(), w.k())).collect();
    // SAFETY: `dot_panel` writes every element of its window (`QuantMatrix`'s contract).
    unsafe { run_panels(&shapes, m, Tasks::Balanced(16), |i, j0, j1, part| ws[i].dot_panel(j0, j1, &rows, part, simd)) }
}

/// The activations `x` (`[m, nb * 32]`) quantized, `[m, nb]` blocks: with several rows, the
/// rows are split over the pool's threads (the same blocks, each computed by one thread):
/// quantizing is otherwise serial work between the parallel matmul loops, with the helpers
/// waiting (~2.5 % of a 16-row step's samples on a 2-core Zen 4 VM).
fn quantize_rows<W: QuantMatrix>(x: &[f32], m: usize, nb: usize) -> Vec<W::Act> {
    let mut xq = vec![W::quantize(&[0.0; QK]); m * nb];
    let threads = crate::pool::threads();
    if m < 2 * threads || nb == 0 {
        W::quantize_into(x, &mut xq);
        return xq;
    }
    let rows_per = m.div_ceil(threads);
    crate::pool::for_each_chunk_mut(&mut xq, rows_per * nb, |i, out| {
        let start = i * rows_per * nb * QK;
        W::quantize_into(&x[start..(start + out.len() * QK).min(x.len())], out);
    });
    xq
}

/// How [`run_panels`] cuts the output columns into parallel tasks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tasks {
    /// Tasks of exactly this many columns (the last of a matrix may be narrower), one matrix
    /// each: for kernels with a fixed-size scratch panel.
    Fixed(usize),
    /// Guided tasks over all matrices' columns together, cut at multiples of this many columns:
    /// each task takes 1/(2 · threads) of the columns still left, so the first tasks are long
    /// (long contiguous runs of weights keep the hardware prefetchers streaming and the claims
    /// few: with one 16-column task per interleaved group, a one-row step spent more time
    /// claiming ~13 000 tasks and restarting memory streams than computing, 8–11 ms vs 5.7–6.5 ms
    /// per step on a 2-core Zen 4 VM) and the last ones one unit, so the threads finish a loop
    /// within about one unit of each other (with three equal tasks per thread a thread waited
    /// about half a task at the end of each of a one-row step's ~150 loops). A task may span
    /// matrices (it runs one piece per matrix).
    Balanced(usize),
}

/// Divisor of the columns left that sizes each [`Tasks::Balanced`] task, per pool thread.
const GUIDED_SHARE: usize = 2;

/// The pieces of [`run_panels`]'s tasks for `threads` pool threads: `(matrix, j0, j1, task)`,
/// tasks numbered in order and each task's pieces consecutive; matrices whose input width
/// differs from the first's get none.
fn cut(shapes: &[(usize, usize)], tasks: Tasks, threads: usize) -> Vec<(usize, usize, usize, usize)> {
    let Some(&(_, k)) = shapes.first() else { return vec![] };
    let live = || shapes.iter().enumerate().filter(|(_, s)| s.1 == k);
    let mut pieces = Vec::new();
    match tasks {
        Tasks::Fixed(cols) => {
            let cols = cols.max(1);
            for (i, &(n, _)) in live() {
                for j0 in (0..n).step_by(cols) {
                    pieces.push((i, j0, (j0 + cols).min(n), pieces.len()));
                }
            }
        }
        Tasks::Balanced(unit) => {
            let unit = unit.max(1);
            let total: usize = live().map(|(_, s)| s.0).sum();
            // Task boundaries in global columns: guided sizes, whole units.
            let mut ends = Vec::new();
            let mut start = 0;
            while start < total {
                let size = (total - start).div_ceil((threads * GUIDED_SHARE).max(1)).next_multiple_of(unit);
                start = (start + size).min(total);
                ends.push(start);
            }
            // Global column offset of the current matrix's first column.
            let mut base = 0;
            for (i, &(n, _)) in live() {
                let mut j0 = 0;
                while j0 < n {
                    let t = ends.partition_point(|&e| e <= base + j0);
                    let j1 = ends.get(t).map_or(n, |&e| (e - base).min(n));
                    pieces.push((i, j0, j1, t));
                    j0 = j1;
                }
                base += n;
            }
        }
    }
    pieces
}

/// One piece's output, written in place: columns `j0..j1` (`width` of them) of rows
/// `0..rows` of a row-major matrix whose rows are `stride` apart. [`run_panels`] hands each
/// piece a window onto the final outputs (pieces cover disjoint columns, so windows never
/// overlap) instead of a scratch buffer to assemble afterwards: for the LM head at 16 rows that
/// was 3 MB zeroed and 3 MB copied per step on the engine thread while the helpers waited.
pub struct PanelOut<'a> {
    /// First element of row 0; row `r` is `ptr + r * stride .. + width`, valid for writes and
    /// borrowed exclusively by this window for `'a`, not necessarily initialized (invariant of
    /// the constructors).
    ptr: *mut f32,
    stride: usize,
    width: usize,
    rows: usize,
    _out: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: a window is an exclusive borrow of its elements (see `ptr`), like `&mut [f32]`.
unsafe impl Send for PanelOut<'_> {}

impl<'a> PanelOut<'a> {
    /// A window over a whole `[rows, width]` buffer. Panics if `buf` is shorter.
    pub fn new(buf: &'a mut [f32], rows: usize, width: usize) -> Self {
        assert!(buf.len() >= rows * width, "panel buffer of {} for {rows} x {width}", buf.len());
        Self { ptr: buf.as_mut_ptr(), stride: width, width, rows, _out: std::marker::PhantomData }
    }

    /// Writes `src` into row `r` from column `c` on. Panics if that is not inside the window.
    /// The window's memory may be uninitialized ([`run_panels`] does not zero its outputs), so
    /// it is only ever written, never read or borrowed as `&mut [f32]`.
    pub fn write(&mut self, r: usize, c: usize, src: &[f32]) {
        assert!(r < self.rows && c + src.len() <= self.width, "{} values at row {r}, column {c} of a {} x {} panel", src.len(), self.rows, self.width);
        let dst = self.ptr.wrapping_add(r * self.stride + c);
        // SAFETY: the elements lie inside the window (checked), which is valid for writes and
        // borrowed exclusively (invariant of `ptr`); `src` is a different allocation. A whole
        // 16-lane group (the interleaved kernels' usual write) is copied at a constant size:
        // inline moves instead of a call to `memcpy` (~1 % of a 16-client server profile).
        unsafe {
            if let Ok(group) = <&[f32; 16]>::try_from(src) {
                (dst as *mut [f32; 16]).write_unaligned(*group);
            } else {
                std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len());
            }
        }
    }
}

/// The shared driver of the matmuls: for matrices of shapes `(n, k)` (those whose `k` differs
/// from the first's get zeros) and `m` activation rows, runs `panel(i, j0, j1, out)` for every
/// matrix `i` and column range `j0..j1` of the tasks `tasks` describes, in one parallel loop,
/// `out` being that piece's window onto matrix `i`'s `[m, n]` output (columns `j0..j1`).
/// Every output column is computed by exactly one piece, with the same arithmetic whatever the
/// cut (the kernels' outputs do not depend on the column range).
///
/// # Safety
/// `panel` must write every element of the window it is given (the outputs are not zero-filled
/// first, and are returned as initialized).
unsafe fn run_panels<F>(shapes: &[(usize, usize)], m: usize, tasks: Tasks, panel: F) -> Vec<Vec<f32>>
where
    F: Fn(usize, usize, usize, &mut PanelOut) + Sync,
{
    let pieces = cut(shapes, tasks, crate::pool::threads());
    // Outputs that pieces cover are not zero-filled first (at 16 rows the memset was ~2 % of a
    // step, serial on the caller): `cut` gives each of their columns to exactly one piece, and
    // every kernel writes every element of its window (`QuantMatrix::dot_panel`'s contract).
    let live = |k: usize| shapes.first().is_some_and(|f| f.1 == k);
    let mut outs: Vec<Vec<f32>> = shapes.iter().map(|&(n, k)| if live(k) { Vec::with_capacity(m * n) } else { vec![0f32; m * n] }).collect();
    for o in outs.iter_mut() {
        crate::pool::poison(o.spare_capacity_mut());
    }
    let bases: Vec<*mut f32> = outs.iter_mut().map(|o| o.as_mut_ptr()).collect();
    /// A piece: matrix, first and end output column, and its window.
    type Piece<'a> = (usize, usize, usize, PanelOut<'a>);
    let mut windows: Vec<Piece> = pieces
        .iter()
        .map(|&(i, j0, j1, _)| {
            let n = shapes[i].0;
            // SAFETY: `j0 < j1 <= n`, so every row's columns `j0..j1` lie inside `outs[i]`
            // (`[m, n]`), which is neither moved nor touched otherwise until the windows are
            // dropped (below); `cut` gives every column to exactly one piece (tested), so the
            // windows are disjoint.
            let ptr = unsafe { bases[i].add(j0) };
            (i, j0, j1, PanelOut { ptr, stride: n, width: j1 - j0, rows: m, _out: std::marker::PhantomData })
        })
        .collect();
    // The pieces of one task are consecutive: group them.
    let mut groups: Vec<&mut [Piece]> = Vec::new();
    let mut left: &mut [Piece] = &mut windows;
    let mut p = 0;
    while p < pieces.len() {
        let t = pieces[p].3;
        let len = pieces[p..].iter().take_while(|q| q.3 == t).count();
        let (head, tail) = std::mem::take(&mut left).split_at_mut(len);
        groups.push(head);
        left = tail;
        p += len;
    }
    crate::pool::for_each_mut(&mut groups, |_, group| {
        for (i, j0, j1, out) in group.iter_mut() {
            panel(*i, *j0, *j1, out);
        }
    });
    drop(groups);
    drop(windows);
    for (o, &(n, k)) in outs.iter_mut().zip(shapes) {
        if live(k) {
            // SAFETY: every element was written by the loop above (see where `outs` is made;
            // a panic in a task is re-raised by the loop, before this); `m * n` is the capacity.
            unsafe { o.set_len(m * n) };
        }
    }
    outs
}

/// Sum of the 8 lanes in candle's order (`hsum_float_8`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn hsum8(x: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    let r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// Deterministic test values in [-2, 2) (an LCG), shared by the formats' tests.
#[cfg(test)]
pub(crate) fn test_data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
        })
        .collect()
}

/// A random `[n, k]` Q4_1 matrix for the tests: f16 `d` in [0, 0.1), f16 `m` in [-0.4, 0.4),
/// random nibbles (row layout).
#[cfg(test)]
pub(crate) fn test_q4_1_matrix(n: usize, k: usize, seed: u32) -> Q4_1Matrix {
    let raw = test_data(n * k / QK * 20, seed);
    let mut bytes = Vec::with_capacity(raw.len());
    for c in raw.chunks_exact(20) {
        bytes.extend(half::f16::from_f32(c[0].abs() / 20.0).to_le_bytes());
        bytes.extend(half::f16::from_f32(c[1] / 5.0).to_le_bytes());
        bytes.extend(c[2..18].iter().map(|v| ((v + 2.0) * 64.0) as u8));
    }
    Q4_1Matrix::from_bytes(&bytes, n, k).unwrap_or_else(|| panic!("test matrix {n}x{k}"))
}

#[cfg(test)]
mod cut_tests {
    use super::*;

    /// Rows quantized over the pool equal each block quantized alone, for row counts below and
    /// above the split and uneven splits.
    #[test]
    fn rows_quantized_in_parallel_equal_blocks_alone() {
        let nb = 5;
        for m in [1, 2, 3, 4, 5, 7, 9, 16] {
            let x = test_data(m * nb * QK, 40 + m as u32);
            let got = quantize_rows::<Q4_1Matrix>(&x, m, nb);
            assert_eq!(got.len(), m * nb);
            for (i, (g, c)) in got.iter().zip(x.chunks_exact(QK)).enumerate() {
                let want = Q4_1Matrix::quantize(c);
                assert_eq!((g.parts().0, g.parts().1.to_bits(), g.parts().2.to_bits()), (want.parts().0, want.parts().1.to_bits(), want.parts().2.to_bits()), "m = {m}, block {i}");
            }
        }
    }

    /// Every column of every live matrix is in exactly one piece, a task's pieces are
    /// consecutive, balanced tasks are whole units but at matrix ends, and guided.
    #[test]
    fn pieces_cover_every_column_once() {
        let shapes = [(960, 576), (100, 64), (3072, 576), (70, 576)];
        for tasks in [Tasks::Fixed(16), Tasks::Fixed(48), Tasks::Balanced(16), Tasks::Balanced(1)] {
            for threads in [1, 2, 3, 16] {
                let p = cut(&shapes, tasks, threads);
                for (i, &(n, k)) in shapes.iter().enumerate() {
                    let mut seen = vec![0u8; n];
                    for &(_, j0, j1, _) in p.iter().filter(|q| q.0 == i) {
                        seen[j0..j1].iter_mut().for_each(|s| *s += 1);
                    }
                    let want = u8::from(k == 576);
                    assert!(seen.iter().all(|&s| s == want), "{tasks:?}, {threads} threads, matrix {i}");
                }
                assert!(p.windows(2).all(|w| w[1].3 == w[0].3 || w[1].3 == w[0].3 + 1), "{tasks:?}: tasks in order");
                if let Tasks::Balanced(u) = tasks {
                    assert!(p.iter().all(|&(i, j0, j1, _)| j0 % u == 0 && (j1 % u == 0 || j1 == shapes[i].0)), "{tasks:?}: units");
                    // Guided: task sizes never grow, the first is about 1/(2 · threads) of all
                    // columns, the last is at most one unit, and there are O(threads · log).
                    let n_tasks = p.last().map_or(0, |q| q.3 + 1);
                    let mut sizes = vec![0; n_tasks];
                    p.iter().for_each(|&(_, j0, j1, t)| sizes[t] += j1 - j0);
                    let total: usize = sizes.iter().sum();
                    assert!(sizes.windows(2).all(|w| w[1] <= w[0]), "{tasks:?}, {threads} threads: {sizes:?}");
                    assert!(sizes[0] >= total / (2 * threads) && sizes[0] <= total / (2 * threads) + u, "{tasks:?}, {threads} threads: {sizes:?}");
                    assert!(*sizes.last().unwrap() <= u, "{tasks:?}, {threads} threads: {sizes:?}");
                    let bound = 2 * threads * ((total / u) as f64).ln().ceil() as usize + 2 * threads;
                    assert!(n_tasks <= bound, "{n_tasks} tasks for {threads} threads (bound {bound})");
                }
            }
        }
    }
}
