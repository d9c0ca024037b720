//! The CUDA kernels, run on the CPU through the SIMT shim, against their CPU twins in
//! `hhh_kernels::cpu` on random shapes: head dims 64 and 128, block sizes 8/16/32, GQA groups
//! 1-8, cached prefixes, chunks that do not start or end on a block boundary, contexts over one
//! decode partition, scattered block tables, a cache poisoned with NaN outside the slots in use,
//! and rows with slot -1 that must not be written.
//!
//! A plain `main` (`harness = false` in Cargo.toml), not libtest: scripts/check-cuda.sh runs this
//! binary under ThreadSanitizer, and libtest's own threads (a thread per test, a result channel,
//! captured output behind a mutex) synchronise inside Rust's std, which is not instrumented, so
//! TSan reported them as races. Here every case runs on the main thread, and the only other
//! threads are the shim's C++ threads (created and joined through pthreads, which TSan sees).

use half::{bf16, f16};
use hhh_kernels::cpu::{self, CacheGeom, KvElem};
use hhh_kernels::plan::{AttnPlan, PARTITION, PREFILL_TILE_ROWS};
use hhh_kernels::SeqMeta;
use hhh_kernels_simt::{attention, kernel_constants, reshape_and_cache, Dtype, SimtElem};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f32 {
        self.next() as f32 / (1u64 << 31) as f32 * 2.0 - 1.0
    }
}

fn kernel_constants_match_the_plan() {
    assert_eq!(kernel_constants(), (PARTITION, PREFILL_TILE_ROWS));
}

/// One random step: sequences with a cached prefix and new rows (some one-row, some chunks).
struct Case {
    geom: CacheGeom,
    num_heads: usize,
    num_blocks: usize,
    seqs: Vec<SeqMeta>,
    /// Keys/values of every position of every sequence, `[positions, width]` per sequence.
    kv: Vec<(Vec<f32>, Vec<f32>)>,
}

fn random_case(rng: &mut Rng, hd: usize, long: bool) -> Case {
    let bs = [8, 16, 32][rng.below(3)];
    let nkv = 1 + rng.below(2);
    let group = [1, 2, 3, 4, 8][rng.below(5)];
    let geom = CacheGeom { block_size: bs, num_kv_heads: nkv, head_dim: hd };
    let nseq = 1 + rng.below(4);
    let mut lens = Vec::new();
    for i in 0..nseq {
        let decode = rng.below(2) == 0;
        let start = if long && i == 0 { PARTITION + 37 + rng.below(300) } else { rng.below(70) };
        let rows = if decode { 1 } else { 2 + rng.below(40) };
        lens.push((start, rows));
    }
    let blocks_needed: usize = lens.iter().map(|(s, r)| (s + r).div_ceil(bs)).sum();
    let num_blocks = blocks_needed + 3 + rng.below(5);
    // A random permutation of the pool, dealt out to the sequences: scattered tables.
    let mut ids: Vec<u32> = (0..num_blocks as u32).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i + 1));
    }
    let (mut seqs, mut kv, mut row) = (Vec::new(), Vec::new(), 0);
    let w = geom.slot_width();
    for (start, rows) in lens {
        let nb = (start + rows).div_ceil(bs);
        let table: Vec<u32> = ids.drain(..nb).collect();
        seqs.push(SeqMeta { row_start: row, num_rows: rows, start_pos: start, block_table: table });
        let n = (start + rows) * w;
        kv.push(((0..n).map(|_| rng.unit()).collect(), (0..n).map(|_| rng.unit()).collect()));
        row += rows;
    }
    Case { geom, num_heads: nkv * group, num_blocks, seqs, kv }
}

fn to_t<T: KvElem>(x: &[f32]) -> Vec<T> {
    x.iter().map(|&v| T::from_f32(v)).collect()
}

fn to_f<T: KvElem>(x: &[T]) -> Vec<f32> {
    x.iter().map(|v| v.to_f32()).collect()
}

/// Fill the caches for `case` with the SIMT `reshape_and_cache` (prefix positions first, as an
/// earlier step would have, then the new rows with padding rows of slot -1 in between) and check
/// them against the CPU twin bit for bit.
fn fill_caches<T: SimtElem + PartialEq + std::fmt::Debug>(case: &Case, rng: &mut Rng) -> (Vec<T>, Vec<T>) {
    let w = case.geom.slot_width();
    let n = case.num_blocks * case.geom.block_size * w;
    let nan = T::from_f32(f32::NAN);
    let (mut kc, mut vc) = (vec![nan; n], vec![nan; n]);
    let (mut kc_cpu, mut vc_cpu) = (vec![nan; n], vec![nan; n]);
    for (s, (k, v)) in case.seqs.iter().zip(&case.kv) {
        for (from, to) in [(0, s.start_pos), (s.start_pos, s.start_pos + s.num_rows)] {
            // Rows in order with a padding row (slot -1, garbage data) now and then.
            let (mut slots, mut ks, mut vs) = (Vec::new(), Vec::new(), Vec::new());
            for p in from..to {
                if rng.below(5) == 0 {
                    slots.push(-1);
                    ks.extend((0..w).map(|_| 1e4f32));
                    vs.extend((0..w).map(|_| -1e4f32));
                }
                slots.push(case.geom.slot(&s.block_table, p) as i64);
                ks.extend_from_slice(&k[p * w..(p + 1) * w]);
                vs.extend_from_slice(&v[p * w..(p + 1) * w]);
            }
            reshape_and_cache::<T>(&to_t(&ks), &to_t(&vs), &mut kc, &mut vc, &slots, w);
            cpu::reshape_and_cache::<T>(&mut kc_cpu, &mut vc_cpu, w, &slots, &ks, &vs);
        }
    }
    let same = |a: &[T], b: &[T]| a.iter().zip(b).all(|(x, y)| x == y || (x.to_f32().is_nan() && y.to_f32().is_nan()));
    assert!(same(&kc, &kc_cpu) && same(&vc, &vc_cpu), "reshape_and_cache differs from its CPU twin");
    (kc, vc)
}

/// Run `cases` random steps in storage type T and compare with the CPU twin
/// (`HHH_SIMT_CASES` overrides the count: the ThreadSanitizer run uses a few).
fn check_attention<T: SimtElem + PartialEq + std::fmt::Debug>(seed: u64, cases: usize, tol: f32) {
    let cases = std::env::var("HHH_SIMT_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    let mut rng = Rng(seed);
    let mut worst = 0f32;
    for c in 0..cases {
        let hd = [64, 128][c % 2];
        let case = random_case(&mut rng, hd, c % 3 == 2);
        let (kc, vc) = fill_caches::<T>(&case, &mut rng);
        let rows: usize = case.seqs.iter().map(|s| s.num_rows).sum();
        let qw = case.num_heads * hd;
        let q: Vec<T> = to_t(&(0..rows * qw).map(|_| rng.unit() * 2.0).collect::<Vec<_>>());
        let plan = AttnPlan::build(&case.seqs, case.geom.block_size).expect("plan");
        let mut out = vec![T::from_f32(f32::NAN); rows * qw];
        attention::<T>(&plan, case.geom, &q, &kc, &vc, case.num_heads, &mut out).expect("launch");
        let want = cpu::paged_attention_slices::<T>(case.geom, &kc, &vc, &case.seqs, &to_f(&q), case.num_heads);
        for (i, (a, b)) in to_f(&out).iter().zip(&want).enumerate() {
            let err = (a - b).abs();
            assert!(err <= tol, "{:?} case {c} (hd {hd}, bs {}, heads {}/{}): element {i}: kernel {a} vs CPU twin {b}", T::DTYPE, case.geom.block_size, case.num_heads, case.geom.num_kv_heads);
            worst = worst.max(err);
        }
    }
    eprintln!("{:?}: {cases} random steps, largest difference from the CPU twin {worst:.2e}", T::DTYPE);
}

// Values are in [-1, 1], so the tolerances are absolute. f32: summation order and expf. f16 and
// bf16: the kernels round P to the storage type before P·V (as flash-attention 2 does) and the
// output to the storage type; the twin rounds neither.
fn f32_kernels_match_the_cpu_twin() {
    check_attention::<f32>(1, 12, 2e-5);
}

fn f16_kernels_match_the_cpu_twin() {
    check_attention::<f16>(2, 9, 4e-3);
}

fn bf16_kernels_match_the_cpu_twin() {
    check_attention::<bf16>(3, 9, 3e-2);
}

fn launch_checks_bounds_before_running() {
    let geom = CacheGeom { block_size: 8, num_kv_heads: 1, head_dim: 64 };
    let seqs = [SeqMeta { row_start: 0, num_rows: 3, start_pos: 0, block_table: vec![5] }];
    let plan = AttnPlan::build(&seqs, 8).unwrap();
    let (kc, vc) = (vec![0f32; 2 * 8 * 64], vec![0f32; 2 * 8 * 64]); // 2 blocks: id 5 is outside
    let q = vec![0f32; 3 * 64];
    let mut out = q.clone();
    let e = attention::<f32>(&plan, geom, &q, &kc, &vc, 1, &mut out).unwrap_err();
    assert!(e.contains("block id 5"), "{e}");
    assert_eq!(Dtype::F32, <f32 as SimtElem>::DTYPE);
}

fn main() {
    let cases: [(&str, fn()); 5] = [
        ("kernel_constants_match_the_plan", kernel_constants_match_the_plan),
        ("f32_kernels_match_the_cpu_twin", f32_kernels_match_the_cpu_twin),
        ("f16_kernels_match_the_cpu_twin", f16_kernels_match_the_cpu_twin),
        ("bf16_kernels_match_the_cpu_twin", bf16_kernels_match_the_cpu_twin),
        ("launch_checks_bounds_before_running", launch_checks_bounds_before_running),
    ];
    // `cargo test -- NAME` filters as libtest would (a substring of the case's name); libtest's
    // options are ignored, with the value of those that take one (`--test-threads 2`).
    let mut filter = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if ["--test-threads", "--skip", "--format", "--color", "--logfile", "-Z"].contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            filter.push(a);
        }
    }
    let mut ran = 0;
    for (name, case) in cases {
        if filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())) {
            case(); // a failed assertion panics: the process exits non-zero and cargo reports it
            eprintln!("ok: {name}");
            ran += 1;
        }
    }
    eprintln!("{ran} SIMT kernel checks passed");
}
