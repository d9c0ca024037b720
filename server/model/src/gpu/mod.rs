//! The GPU path: the Llama-family model on a candle device (bf16/f16/f32) with our paged KV
//! cache and attention kernels, behind the same [`hhh_engine::Executor`] seam as the CPU engine.
//!
//! ```text
//! Batch ─▶ StepPlan (host: rows, logits rows, pooled rows)
//!       ─▶ StepMeta (host: slot mapping + AttnPlan; uploaded once per step on CUDA)
//!       ─▶ GpuLlama::forward_hidden (device only: cuBLAS GEMMs, candle's RMSNorm/RoPE/SiLU,
//!          our KvWrite and PagedAttention ops) ─▶ LM head on the wanted rows
//!       ─▶ logits / pooled rows to the host ─▶ StepPlan::finish (sampling, logprobs, heads)
//! ```
//!
//! Every custom op has a CPU twin, so the whole path also runs on candle's CPU backend
//! (`--device candle-cpu`): that is how CI checks it on machines without a GPU
//! (`tests/gpu_path.rs`), and where a GPU is lent `scripts/gpu-check.sh` runs it on CUDA.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod model;
pub mod ops;
pub mod planner;
pub mod profile;
pub mod runner;
pub mod step;

pub use model::GpuLlama;
pub use runner::GpuRunner;

use crate::error::{ModelError, Result};
use candle_core::{DType, Device};

/// Where a model runs (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU engine: our SIMD kernels, GGUF or safetensors (the default).
    Cpu,
    /// The GPU engine's code on candle's CPU backend (slow; for checking the GPU path).
    CandleCpu,
    /// The GPU engine on CUDA device N.
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "candle-cpu" => Ok(Self::CandleCpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(format!("unknown device `{s}` (expected cpu, cuda, cuda:N or candle-cpu)")),
            },
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::CandleCpu => write!(f, "candle-cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Whether the model runs through the GPU engine ([`GpuRunner`]).
    pub fn is_gpu_path(self) -> bool {
        !matches!(self, Self::Cpu)
    }

    /// The candle device; an error that says how to get CUDA when this binary has none.
    pub fn candle_device(self) -> Result<Device> {
        match self {
            Self::Cpu | Self::CandleCpu => Ok(Device::Cpu),
            #[cfg(feature = "cuda")]
            Self::Cuda(n) => Device::new_cuda(n).map_err(|e| ModelError::Invalid(format!("CUDA device {n}: {e}"))),
            #[cfg(not(feature = "cuda"))]
            Self::Cuda(_) => Err(ModelError::Invalid("this hhh-server was built without CUDA: build it with `--features cuda` (scripts/build-cuda.sh)".into())),
        }
    }
}

/// A `--dtype` value: `None` is `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtypeArg(pub Option<DType>);

impl std::str::FromStr for DtypeArg {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        parse_dtype(s).map(DtypeArg)
    }
}

/// Parse a `--dtype` value for the GPU path (`auto`: the checkpoint's bf16/f16, f32 stays f32
/// on candle's CPU backend and becomes bf16 on CUDA).
pub fn parse_dtype(s: &str) -> std::result::Result<Option<DType>, String> {
    match s {
        "auto" => Ok(None),
        "bf16" | "bfloat16" => Ok(Some(DType::BF16)),
        "f16" | "float16" | "half" => Ok(Some(DType::F16)),
        "f32" | "float32" => Ok(Some(DType::F32)),
        _ => Err(format!("unknown dtype `{s}` (expected auto, bf16, f16 or f32)")),
    }
}

/// Free and total device memory in bytes (CUDA), after synchronising the device.
pub fn device_memory(device: &Device) -> Result<Option<(u64, u64)>> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            device.synchronize()?;
            let (free, total) = cuda::mem_info(d)?;
            Ok(Some((free as u64, total as u64)))
        }
        _ => Ok(None),
    }
}
