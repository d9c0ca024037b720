//! Q4_1 weights interleaved 16 rows at a time, multiplied with Q8_1 activations by an AVX-512
//! VNNI kernel that computes 16 outputs per instruction, with candle's arithmetic exactly.
//!
//! The row-layout kernel ([`super::q4_1`]) reduces every 32-element block pair of one weight row
//! to a float and scales it: per row and block, ~7 instructions for 32 multiply-adds. Here the
//! 16 weight rows of a group sit side by side (lane `j` of every vector is row `16g + j`), so
//! `vpdpbusd` (u8 weights × s8 activations, 4 products per lane) accumulates the integer block
//! dot of 16 rows at once, and the float part (`sumi·d_w·d_x + m_w·s_x`, added to the running
//! sum) is 6 vector operations for the 16 rows: ~14 instructions per 512 multiply-adds.
//!
//! Arithmetic: the integer block dot is exact, and the float part is candle's generic
//! `vec_dot_q4_1_q8_1` step for step (`sumf += sumi as f32 * d * yd + m * s`, no fused
//! multiply-add), so every output is bit for bit candle's, whatever the number of rows, the
//! tile or the batch (tested). There is no separate path for prompt rows.
//!
//! Layout of group `g` (weight rows `16g..16g+16`; the last group is padded with zero rows),
//! block `b`: 4 vectors of 64 bytes; in vector `p`, lane `j`'s 4 bytes are bytes `4p..4p+4` of
//! row `16g + j`'s block (low nibbles: elements `4p..4p+4`, high nibbles: `16+4p..16+4p+4`);
//! then 16 f16 scales and 16 f16 mins (the file's values, so no precision is lost).

use super::q8_1::BlockQ8_1;
use super::PanelOut;

mod avx2;
pub use avx2::has_avx2_x16;

/// Weight rows per group (lanes of a 512-bit vector of i32).
pub(super) const G: usize = 16;

/// Most activation rows a tile of [`group_tiles`] holds: the Q4_1 kernel unpacks a block's
/// nibbles once per tile, so 8 rows share the unpacking where 4 did (with 2 integer chains per
/// row instead of 4, to stay within the 32 vector registers). `step_bench` 16 rows, 4
/// alternations on a 2-core Zen 4 VM: minimum 15.7-16.7 vs 17.0-17.3 ms, median lower in 3.
pub(super) const TILE_MAX: usize = 8;

/// A Q4_1 matrix in the interleaved layout (module docs).
#[derive(Debug, Clone)]
pub(super) struct X16 {
    /// `[groups, k / 32, 256]` bytes.
    qs: Vec<u8>,
    /// `[groups, k / 32, 16]` f16 bits of the scales and the mins.
    d: Vec<u16>,
    m: Vec<u16>,
    /// Blocks per row (`k / 32`).
    nb: usize,
}

impl X16 {
    /// From row-layout blocks (`qs[j * nb + b]`, f32 scale and min that are f16 values).
    pub(super) fn pack(qs: &[[u8; 16]], d: &[f32], m: &[f32], n: usize, nb: usize) -> Self {
        let groups = n.div_ceil(G);
        let mut x = X16 { qs: vec![0; groups * nb * 256], d: vec![0; groups * nb * G], m: vec![0; groups * nb * G], nb };
        for j in 0..n {
            let (g, lane) = (j / G, j % G);
            for b in 0..nb {
                let (src, gb) = (j * nb + b, g * nb + b);
                for p in 0..4 {
                    let o = gb * 256 + p * 64 + lane * 4;
                    x.qs[o..o + 4].copy_from_slice(&qs[src][4 * p..4 * p + 4]);
                }
                x.d[gb * G + lane] = half::f16::from_f32(d[src]).to_bits();
                x.m[gb * G + lane] = half::f16::from_f32(m[src]).to_bits();
            }
        }
        x
    }

    /// The address ranges of the data.
    pub(super) fn buffers(&self) -> [(usize, usize); 3] {
        use crate::mem::range_of;
        [range_of(&self.qs), range_of(&self.d), range_of(&self.m)]
    }

    /// The bytes of groups `g0..g1` (`g1` at most the number of groups): scales, mins and
    /// nibbles as `(address, length)`.
    pub(super) fn group_ranges(&self, g0: usize, g1: usize) -> [(usize, usize); 3] {
        let (qb, sb) = (self.nb * 256, self.nb * G);
        let part = |base: usize, per: usize, size: usize| (base + g0 * per * size, (g1.saturating_sub(g0)) * per * size);
        [part(self.d.as_ptr() as usize, sb, 2), part(self.m.as_ptr() as usize, sb, 2), part(self.qs.as_ptr() as usize, qb, 1)]
    }

    /// Row `j`'s block `b` back in the row layout: nibbles, scale, min.
    fn block(&self, j: usize, b: usize) -> ([u8; 16], f32, f32) {
        let gb = (j / G) * self.nb + b;
        let lane = j % G;
        let mut q = [0u8; 16];
        for p in 0..4 {
            let o = gb * 256 + p * 64 + lane * 4;
            q[4 * p..4 * p + 4].copy_from_slice(&self.qs[o..o + 4]);
        }
        let f = |v: u16| half::f16::from_bits(v).to_f32();
        (q, f(self.d[gb * G + lane]), f(self.m[gb * G + lane]))
    }

    /// Weight row `j` against activation row `y`, candle's scalar arithmetic (the reference).
    pub(super) fn dot_scalar(&self, j: usize, y: &[BlockQ8_1]) -> f32 {
        let mut sumf = 0f32;
        for (b, yb) in y.iter().enumerate().take(self.nb) {
            let (q, d, m) = self.block(j, b);
            let (yq, yd, ys) = yb.parts();
            let mut sumi = 0i32;
            for i in 0..16 {
                sumi += (q[i] & 0x0F) as i32 * yq[i] as i32 + (q[i] >> 4) as i32 * yq[i + 16] as i32;
            }
            sumf += sumi as f32 * d * yd + m * ys;
        }
        sumf
    }

    /// Weight rows `j0..j1` against every row of `rows` into `part` (`[rows.len(), j1 - j0]`).
    /// `simd`: the VNNI kernel where the CPU has it ([`has_vnni512`]), else the AVX2 one
    /// ([`has_avx2_x16`]), else (and with `simd` false) [`Self::dot_scalar`]; the same bits
    /// every way.
    pub(super) fn panel(&self, j0: usize, j1: usize, rows: &[&[BlockQ8_1]], part: &mut PanelOut, simd: bool) {
        let kernel = match (simd, has_vnni512(), has_avx2_x16()) {
            (true, true, _) => Kernel::Vnni512,
            (true, false, true) => Kernel::Avx2,
            _ => Kernel::Scalar,
        };
        self.panel_with(kernel, j0, j1, rows, part)
    }

    /// [`Self::panel`] with the given kernel, which must be one the CPU can run (tests pick
    /// each in turn).
    fn panel_with(&self, kernel: Kernel, j0: usize, j1: usize, rows: &[&[BlockQ8_1]], part: &mut PanelOut) {
        let all_blocks = rows.iter().all(|y| y.len() >= self.nb);
        // The first tile of a group also prefetches the next group: the later tiles find this
        // group in L1, the first waits on memory (with 16 rows, step_bench's median step was
        // lower in 4 of 5 alternating pairs on a 2-core Zen 4 VM, by 1-25 %; this VM's noise is
        // of that order, so the gain is not established beyond it).
        #[cfg(target_arch = "x86_64")]
        match kernel {
            Kernel::Vnni512 if all_blocks && has_vnni512() => {
                group_tiles(j0, j1, rows.len(), TILE_MAX, part, |g, r, t, out| {
                    // SAFETY: AVX-512F/BW and VNNI were detected; group `g` exists (`j1 <= n`)
                    // and every row holds `nb` blocks (`all_blocks`).
                    let pf = r == 0;
                    unsafe {
                        match t {
                            8 => tile::<8>(self, g, &rows[r..r + 8], out, pf),
                            7 => tile::<7>(self, g, &rows[r..r + 7], out, pf),
                            6 => tile::<6>(self, g, &rows[r..r + 6], out, pf),
                            5 => tile::<5>(self, g, &rows[r..r + 5], out, pf),
                            4 => tile::<4>(self, g, &rows[r..r + 4], out, pf),
                            3 => tile::<3>(self, g, &rows[r..r + 3], out, pf),
                            2 => tile::<2>(self, g, &rows[r..r + 2], out, pf),
                            _ => tile::<1>(self, g, &rows[r..r + 1], out, pf),
                        }
                    }
                });
                return;
            }
            Kernel::Avx2 if all_blocks && has_avx2_x16() => {
                group_tiles(j0, j1, rows.len(), avx2::TILE_ROWS, part, |g, r, t, out| {
                    // SAFETY: AVX2, FMA and F16C were detected; group and rows as above.
                    let pf = r == 0;
                    unsafe {
                        match t {
                            8 => avx2::tile::<8>(self, g, &rows[r..r + 8], out, pf),
                            7 => avx2::tile::<7>(self, g, &rows[r..r + 7], out, pf),
                            6 => avx2::tile::<6>(self, g, &rows[r..r + 6], out, pf),
                            5 => avx2::tile::<5>(self, g, &rows[r..r + 5], out, pf),
                            4 => avx2::tile::<4>(self, g, &rows[r..r + 4], out, pf),
                            3 => avx2::tile::<3>(self, g, &rows[r..r + 3], out, pf),
                            2 => avx2::tile::<2>(self, g, &rows[r..r + 2], out, pf),
                            _ => avx2::tile::<1>(self, g, &rows[r..r + 1], out, pf),
                        }
                    }
                });
                return;
            }
            _ => {}
        }
        let _ = (kernel, all_blocks);
        for (r, y) in rows.iter().enumerate() {
            for j in j0..j1 {
                part.write(r, j - j0, &[self.dot_scalar(j, y)]);
            }
        }
    }
}

/// Which kernel [`X16::panel_with`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// `tile` (AVX-512 VNNI, up to 8 rows per tile).
    Vnni512,
    /// `avx2::tile` (up to 8 rows per tile).
    Avx2,
    /// [`X16::dot_scalar`] per output.
    Scalar,
}

/// Prefetches (into L1) block `b` of the group after the one whose block `b` sits at `gb`: its
/// 256 bytes and, every other block, its scales and mins. The first tile of a group does this
/// in both interleaved kernels, so that the later tiles, and the next group, find their bytes
/// near. A prefetch past the end of the data is harmless.
///
/// # Safety
/// None beyond calling it on x86-64: prefetches never fault, whatever the address.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch_next_group(x: &X16, gb: usize, b: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    let next = gb + x.nb;
    let ahead = x.qs.as_ptr().wrapping_add(next * 256) as *const i8;
    for l in 0..4 {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * l));
    }
    if b.is_multiple_of(2) {
        _mm_prefetch::<_MM_HINT_T0>(x.d.as_ptr().wrapping_add(next * G) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(x.m.as_ptr().wrapping_add(next * G) as *const i8);
    }
}

/// The driver of both interleaved kernels' panels: for every 16-row group `g` that overlaps
/// `j0..j1` and every run of up to `tile_rows` (at most [`TILE_MAX`]) of the `m` activation rows starting at
/// row `r`, `tile(g, r, t, out)` fills `out[..t]` with the group's 16 outputs for rows
/// `r..r + t`; the lanes inside `j0..j1` are copied into `part` (`[m, j1 - j0]`).
pub(super) fn group_tiles(j0: usize, j1: usize, m: usize, tile_rows: usize, part: &mut PanelOut, mut tile: impl FnMut(usize, usize, usize, &mut [[f32; G]; TILE_MAX])) {
    for g in j0 / G..j1.div_ceil(G) {
        // Columns `c0..c1` of `part` are lanes `l0..` of group `g`.
        let (c0, c1) = ((G * g).max(j0) - j0, (G * g + G).min(j1) - j0);
        let l0 = c0 + j0 - G * g;
        let mut r = 0;
        while r < m {
            let t = (m - r).min(tile_rows.clamp(1, TILE_MAX));
            let mut out = [[0f32; G]; TILE_MAX];
            tile(g, r, t, &mut out);
            for (i, o) in out.iter().enumerate().take(t) {
                part.write(r + i, c0, &o[l0..l0 + c1 - c0]);
            }
            r += t;
        }
    }
}

/// Whether the interleaved kernel can run here: AVX-512F, BW and VNNI, unless
/// [`super::isa::IsaLimits::no_vnni512`] (for A/B measurements). Checked once.
pub fn has_vnni512() -> bool {
    static A: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *A.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vnni") {
            return !super::isa::limits().no_vnni512;
        }
        false
    })
}

/// Group `g` against `R` activation rows into `out[..R]`: per block, the 4 weight vectors are
/// unpacked once (low and high nibbles) and `vpdpbusd`-ed with each row's broadcast 4-byte
/// groups; then candle's float step per lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::needless_range_loop)] // rows and chunks index several register arrays at once
unsafe fn tile<const R: usize>(x: &X16, g: usize, ys: &[&[BlockQ8_1]], out: &mut [[f32; G]; TILE_MAX], prefetch: bool) {
    use std::arch::x86_64::*;
    let mask = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); R];
    let nb = x.nb;
    let base = g * nb;
    for b in 0..nb {
        let gb = base + b;
        let qp = x.qs.as_ptr().add(gb * 256);
        if prefetch {
            prefetch_next_group(x, gb, b);
        }
        // Four independent integer chains per row (low/high nibbles × even/odd vector), two for
        // tiles of more than 4 rows (which have chains enough across rows): one chain of 8
        // dependent `vpdpbusd` would leave the kernel waiting on their latency. The integer sum
        // is exact, so the split does not change it.
        let mut isum = [[_mm512_setzero_si512(); 4]; R];
        for p in 0..4 {
            let q = _mm512_loadu_si512(qp.add(p * 64) as *const _);
            let lo = _mm512_and_si512(q, mask);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), mask);
            for r in 0..R {
                let yq = ys.get_unchecked(r).get_unchecked(b).parts().0.as_ptr();
                let ylo = _mm512_set1_epi32((yq.add(4 * p) as *const i32).read_unaligned());
                let yhi = _mm512_set1_epi32((yq.add(16 + 4 * p) as *const i32).read_unaligned());
                let c = if R > 4 { 0 } else { 2 * (p & 1) };
                isum[r][c] = _mm512_dpbusd_epi32(isum[r][c], lo, ylo);
                isum[r][c + 1] = _mm512_dpbusd_epi32(isum[r][c + 1], hi, yhi);
            }
        }
        let d = _mm512_cvtph_ps(_mm256_loadu_si256(x.d.as_ptr().add(gb * G) as *const __m256i));
        let m = _mm512_cvtph_ps(_mm256_loadu_si256(x.m.as_ptr().add(gb * G) as *const __m256i));
        for r in 0..R {
            let (_, yd, ys_) = ys.get_unchecked(r).get_unchecked(b).parts();
            let i = &isum[r];
            let sumi = _mm512_add_epi32(_mm512_add_epi32(i[0], i[1]), _mm512_add_epi32(i[2], i[3]));
            let t = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sumi), d), _mm512_set1_ps(yd));
            let u = _mm512_mul_ps(m, _mm512_set1_ps(ys_));
            acc[r] = _mm512_add_ps(acc[r], _mm512_add_ps(t, u));
        }
    }
    for r in 0..R {
        _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_data as data;
    use super::super::test_q4_1_matrix as matrix;
    use super::super::{matmul_many, matmul_split, PanelOut, Q4_1Matrix, QuantMatrix, QK};
    use super::*;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Every kernel this CPU can run, on whole groups, with `m` activation rows.
    fn each_kernel(w: &Q4_1Matrix, rows: &[&[BlockQ8_1]], m: usize) -> Vec<(Kernel, Vec<f32>)> {
        let Some(x) = &w.x16 else { panic!("not interleaved") };
        let mut kernels = vec![Kernel::Scalar];
        if has_vnni512() {
            kernels.push(Kernel::Vnni512);
        }
        if has_avx2_x16() {
            kernels.push(Kernel::Avx2);
        } else {
            eprintln!("AVX2 kernel not compared: this CPU cannot run it");
        }
        kernels
            .into_iter()
            .map(|k| {
                let mut out = vec![0f32; m * w.n];
                x.panel_with(k, 0, w.n, rows, &mut PanelOut::new(&mut out, m, w.n));
                (k, out)
            })
            .collect()
    }

    /// Interleaved weights give candle's bits (the row layout's scalar reference, itself tested
    /// equal to candle's Q4_1 matmul in `q4_1`) through the kernel `matmul_many` picks on this
    /// CPU and through each kernel the CPU can run (VNNI, AVX2, the interleaved scalar
    /// reference), for every row count (tiles of 1-8 rows, remainders), a last group padded
    /// with zero rows, and through `matmul_split` whatever the row kinds (one path for every
    /// row).
    #[test]
    fn interleaved_equals_candle_arithmetic_bitwise() {
        let k = 256;
        let (a, b) = (matrix(70, k, 11), matrix(16, k, 12));
        let (ai, bi) = (a.clone().into_x16(), b.clone().into_x16());
        if !has_vnni512() {
            eprintln!("VNNI kernel not compared: this CPU cannot run it");
        }
        for m in [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 19] {
            let x = data(m * k, 30 + m as u32);
            let want = matmul_many(&[&a, &b], &x, m, false);
            let fast = matmul_many(&[&ai, &bi], &x, m, true);
            let slow = matmul_many(&[&ai, &bi], &x, m, false);
            let kinds: Vec<bool> = (0..m).map(|r| r % 2 == 0).collect();
            let split = matmul_split(&[&ai, &bi], &x, m, &kinds, true);
            for i in 0..2 {
                assert_eq!(bits(&fast[i]), bits(&want[i]), "kernel, m = {m}, matrix {i}");
                assert_eq!(bits(&slow[i]), bits(&want[i]), "scalar, m = {m}, matrix {i}");
                assert_eq!(bits(&split[i]), bits(&want[i]), "split, m = {m}, matrix {i}");
            }
            let xq: Vec<_> = x.chunks_exact(QK).map(Q4_1Matrix::quantize).collect();
            let rows: Vec<&[BlockQ8_1]> = xq.chunks_exact(k / QK).collect();
            for (kernel, got) in each_kernel(&ai, &rows, m) {
                assert_eq!(bits(&got), bits(&want[0]), "{kernel:?}, m = {m}");
            }
        }
    }

    /// The integer block dots at their extremes (every nibble 15, every activation ±127, and
    /// mixed signs) stay exact in every kernel: the AVX2 kernel's i16 sums do not clip.
    #[test]
    fn extreme_blocks_are_exact_in_every_kernel() {
        let (n, k) = (16, 128);
        let mut bytes = Vec::new();
        for j in 0..n * k / QK {
            bytes.extend(half::f16::from_f32(0.01).to_le_bytes());
            bytes.extend(half::f16::from_f32(-0.02).to_le_bytes());
            bytes.extend([if j % 3 == 0 { 0x0F } else { 0xFF }; 16]);
        }
        let a = Q4_1Matrix::from_bytes(&bytes, n, k).unwrap_or_else(|| panic!("matrix"));
        let ai = a.clone().into_x16();
        let m = 3;
        let x: Vec<f32> = (0..m * k)
            .map(|i| match i / k {
                0 => 1.0,
                1 => -1.0,
                _ => {
                    if i % 2 == 0 {
                        3.0
                    } else {
                        -3.0
                    }
                }
            })
            .collect();
        let want = matmul_many(&[&a], &x, m, false).remove(0);
        let xq: Vec<_> = x.chunks_exact(QK).map(Q4_1Matrix::quantize).collect();
        assert_eq!(xq[0].parts().0, &[127i8; 32], "full-scale activations");
        let rows: Vec<&[BlockQ8_1]> = xq.chunks_exact(k / QK).collect();
        for (kernel, got) in each_kernel(&ai, &rows, m) {
            assert_eq!(bits(&got), bits(&want), "{kernel:?}");
        }
    }

    /// A panel that starts and ends inside groups (other column splits than the driver's)
    /// gives the same outputs as whole groups.
    #[test]
    fn panels_across_group_boundaries() {
        let (n, k, m) = (70, 64, 6);
        let w = matrix(n, k, 13).into_x16();
        let x = data(m * k, 14);
        let xq: Vec<_> = x.chunks_exact(QK).map(Q4_1Matrix::quantize).collect();
        let rows: Vec<&[BlockQ8_1]> = xq.chunks_exact(k / QK).collect();
        let full = matmul_many(&[&w], &x, m, false).remove(0);
        for (j0, j1) in [(5, 40), (0, 70), (17, 18), (48, 70)] {
            for simd in [true, false] {
                let mut part = vec![0f32; m * (j1 - j0)];
                w.dot_panel(j0, j1, &rows, &mut PanelOut::new(&mut part, m, j1 - j0), simd);
                for r in 0..m {
                    assert_eq!(bits(&part[r * (j1 - j0)..(r + 1) * (j1 - j0)]), bits(&full[r * n + j0..r * n + j1]), "{j0}..{j1}, row {r}");
                }
            }
        }
    }
}
