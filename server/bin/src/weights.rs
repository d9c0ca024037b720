//! Weight loaders for `/update_weights_from_disk` (CPU engine): new model weights and/or a new
//! reward head for one served model, checked here against what it serves (tokenizer, whether it
//! is a sequence-classification checkpoint, the head's label count); the engine's runner then
//! checks the architecture and the head's width before it swaps.

use crate::ServeArgs;
use hhh_api::{WeightLoader, WeightSource};
use hhh_model::{LlamaModel, RewardHead, WeightUpdate};
use hhh_text::Tokenizer;
use std::path::Path;
use std::sync::Arc;

/// The loader of a model served with tokenizer `served`; `seq_cls`: it is a
/// sequence-classification (or OpenRLHF reward) checkpoint whose new weights must bring their own
/// head; `num_labels`: its head's outputs, if it has a head.
pub(crate) fn loader(a: &ServeArgs, served: Arc<Tokenizer>, seq_cls: bool, num_labels: Option<usize>) -> WeightLoader {
    let (dense, prompt_f32) = (a.dense_attention, !a.prompt_int8);
    Arc::new(move |src: &WeightSource| {
        let mut update = WeightUpdate::default();
        if let Some(path) = &src.model_path {
            let field = "model_path";
            let mut m = load_model(path, &served).map_err(|e| (field, e))?;
            m.dense_attention = dense;
            m.prompt_f32 = prompt_f32;
            update.model = Some(m);
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
    })
}

/// New weights at `path`: its tokenizer must equal the served one (vocabulary size and EOS ids).
fn load_model(path: &Path, served: &Tokenizer) -> Result<LlamaModel, String> {
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
    LlamaModel::load(path).map_err(|e| format!("loading {}: {e}", path.display()))
}
