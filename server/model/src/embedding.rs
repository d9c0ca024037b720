//! Token embeddings and the LM head. A Q8_0 GGUF table stays quantized (the default model's
//! 49152 × 576 table is 30 MiB instead of 113 MiB as f32) and, when the LM head is tied to it
//! (no `output.weight`), one copy serves both: rows are dequantized on lookup with candle's
//! arithmetic (`d * q`, d from f16), and the head runs the Q8_0 tile kernel of `hhh-kernels`
//! (bit-identical to candle's AVX2 Q8_0 matmul).

use crate::error::ModelError;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use hhh_kernels::quant::Q8_0Matrix;
use std::sync::Arc;

type Result<T> = std::result::Result<T, ModelError>;

/// A Q8_0 `[rows, width]` table from a GGUF tensor, if it is one.
fn q8_0(t: &QTensor) -> Result<Option<Arc<Q8_0Matrix>>> {
    let (n, k) = t.shape().dims2()?;
    if t.dtype() != GgmlDType::Q8_0 {
        return Ok(None);
    }
    // Interleaved for the VNNI kernel where the CPU has it (same bits, same rows).
    Ok(Q8_0Matrix::from_bytes(&t.data()?, n, k).map(|m| Arc::new(m.interleaved())))
}

#[derive(Debug)]
pub(crate) enum Embedding {
    /// `[vocab, hidden]` f32.
    Dense(Tensor),
    /// Q8_0 rows of `hidden / 32` blocks (possibly shared with the LM head).
    Q8_0(Arc<Q8_0Matrix>),
}

impl Embedding {
    /// From a GGUF tensor `[vocab, hidden]`.
    pub(crate) fn from_qtensor(t: &QTensor) -> Result<Self> {
        match q8_0(t)? {
            Some(m) => Ok(Self::Q8_0(m)),
            None => Ok(Self::Dense(t.dequantize(&Device::Cpu)?)),
        }
    }

    /// Rows for `ids`, `[ids.len(), hidden]` f32.
    pub(crate) fn lookup(&self, ids: &[u32]) -> Result<Tensor> {
        match self {
            Self::Dense(t) => Ok(t.index_select(&Tensor::from_slice(ids, ids.len(), &Device::Cpu)?, 0)?),
            Self::Q8_0(m) => {
                let mut out = Vec::with_capacity(ids.len() * m.k);
                for &id in ids {
                    if id as usize >= m.n {
                        return Err(ModelError::Invalid(format!("token id {id} is outside the vocabulary ({})", m.n)));
                    }
                    m.dequantize_row(id as usize, &mut out);
                }
                Ok(Tensor::from_vec(out, (ids.len(), m.k), &Device::Cpu)?)
            }
        }
    }
}

/// The LM head `[vocab, hidden]`.
#[derive(Debug)]
pub(crate) enum LmHead {
    /// Q8_0 through the tile kernel.
    Q8_0(Arc<Q8_0Matrix>),
    /// Anything else through candle.
    Candle(QMatMul),
}

impl LmHead {
    /// `output.weight`, or the embedding table when the head is tied (`tied` then reuses the
    /// embedding's Q8_0 copy instead of a second one).
    pub(crate) fn from_qtensor(t: QTensor, tied: Option<&Embedding>) -> Result<Self> {
        if let Some(Embedding::Q8_0(m)) = tied {
            return Ok(Self::Q8_0(m.clone()));
        }
        match q8_0(&t)? {
            Some(m) => Ok(Self::Q8_0(m)),
            None => Ok(Self::Candle(QMatMul::from_qtensor(t)?)),
        }
    }

    /// Logits `[rows, vocab]` for hidden states `[rows, hidden]`.
    pub(crate) fn forward(&self, h: &Tensor) -> Result<Tensor> {
        match self {
            Self::Candle(w) => Ok(w.forward(h)?),
            Self::Q8_0(_) => {
                let (logits, vocab) = self.forward_vec(h)?;
                Ok(Tensor::from_vec(logits, (h.dims2()?.0, vocab), h.device())?)
            }
        }
    }

    /// [`Self::forward`] as a flat row-major vector and the vocabulary size: the Q8_0 head's
    /// output as computed, without the copy out of a tensor (3 MB per 16-row step, on the
    /// engine thread).
    pub(crate) fn forward_vec(&self, h: &Tensor) -> Result<(Vec<f32>, usize)> {
        match self {
            Self::Candle(w) => {
                let l = w.forward(h)?;
                let vocab = l.dim(1)?;
                Ok((l.flatten_all()?.to_vec1::<f32>()?, vocab))
            }
            Self::Q8_0(m) => {
                let (rows, k) = h.dims2()?;
                if k != m.k {
                    return Err(ModelError::Invalid(format!("LM head: input width {k} != {}", m.k)));
                }
                let logits = crate::llama::with_f32_rows(h, |x| m.matmul(x, rows, true))?;
                Ok((logits, m.n))
            }
        }
    }
}

impl LmHead {
    /// The unembedding rows of `ids` (`[ids.len(), hidden]`, flat) and the mean row over the
    /// whole vocabulary (`hidden`), dequantized to f32 (mean accumulated in f64).
    pub(crate) fn rows_and_mean(&self, ids: &[u32]) -> Result<(Vec<f32>, Vec<f32>)> {
        match self {
            Self::Q8_0(m) => {
                let mut rows = Vec::with_capacity(ids.len() * m.k);
                for &id in ids {
                    if id as usize >= m.n {
                        return Err(ModelError::Invalid(format!("token id {id} is outside the vocabulary ({})", m.n)));
                    }
                    m.dequantize_row(id as usize, &mut rows);
                }
                let mut sum = vec![0f64; m.k];
                let mut row = Vec::with_capacity(m.k);
                for r in 0..m.n {
                    row.clear();
                    m.dequantize_row(r, &mut row);
                    sum.iter_mut().zip(&row).for_each(|(s, &x)| *s += x as f64);
                }
                Ok((rows, sum.iter().map(|s| (s / m.n as f64) as f32).collect()))
            }
            Self::Candle(w) => {
                let t = match w {
                    QMatMul::QTensor(q) => q.dequantize(&Device::Cpu)?,
                    QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.to_dtype(candle_core::DType::F32)?,
                };
                let (n, _) = t.dims2()?;
                if let Some(&bad) = ids.iter().find(|&&id| id as usize >= n) {
                    return Err(ModelError::Invalid(format!("token id {bad} is outside the vocabulary ({n})")));
                }
                let rows = t.index_select(&Tensor::from_slice(ids, ids.len(), &Device::Cpu)?, 0)?.flatten_all()?.to_vec1::<f32>()?;
                let mean = t.to_dtype(candle_core::DType::F64)?.mean(0)?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
                Ok((rows, mean))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_rows_and_tied_head_equal_candle() {
        let (vocab, hidden) = (50, 64);
        let data: Vec<f32> = (0..vocab * hidden).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let t = Tensor::from_vec(data, (vocab, hidden), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
        let e = Embedding::from_qtensor(&q).unwrap();
        assert!(matches!(e, Embedding::Q8_0(_)));
        let full = q.dequantize(&Device::Cpu).unwrap();
        let ids = [3u32, 0, 49, 3];
        let want = full.index_select(&Tensor::new(&ids, &Device::Cpu).unwrap(), 0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = e.lookup(&ids).unwrap();
        assert_eq!(got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
        assert!(e.lookup(&[50]).is_err());
        // The tied head over the looked-up rows equals candle's QMatMul (AVX2: bit for bit).
        let cand = QMatMul::from_qtensor(QTensor::quantize(&t, GgmlDType::Q8_0).unwrap()).unwrap().forward(&got).unwrap();
        let head = LmHead::from_qtensor(q, Some(&e)).unwrap();
        assert!(matches!(head, LmHead::Q8_0(_)));
        let ours = head.forward(&got).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let cand = cand.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (a, b) in ours.iter().zip(&cand) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}
