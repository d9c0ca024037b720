//! CPU attention of the model: the kernels of `hhh-kernels` (re-exported), and a dense variant
//! with candle's exact arithmetic for the reference tests.

pub use hhh_kernels::cpu::{paged_attention, write_kv};
use hhh_kernels::{PagedKvCache, SeqMeta};

/// Attention with candle's dense ops (the reference models' exact arithmetic: matmul, softmax,
/// matmul), after gathering each sequence's keys and values through its block table. Slow; used
/// by tests to separate kernel arithmetic from paging logic.
pub fn paged_attention_dense(cache: &PagedKvCache, layer: usize, seqs: &[SeqMeta], q: &[f32], num_heads: usize) -> candle_core::Result<Vec<f32>> {
    use candle_core::{Device, Tensor, D};
    let hd = cache.head_dim;
    let nkv = cache.num_kv_heads;
    let qw = num_heads * hd;
    let mut out = vec![0f32; q.len()];
    for s in seqs {
        let ctx = s.start_pos + s.num_rows;
        let mut k = Vec::with_capacity(ctx * nkv * hd);
        let mut v = Vec::with_capacity(ctx * nkv * hd);
        for p in 0..ctx {
            let slot = cache.slot(&s.block_table, p);
            k.extend_from_slice(&cache.key_row(layer, slot));
            v.extend_from_slice(&cache.value_row(layer, slot));
        }
        let rep = num_heads / nkv;
        let expand = |t: Vec<f32>| -> candle_core::Result<Tensor> {
            let t = Tensor::from_vec(t, (1, ctx, nkv, hd), &Device::Cpu)?.transpose(1, 2)?.contiguous()?;
            Tensor::cat(&vec![&t; rep], 2)?.reshape((1, num_heads, ctx, hd))
        };
        let (k, v) = (expand(k)?, expand(v)?);
        let qs = &q[s.row_start * qw..(s.row_start + s.num_rows) * qw];
        let qt = Tensor::from_slice(qs, (1, s.num_rows, num_heads, hd), &Device::Cpu)?.transpose(1, 2)?.contiguous()?;
        let att = (qt.matmul(&k.t()?)? / (hd as f64).sqrt())?;
        let mask: Vec<f32> = (0..s.num_rows).flat_map(|r| (0..ctx).map(move |j| if j > s.start_pos + r { f32::NEG_INFINITY } else { 0.0 })).collect();
        let att = att.broadcast_add(&Tensor::from_vec(mask, (s.num_rows, ctx), &Device::Cpu)?)?;
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v.contiguous()?)?.transpose(1, 2)?.reshape((s.num_rows, qw))?;
        let y = y.flatten_all()?.to_vec1::<f32>()?;
        out[s.row_start * qw..(s.row_start + s.num_rows) * qw].copy_from_slice(&y);
        let _ = D::Minus1;
    }
    Ok(out)
}
