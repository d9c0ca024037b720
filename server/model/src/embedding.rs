//! Token embeddings. A Q8_0 GGUF table stays quantized (the default model's 49152 × 576 table is
//! 30 MiB instead of 113 MiB as f32); rows are dequantized on lookup with candle's arithmetic
//! (`d * q`, d from f16), so the values are identical to dequantizing the whole table.

use crate::error::ModelError;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

type Result<T> = std::result::Result<T, ModelError>;

/// Bytes of one Q8_0 block: f16 scale + 32 int8.
const Q8_0_BLOCK: usize = 34;

#[derive(Debug)]
pub(crate) enum Embedding {
    /// `[vocab, hidden]` f32.
    Dense(Tensor),
    /// Raw Q8_0 rows of `hidden / 32` blocks.
    Q8_0 { bytes: Vec<u8>, vocab: usize, hidden: usize },
}

impl Embedding {
    /// From a GGUF tensor `[vocab, hidden]`.
    pub(crate) fn from_qtensor(t: &QTensor) -> Result<Self> {
        let (vocab, hidden) = t.shape().dims2()?;
        if t.dtype() == GgmlDType::Q8_0 && hidden % 32 == 0 {
            let bytes = t.data()?.to_vec();
            if bytes.len() == vocab * hidden / 32 * Q8_0_BLOCK {
                return Ok(Self::Q8_0 { bytes, vocab, hidden });
            }
        }
        Ok(Self::Dense(t.dequantize(&Device::Cpu)?))
    }

    /// Rows for `ids`, `[ids.len(), hidden]` f32.
    pub(crate) fn lookup(&self, ids: &[u32]) -> Result<Tensor> {
        match self {
            Self::Dense(t) => Ok(t.index_select(&Tensor::from_slice(ids, ids.len(), &Device::Cpu)?, 0)?),
            Self::Q8_0 { bytes, vocab, hidden } => {
                let row_bytes = hidden / 32 * Q8_0_BLOCK;
                let mut out = Vec::with_capacity(ids.len() * hidden);
                for &id in ids {
                    let id = id as usize;
                    if id >= *vocab {
                        return Err(ModelError::Invalid(format!("token id {id} is outside the vocabulary ({vocab})")));
                    }
                    for b in bytes[id * row_bytes..(id + 1) * row_bytes].chunks_exact(Q8_0_BLOCK) {
                        let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                        out.extend(b[2..].iter().map(|&q| d * (q as i8) as f32));
                    }
                }
                Ok(Tensor::from_vec(out, (ids.len(), *hidden), &Device::Cpu)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_rows_equal_full_dequantization() {
        let (vocab, hidden) = (50, 64);
        let data: Vec<f32> = (0..vocab * hidden).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let t = Tensor::from_vec(data, (vocab, hidden), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
        let e = Embedding::from_qtensor(&q).unwrap();
        assert!(matches!(e, Embedding::Q8_0 { .. }));
        let full = q.dequantize(&Device::Cpu).unwrap();
        let ids = [3u32, 0, 49, 3];
        let want = full.index_select(&Tensor::new(&ids, &Device::Cpu).unwrap(), 0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = e.lookup(&ids).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got, want);
        assert!(e.lookup(&[50]).is_err());
    }
}
