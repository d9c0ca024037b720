//! The CPU kernels against the f64 references on random shapes: block sizes 1–16, GQA ratios
//! 1–4, head dims 1–64, contexts that are not multiples of the block size, sequences with no
//! cached prefix, single-token decode rows and multi-row prefill chunks in one batch, block
//! tables scattered over a shuffled pool. The cache is poisoned first, so a write to a wrong
//! slot (or a read of an unwritten one) shows.

use hhh_kernels::{cpu, reference, KvDtype, PagedKvCache, SeqMeta};
use proptest::prelude::*;

/// splitmix64-based values in [-1, 1).
fn values(seed: u64, n: usize) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Case {
    nkv: usize,
    group: usize,
    hd: usize,
    bs: usize,
    /// (cached prefix length, new rows) per sequence.
    seqs: Vec<(usize, usize)>,
    seed: u64,
    dtype: KvDtype,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..=3,
        prop::sample::select(vec![1usize, 2, 3, 4, 5]),
        prop::sample::select(vec![1usize, 3, 8, 16, 64]),
        prop::sample::select(vec![1usize, 2, 3, 4, 16]),
        prop::collection::vec((0usize..=37, 1usize..=9), 1..=3),
        any::<u64>(),
        prop::sample::select(vec![KvDtype::F32, KvDtype::F16]),
    )
        .prop_map(|(nkv, group, hd, bs, seqs, seed, dtype)| Case { nkv, group, hd, bs, seqs, seed, dtype })
}

fn run(c: &Case) -> Result<(), TestCaseError> {
    let (nkv, hd, bs) = (c.nkv, c.hd, c.bs);
    let nh = nkv * c.group;
    let w = nkv * hd;
    // Scattered block tables from a shuffled pool with spare blocks.
    let need: Vec<usize> = c.seqs.iter().map(|&(s, r)| (s + r).div_ceil(bs)).collect();
    let pool = need.iter().sum::<usize>() + 3;
    let mut order: Vec<u32> = (0..pool as u32).collect();
    let r = values(c.seed ^ 1, pool);
    order.sort_by(|a, b| r[*a as usize].total_cmp(&r[*b as usize]));
    let mut tables = Vec::new();
    let mut next = 0;
    for n in &need {
        tables.push(order[next..next + n].to_vec());
        next += n;
    }
    let mut cache = PagedKvCache::new(1, pool, bs, nkv, hd, c.dtype);
    // A poisoned slot read by attention ruins the output (f16 cannot hold 1e30: 60000 there).
    let poison = if c.dtype == KvDtype::F16 { 60000.0 } else { 1.0e30 };
    cache.keys[0].fill(poison);
    cache.values[0].fill(poison);
    // Contiguous keys/values of every position, and queries of the new rows.
    let ks: Vec<Vec<f32>> = c.seqs.iter().enumerate().map(|(i, &(s, r))| values(c.seed ^ (10 + i as u64), (s + r) * w)).collect();
    let vs: Vec<Vec<f32>> = c.seqs.iter().enumerate().map(|(i, &(s, r))| values(c.seed ^ (20 + i as u64), (s + r) * w)).collect();
    // What the cache holds: the values rounded to its dtype (the reference attends over these).
    let stored = |x: &Vec<f32>| -> Vec<f32> {
        if c.dtype == KvDtype::F16 {
            x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
        } else {
            x.clone()
        }
    };
    let (ks_st, vs_st): (Vec<Vec<f32>>, Vec<Vec<f32>>) = (ks.iter().map(stored).collect(), vs.iter().map(stored).collect());
    let qs: Vec<Vec<f32>> = c.seqs.iter().enumerate().map(|(i, &(_, r))| values(c.seed ^ (30 + i as u64), r * nh * hd)).collect();
    // Step 1: the cached prefixes (one batch); step 2: the new rows of every sequence (one batch).
    for step in 0..2 {
        let (mut metas, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for (i, &(s, r)) in c.seqs.iter().enumerate() {
            let (start, rows) = if step == 0 { (0, s) } else { (s, r) };
            if rows == 0 {
                continue;
            }
            metas.push(SeqMeta { row_start: k.len() / w, num_rows: rows, start_pos: start, block_table: tables[i].clone() });
            k.extend_from_slice(&ks[i][start * w..(start + rows) * w]);
            v.extend_from_slice(&vs[i][start * w..(start + rows) * w]);
        }
        cpu::write_kv(&mut cache, 0, &metas, &k, &v);
    }
    // Every position landed in its slot; slots outside the tables were not touched.
    let mut used = vec![false; pool * bs];
    for (i, &(s, r)) in c.seqs.iter().enumerate() {
        for p in 0..s + r {
            let slot = cache.slot(&tables[i], p);
            used[slot] = true;
            prop_assert_eq!(&cache.key_row(0, slot)[..], &ks_st[i][p * w..(p + 1) * w]);
            prop_assert_eq!(&cache.value_row(0, slot)[..], &vs_st[i][p * w..(p + 1) * w]);
        }
    }
    for (slot, u) in used.iter().enumerate() {
        if !u {
            prop_assert!(cache.key_row(0, slot).iter().all(|&x| x == poison), "slot {} written", slot);
        }
    }
    // Attention of all new rows in one batch against the reference, sequence by sequence.
    let mut metas = Vec::new();
    let mut q = Vec::new();
    for (i, &(s, r)) in c.seqs.iter().enumerate() {
        metas.push(SeqMeta { row_start: q.len() / (nh * hd), num_rows: r, start_pos: s, block_table: tables[i].clone() });
        q.extend_from_slice(&qs[i]);
    }
    // The serving kernel (vector loops where the CPU and head size allow) and the scalar loop.
    let got = cpu::paged_attention(&cache, 0, &metas, &q, nh);
    let got_scalar = cpu::paged_attention_scalar(&cache, 0, &metas, &q, nh);
    prop_assert!(got.iter().all(|x| x.is_finite()), "a poisoned slot was read");
    for (i, m) in metas.iter().enumerate() {
        let want = reference::attention(&qs[i], &ks_st[i], &vs_st[i], nh, nkv, hd, m.start_pos);
        let rows = m.row_start * nh * hd..(m.row_start + m.num_rows) * nh * hd;
        for (a, b) in got[rows.clone()].iter().zip(&want) {
            prop_assert!((*a as f64 - b).abs() <= 1e-4 * (1.0 + b.abs()), "seq {}: {} vs {}", i, a, b);
        }
        for (a, b) in got_scalar[rows].iter().zip(&want) {
            prop_assert!((*a as f64 - b).abs() <= 1e-4 * (1.0 + b.abs()), "scalar, seq {}: {} vs {}", i, a, b);
        }
        // The split-context (flash-decoding) combination the CUDA decode kernel uses agrees with
        // the plain definition for the last row, for any partition size.
        let last = &qs[i][(m.num_rows - 1) * nh * hd..];
        let ctx = m.start_pos + m.num_rows;
        let part = 1 + (c.seed as usize % 8);
        let split = reference::attention_split(last, &ks_st[i], &vs_st[i], nh, nkv, hd, ctx, part);
        for (a, b) in split.iter().zip(&want[(m.num_rows - 1) * nh * hd..]) {
            prop_assert!((a - b).abs() <= 1e-9 * (1.0 + b.abs()), "split {}: {} vs {}", part, a, b);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn kernels_match_the_f64_reference(c in case()) {
        run(&c)?;
    }
}

#[test]
fn edge_cases() {
    // Single-token context (first token), block size 1, and a long context spanning many blocks.
    // The default model's shape (3 KV heads, group 3, head dim 64) at a 300-token context.
    let cases = [(vec![(0, 1)], 16, 8), (vec![(0, 1), (5, 1), (15, 1)], 1, 8), (vec![(200, 1), (0, 7)], 16, 8), (vec![(16, 16)], 16, 8), (vec![(299, 1), (250, 5)], 16, 64)];
    for (seqs, bs, hd) in cases {
        for dtype in [KvDtype::F32, KvDtype::F16] {
            let (nkv, group) = if hd == 64 { (3, 3) } else { (2, 2) };
            let c = Case { nkv, group, hd, bs, seqs: seqs.clone(), seed: 42, dtype };
            run(&c).unwrap();
        }
    }
}
