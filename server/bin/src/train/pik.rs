//! `hhh-server train-pik-head`: fit a P(IK) head (Kadavath et al. 2022, section 5) for the
//! served model, from questions whose correctness the server itself measures.
//!
//! 1. Generate arithmetic questions with a seed (`What is 47 + 8?`: sums, differences and
//!    products of one- to three-digit numbers, so that some are easy for the model and some are
//!    not), each with its exact answer.
//! 2. Load the model as `serve` does and sample `--samples` answers per question from
//!    [`hhh_api::honesty::answer_prompt`] (the prompt `/v1/pik` scores), temperature 0.7 by
//!    default (at 1 the default model answers almost nothing right), one line.
//!    An answer is correct when the last integer in it equals the reference; the question's
//!    target is the fraction of correct samples.
//! 3. The final hidden state of each question's prompt (a pooling request, as `/v1/pik`).
//! 4. Split by a seeded hash, fit a logistic head on soft targets ([`super::logistic`]), and
//!    report held-out calibration (Brier, ECE) and ranking (AUROC for "at least half correct")
//!    next to the base rate; write a reward-head file with one label and `prompt_format`.

use super::logistic::{auroc, brier, ece, fit, logits};
use super::{mix, sha256_of};
use crate::{load, warm_up, Loaded, ServeArgs};
use anyhow::Context;
use clap::Args;
use hhh_api::honesty::{answer_prompt, resolve_format};
use hhh_api::jobs::{pooled, run_waves, until_stop};
use hhh_engine::{PoolingParams, SamplingParams};
use hhh_model::RewardHead;
use hhh_proto::PromptFormat;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

/// Flags of `hhh-server train-pik-head`.
#[derive(Args, Debug, Clone)]
pub struct PikTrainArgs {
    /// Where to write the head file.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of generated questions.
    #[arg(long, default_value_t = 400)]
    pub questions: usize,
    /// Sampled answers per question.
    #[arg(long, default_value_t = 8)]
    pub samples: usize,
    /// Longest sampled answer, tokens.
    #[arg(long, default_value_t = 32)]
    pub answer_tokens: usize,
    /// Sampling temperature of the answers.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Prompt format (default: chat when the model has a template).
    #[arg(long, value_parser = ["text", "chat"])]
    pub format: Option<String>,
    #[arg(long, default_value_t = 0.25)]
    pub test_fraction: f64,
    /// Seed of the questions, the samples and the split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_delimiter = ',', default_value = "0.01,0.1,1,10")]
    pub l2: Vec<f64>,
    #[arg(long, default_value_t = 400)]
    pub iters: usize,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// A question and its exact answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub text: String,
    pub answer: i64,
}

/// `count` arithmetic questions from `seed`: a third each of sums, differences and products,
/// half the operands with one digit, the others up to three (products: two).
pub fn arithmetic(count: usize, seed: u64) -> Vec<Question> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let mut operand = |max_digits: u32| {
                // Half the operands have one digit, the rest up to `max_digits`.
                let d = if rng.random_bool(0.5) { 1 } else { rng.random_range(1..=max_digits) };
                let limit = 10i64.pow(d);
                rng.random_range(0..limit)
            };
            match i % 3 {
                0 => {
                    let (x, y) = (operand(3), operand(3));
                    Question { text: format!("What is {x} + {y}?"), answer: x + y }
                }
                1 => {
                    let (x, y) = (operand(3), operand(3));
                    Question { text: format!("What is {x} - {y}?"), answer: x - y }
                }
                _ => {
                    let (x, y) = (operand(2), operand(2));
                    Question { text: format!("What is {x} times {y}?"), answer: x * y }
                }
            }
        })
        .collect()
}

/// The last integer in an answer (commas between digits ignored, a leading minus kept).
pub fn last_integer(text: &str) -> Option<i64> {
    let cleaned: String = text.chars().enumerate().filter(|&(i, c)| !(c == ',' && i > 0)).map(|(_, c)| c).collect();
    let b = cleaned.as_bytes();
    let mut last = None;
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let neg = start > 0 && b[start - 1] == b'-' && (start < 2 || !b[start - 2].is_ascii_alphanumeric());
            if let Ok(v) = cleaned[start..i].parse::<i64>() {
                last = Some(if neg { -v } else { v });
            }
        } else {
            i += 1;
        }
    }
    last
}

/// Run the command; prints a markdown summary and writes the head file.
pub async fn run(a: PikTrainArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.questions >= 20 && a.samples >= 1, "need at least 20 questions and 1 sample each");
    let Loaded { state, engine, extra_engines } = load(&a.serve).await?;
    warm_up(&engine).await?;
    let fm = state.feedback_model(None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let requested = a.format.as_deref().map(|f| if f == "chat" { PromptFormat::Chat } else { PromptFormat::Text });
    let format = resolve_format(requested, &fm.template).map_err(|e| anyhow::anyhow!("{e}"))?;
    let qs = arithmetic(a.questions, a.seed);
    let prompts: Vec<_> = qs.iter().map(|q| answer_prompt(&fm.tokenizer, &fm.template, format, &q.text)).collect::<Result<_, _>>().map_err(|e| anyhow::anyhow!("{e}"))?;
    let bar = indicatif::ProgressBar::new(qs.len() as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{elapsed_precise} {wide_bar} {pos}/{len} questions {per_sec} eta {eta}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    let mut targets = Vec::with_capacity(qs.len());
    let mut example = Vec::new();
    for (ci, chunk) in prompts.chunks(8).enumerate() {
        let mut jobs = Vec::new();
        for (k, p) in chunk.iter().enumerate() {
            let qi = ci * 8 + k;
            for s in 0..a.samples {
                let seed = a.seed.wrapping_mul(1_000_003).wrapping_add((qi * a.samples + s) as u64);
                jobs.push((p.ids.clone(), SamplingParams { max_tokens: a.answer_tokens, temperature: a.temperature, seed, ..Default::default() }));
            }
        }
        let tok = fm.tokenizer.clone();
        let out = run_waves(&fm.engine, jobs, None, |h| until_stop(h, tok.clone(), vec!["\n".into()], "answer sampling")).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        for (k, answers) in out.chunks(a.samples).enumerate() {
            let q = &qs[ci * 8 + k];
            let right = answers.iter().filter(|g| last_integer(&g.text) == Some(q.answer)).count();
            if example.len() < 6 {
                example.push(serde_json::json!({"question": q.text, "reference": q.answer, "answer": answers[0].text.trim(), "fraction_correct": right as f64 / a.samples as f64}));
            }
            targets.push(right as f64 / a.samples as f64);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let jobs: Vec<_> = prompts.iter().map(|p| (p.ids.clone(), SamplingParams { max_tokens: 0, pooling: Some(PoolingParams { return_hidden: true }), ..Default::default() })).collect();
    let hidden: Vec<Vec<f32>> =
        run_waves(&fm.engine, jobs, None, pooled).await.map_err(|e| anyhow::anyhow!("{e}"))?.into_iter().map(|(p, _)| p.hidden.context("no hidden state returned")).collect::<anyhow::Result<_>>()?;
    engine.shutdown();
    for e in &extra_engines {
        e.shutdown();
    }
    let is_test: Vec<bool> = (0..qs.len()).map(|i| (mix(a.seed, i as u64) % 1_000_000) as f64 / 1e6 < a.test_fraction).collect();
    let pick = |test: bool| -> (Vec<Vec<f32>>, Vec<f64>) {
        let idx: Vec<usize> = (0..qs.len()).filter(|&i| is_test[i] == test).collect();
        (idx.iter().map(|&i| hidden[i].clone()).collect(), idx.iter().map(|&i| targets[i]).collect())
    };
    let ((xtr, ytr), (xte, yte)) = (pick(false), pick(true));
    anyhow::ensure!(xtr.len() >= 10 && !xte.is_empty(), "split too small: {} train, {} test", xtr.len(), xte.len());
    let (head, l2) = fit(&xtr, &ytr, &a.l2, 0.2, a.iters);
    let prob = |x: &[Vec<f32>]| -> Vec<f64> { logits(x, &head).into_iter().map(hhh_api::honesty::pik::sigmoid).collect() };
    let base = ytr.iter().sum::<f64>() / ytr.len() as f64;
    let report = |x: &[Vec<f32>], y: &[f64]| {
        let p = prob(x);
        let known: Vec<bool> = y.iter().map(|v| *v >= 0.5).collect();
        serde_json::json!({
            "questions": y.len(), "mean_target": y.iter().sum::<f64>() / y.len() as f64, "known_fraction": known.iter().filter(|k| **k).count() as f64 / y.len() as f64,
            "brier": brier(&p, y), "brier_base_rate": brier(&vec![base; y.len()], y), "ece_10_bins": ece(&p, y, 10), "auroc_known": auroc(&p, &known),
        })
    };
    let (train_r, test_r) = (report(&xtr, &ytr), report(&xte, &yte));
    let model_file = a.serve.model.clone();
    let meta = serde_json::json!({
        "description": "P(IK) head: logistic regression on the final hidden state (after the last norm) of the question's answer prompt, soft targets = fraction of the model's own sampled answers that were correct",
        "kind": "pik",
        "prompt_format": format,
        "base_model": {"file": model_file.file_name().map(|f| f.to_string_lossy().to_string()), "sha256": sha256_of(&model_file).ok()},
        "data": {"source": "generated arithmetic questions (sums and differences of 1-3 digit numbers, products of 1-2 digit numbers)", "questions": qs.len(), "samples_per_question": a.samples, "answer_tokens": a.answer_tokens, "temperature": a.temperature, "grading": "last integer in the answer equals the reference", "examples": example},
        "split": {"seed": a.seed, "test_fraction": a.test_fraction, "train": ytr.len(), "test": yte.len()},
        "fit": {"loss": "cross-entropy on soft targets", "l2": l2, "l2_grid": a.l2, "iters": a.iters},
        "results": {"base_rate": base, "train": train_r, "test": test_r},
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    });
    let out = RewardHead::new(head.weight.len(), head.weight, vec![head.bias], meta.clone())?;
    out.save(&a.out)?;
    println!("{}", serde_json::to_string_pretty(&meta["results"])?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grading_takes_the_last_integer() {
        assert_eq!(last_integer("3 + 4 = 7."), Some(7));
        assert_eq!(last_integer("The answer is 1,234"), Some(1234));
        assert_eq!(last_integer("It is -12"), Some(-12));
        assert_eq!(last_integer("10-3 is 7"), Some(7));
        assert_eq!(last_integer("seven"), None);
    }

    #[test]
    fn questions_are_seeded_and_correct() {
        let a = arithmetic(30, 5);
        assert_eq!(a, arithmetic(30, 5));
        assert_ne!(a, arithmetic(30, 6));
        for q in &a {
            let nums: Vec<i64> = q.text.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap_or(0)).collect();
            let want = if q.text.contains('+') {
                nums[0] + nums[1]
            } else if q.text.contains(" - ") {
                nums[0] - nums[1]
            } else {
                nums[0] * nums[1]
            };
            assert_eq!(q.answer, want, "{}", q.text);
        }
    }
}
