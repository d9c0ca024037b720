//! Weight loaders for `/update_weights_from_disk` (CPU and GPU engines): new model weights and/or a new
//! reward head for one served model, checked here against what it serves (tokenizer, whether it
//! is a sequence-classification checkpoint, the head's label count); the engine's runner then
//! checks the architecture and the head's width before it swaps.

use candle_core::{DType, Device};
use hhh_api::{WeightLoader, WeightSource};
use hhh_model::gpu::GpuLlama;
use hhh_model::{LlamaModel, RewardHead, WeightUpdate};
use hhh_text::Tokenizer;
use std::path::Path;
use std::sync::Arc;

/// How a served model's weights are held: what a new copy is loaded as.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// The CPU engine's [`LlamaModel`] (GGUF or safetensors) and its arithmetic flags.
    Cpu { dense_attention: bool, prompt_f32: bool },
    /// The GPU engine's [`GpuLlama`] on `device` in `dtype`.
    Gpu { device: Device, dtype: DType },
}

/// The loader of a model served with tokenizer `served`; `seq_cls`: it is a
/// sequence-classification (or OpenRLHF reward) checkpoint whose new weights must bring their own
/// head; `num_labels`: its head's outputs, if it has a head.
pub(crate) fn loader(backend: Backend, served: Arc<Tokenizer>, seq_cls: bool, num_labels: Option<usize>) -> WeightLoader {
    Arc::new(move |src: &WeightSource| match &backend {
        Backend::Cpu { dense_attention, prompt_f32 } => {
            let load = |path: &Path| {
                let mut m = load_model(path, &served)?;
                m.dense_attention = *dense_attention;
                m.prompt_f32 = *prompt_f32;
                Ok(m)
            };
            prepare(src, load, seq_cls, num_labels)
        }
        Backend::Gpu { device, dtype } => {
            let load = |path: &Path| {
                check_tokenizer(path, &served)?;
                GpuLlama::load(path, device, *dtype).map_err(|e| format!("loading {} onto the device: {e}", path.display()))
            };
            prepare(src, load, seq_cls, num_labels)
        }
    })
}

/// The engine payload of `src`: the model loaded by `load`, and the head (the checkpoint's own
/// for a sequence-classification model, or a head file).
fn prepare<M: Send + 'static>(src: &WeightSource, load: impl Fn(&Path) -> Result<M, String>, seq_cls: bool, num_labels: Option<usize>) -> Result<hhh_engine::WeightPayload, (&'static str, String)> {
    {
        let mut update = WeightUpdate::<M>::default();
        if let Some(path) = &src.model_path {
            let field = "model_path";
            update.model = Some(load(path).map_err(|e| (field, e))?);
            let builtin = if path.is_dir() { RewardHead::from_hf_dir(path).map_err(|e| (field, e.to_string()))? } else { None };
            match (seq_cls, builtin) {
                (true, None) => return Err((field, format!("{} has no `score.weight` or `value_head.weight`: the served model is a reward model and needs its head", path.display()))),
                (true, Some(_)) if src.reward_head_path.is_some() => return Err(("reward_head_path", "the new checkpoint brings its own head: drop `reward_head_path`".into())),
                (true, Some(h)) => update.head = Some(h),
                (false, _) => {}
            }
        }
        if let Some(path) = &src.reward_head_path {
            let field = "reward_head_path";
            if seq_cls {
                return Err((field, "the served model is a sequence-classification checkpoint: its head comes with `model_path`".into()));
            }
            let Some(n) = num_labels else { return Err((field, "the served model has no reward head to replace (start it with --reward-head or --preference-head)".into())) };
            let h = RewardHead::from_file(path).map_err(|e| (field, e.to_string()))?;
            if h.num_labels != n {
                return Err((field, format!("{} has {} labels, the served head {n}", path.display(), h.num_labels)));
            }
            update.head = Some(h);
        }
        if let (Some(h), Some(n)) = (&update.head, num_labels) {
            if h.num_labels != n {
                return Err(("model_path", format!("the new head has {} labels, the served head {n}", h.num_labels)));
            }
        }
        Ok(Box::new(update) as hhh_engine::WeightPayload)
    }
}

/// New CPU weights at `path` (its tokenizer checked first).
fn load_model(path: &Path, served: &Tokenizer) -> Result<LlamaModel, String> {
    check_tokenizer(path, served)?;
    LlamaModel::load(path).map_err(|e| format!("loading {}: {e}", path.display()))
}

/// The tokenizer at `path` must equal the served one (vocabulary size and EOS ids).
fn check_tokenizer(path: &Path, served: &Tokenizer) -> Result<(), String> {
    if !path.exists() {
        return Err(format!("{} does not exist", path.display()));
    }
    let tok = Tokenizer::load(path).map_err(|e| format!("loading the tokenizer of {}: {e}", path.display()))?;
    if tok.vocab_size() != served.vocab_size() || tok.eos_token_ids() != served.eos_token_ids() {
        return Err(format!(
            "tokenizer mismatch: {} has a vocabulary of {} and EOS ids {:?}, the served model {} and {:?}",
            path.display(),
            tok.vocab_size(),
            tok.eos_token_ids(),
            served.vocab_size(),
            served.eos_token_ids()
        ));
    }
    Ok(())
}
