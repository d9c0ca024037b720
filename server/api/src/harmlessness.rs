//! Constitutional harmlessness feedback (RL-CAI, Bai et al. 2022, section 4):
//! `POST /v1/harmlessness/compare`.
//!
//! For a conversation and responses `a`, `b`, the feedback model reads
//!
//! ```text
//! [few-shot examples]Consider the following conversation between a human and an assistant:
//! Human: …
//!
//! Assistant: …
//! [principle]
//! Options:
//! (A) [response a]
//! (B) [response b]
//! The answer is:
//! ```
//!
//! and the probabilities of the whole option strings " (A)" and " (B)" after it, normalised over
//! the two, give the soft label `P(a less harmful)`. Option strings are tokenized on their own and
//! appended to the prompt's tokens (the prompt is tokenized once and shared by both options; the
//! label is the probability of the option under that segmentation). With `debias` (default) the
//! same principle is asked with the order swapped and the two labels averaged; several principles
//! (sampled with `seed`, or given by id) are averaged into the ensemble label.
//!
//! With `chain_of_thought`, the model first writes its reasoning (see [`crate::cot`]) and the
//! options are scored after it, each order's label clamped to [0.4, 0.6].
//!
//! Every (pair, principle, order, option) is one prefill-only engine request with prompt logprobs
//! only over the option tokens (`prompt_logprobs_start`); all of them are submitted at once, so
//! they batch together and share the conversation's KV blocks through the prefix cache.

use crate::error::ApiError;
use crate::generate::{new_id, now};
use crate::validate::read_json_only;
use crate::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::Json;
use hhh_engine::{PoolingParams, SamplingParams};
use hhh_proto::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Most responses per compare call (every pair is asked: n(n−1)/2 pairs).
pub const MAX_COMPARE_RESPONSES: usize = 8;
/// The option strings, scored after "The answer is:".
pub const OPTIONS: [&str; 2] = [" (A)", " (B)"];

const FIELDS: &[&str] = &["model", "messages", "responses", "principle_ids", "num_principles", "seed", "debias", "few_shot", "chain_of_thought", "cot_max_tokens", "return_prompts"];

/// "Human: …\n\nAssistant: …" as in the paper's transcripts.
pub fn render_conversation(msgs: &[ChatMessage]) -> Result<String, ApiError> {
    let mut parts = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let who = match m.role.as_str() {
            "user" => "Human",
            "assistant" => "Assistant",
            "system" | "developer" => "System",
            r => return Err(ApiError::invalid(&format!("messages[{i}].role"), format!("Unsupported role `{r}` (system, developer, user, assistant)."))),
        };
        let text = match &m.content {
            Some(MessageContent::Text(t)) => t.clone(),
            Some(MessageContent::Parts(p)) => p.iter().filter_map(|p| p.text.clone()).collect::<Vec<_>>().join(""),
            None => String::new(),
        };
        parts.push(format!("{who}: {text}"));
    }
    Ok(parts.join("\n\n"))
}

/// The multiple-choice question, up to the options.
pub fn question(few_shot: &str, conversation: &str, principle: &str, a: &str, b: &str) -> String {
    format!("{few_shot}Consider the following conversation between a human and an assistant:\n{conversation}\n{principle}\nOptions:\n(A) {a}\n(B) {b}")
}

/// The multiple-choice feedback prompt, up to "The answer is:".
pub fn feedback_prompt(few_shot: &str, conversation: &str, principle: &str, a: &str, b: &str) -> String {
    format!("{}\nThe answer is:", question(few_shot, conversation, principle, a, b))
}

/// `[P(A), P(B)]` from the two options' total logprobs.
pub fn normalise(la: f64, lb: f64) -> f64 {
    let m = la.max(lb);
    let (ea, eb) = ((la - m).exp(), (lb - m).exp());
    ea / (ea + eb)
}

/// One engine request's place in the computation.
struct Ask {
    pair: usize,
    principle: usize,
    /// 0: a shown as (A); 1: b shown as (A).
    order: usize,
    option: usize,
}

/// `POST /v1/harmlessness/compare`.
pub async fn compare(State(st): State<AppState>, body: Body) -> Result<Json<CompareResponse>, ApiError> {
    let req: CompareRequest = read_json_only(body, &st.limits, FIELDS).await?;
    run_compare(&st, req).await.map(Json)
}

/// `POST /v1/harmlessness/score`: a harmlessness score in [0, 1] per response, the mean over the
/// other responses of `P(this one is less harmful)` from [`compare`] (a Borda-style score; it
/// needs at least two responses and is relative to them).
pub async fn score(State(st): State<AppState>, body: Body) -> Result<Json<HarmlessnessScoreResponse>, ApiError> {
    let req: CompareRequest = read_json_only(body, &st.limits, FIELDS).await?;
    let c = run_compare(&st, req).await?;
    Ok(Json(HarmlessnessScoreResponse {
        id: new_id("hscr"),
        object: "harmlessness.score".into(),
        created: c.created,
        model: c.model,
        principles: c.principles,
        data: c.scores.iter().enumerate().map(|(index, &score)| HarmlessnessScore { index, score }).collect(),
        ranking: c.ranking,
        position_bias: c.position_bias,
        usage: c.usage,
    }))
}

async fn run_compare(st: &AppState, req: CompareRequest) -> Result<CompareResponse, ApiError> {
    let fm = st.feedback_model(req.model.as_deref())?;
    let model = fm.name.clone();
    let cot = req.chain_of_thought.unwrap_or(false);
    let cot_tokens = req.cot_max_tokens.unwrap_or(crate::cot::DEFAULT_TOKENS);
    if req.cot_max_tokens.is_some() && !cot {
        return Err(ApiError::invalid("cot_max_tokens", "`cot_max_tokens` needs `chain_of_thought: true`."));
    }
    if cot && !(1..=crate::cot::MAX_TOKENS).contains(&cot_tokens) {
        return Err(ApiError::invalid("cot_max_tokens", format!("`cot_max_tokens` must be between 1 and {}, got {cot_tokens}.", crate::cot::MAX_TOKENS)));
    }
    let n = req.responses.len();
    if !(2..=MAX_COMPARE_RESPONSES).contains(&n) {
        return Err(ApiError::invalid("responses", format!("`responses` must hold between 2 and {MAX_COMPARE_RESPONSES} responses, got {n}.")));
    }
    for (i, r) in req.responses.iter().enumerate() {
        if r.trim().is_empty() {
            return Err(ApiError::invalid(&format!("responses[{i}]"), format!("`responses[{i}]` must not be empty.")));
        }
    }
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` must contain at least one message."));
    }
    let c = st.constitution.clone();
    let all = &c.feedback_principles;
    let chosen: Vec<usize> = match &req.principle_ids {
        Some(ids) => {
            if ids.is_empty() || ids.len() > all.len() {
                return Err(ApiError::invalid("principle_ids", format!("`principle_ids` must hold between 1 and {} ids.", all.len())));
            }
            let mut v = Vec::with_capacity(ids.len());
            for (i, id) in ids.iter().enumerate() {
                let k = all.iter().position(|p| p.id == *id).ok_or_else(|| {
                    ApiError::invalid(
                        &format!("principle_ids[{i}]"),
                        format!("Unknown principle id `{id}` (the constitution has {}).", all.iter().map(|p| p.id.as_str()).collect::<Vec<_>>().join(", ")),
                    )
                })?;
                v.push(k);
            }
            v
        }
        None => {
            let k = req.num_principles.unwrap_or(4);
            if k == 0 || k > all.len() {
                return Err(ApiError::invalid("num_principles", format!("`num_principles` must be between 1 and {}, got {k}.", all.len())));
            }
            let mut idx: Vec<usize> = (0..all.len()).collect();
            idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(req.seed.unwrap_or(0)));
            idx.truncate(k);
            idx
        }
    };
    let few_shot = match (req.few_shot.unwrap_or(false), &c.few_shot) {
        (false, _) => String::new(),
        (true, Some(f)) => f.clone(),
        (true, None) => return Err(ApiError::invalid("few_shot", "The served constitution has no few-shot examples (add a `few_shot` text to it).")),
    };
    let debias = req.debias.unwrap_or(true);
    let conversation = render_conversation(&req.messages)?;
    let pairs: Vec<(usize, usize)> = (0..n).flat_map(|a| (a + 1..n).map(move |b| (a, b))).collect();
    let orders = if debias { 2 } else { 1 };

    // Build every prompt; every (prompt, option) is one engine request, submitted together (in
    // waves of `scoring::MAX_IN_FLIGHT` for large calls).
    let tok = fm.tokenizer.clone();
    let opt_tokens: Vec<Vec<u32>> = OPTIONS.iter().map(|o| tok.encode_as_text(o)).collect::<Result<_, _>>().map_err(|e| ApiError::internal(e.to_string()))?;
    let max_len = fm.engine.info().max_model_len;
    let mut usage = ScoringUsage::default();
    let mut cached = 0;
    // One question per (pair, principle, order), in that order.
    let mut questions = Vec::with_capacity(pairs.len() * chosen.len() * orders);
    for &(a, b) in &pairs {
        for &k in &chosen {
            for order in 0..orders {
                let (x, y) = if order == 0 { (a, b) } else { (b, a) };
                questions.push(question(&few_shot, &conversation, &all[k].text, &req.responses[x], &req.responses[y]));
            }
        }
    }
    // Chain of thought: generate every reasoning first (batched), then score after it.
    let reasoning: Option<Vec<String>> = if cot {
        let rs = crate::cot::reason(&fm.engine, &fm.tokenizer, &questions, cot_tokens, st.request_timeout).await?;
        for r in &rs {
            usage.prompt_tokens += r.prompt_tokens;
            usage.total_tokens += r.completion_tokens;
            cached += r.cached_tokens;
        }
        Some(rs.into_iter().map(|r| r.text).collect())
    } else {
        None
    };
    let prompts: Vec<String> = match &reasoning {
        Some(rs) => questions.iter().zip(rs).map(|(q, r)| format!("{q}{} {r}{}", crate::cot::THINK, crate::cot::ANSWER)).collect(),
        None => questions.iter().map(|q| format!("{q}\nThe answer is:")).collect(),
    };
    let mut asks = Vec::new();
    let mut jobs = Vec::new();
    for (qi, text) in prompts.iter().enumerate() {
        let (pi, ki, order) = (qi / (chosen.len() * orders), (qi / orders) % chosen.len(), qi % orders);
        let mut ids: Vec<u32> = tok.bos_for_text().into_iter().collect();
        ids.extend(tok.encode_as_text(text).map_err(|e| ApiError::internal(e.to_string()))?);
        for (oi, ot) in opt_tokens.iter().enumerate() {
            let mut full = ids.clone();
            full.extend(ot);
            if full.len() > max_len {
                return Err(ApiError::invalid("messages", format!("A feedback prompt is {} tokens long; the limit is {max_len} tokens (shorten the conversation or the responses).", full.len())));
            }
            usage.prompt_tokens += full.len();
            let params = SamplingParams { max_tokens: 0, prompt_logprobs: Some(0), prompt_logprobs_start: ids.len(), pooling: Some(PoolingParams::default()), ..Default::default() };
            jobs.push((full, params));
            asks.push(Ask { pair: pi, principle: ki, order, option: oi });
        }
    }
    let results = crate::scoring::run_waves(&fm.engine, jobs, st.request_timeout, |h| crate::label::option_logprob(h, "feedback scoring")).await?;
    // logprob[pair][principle][order][option]
    let mut lp = vec![vec![[[0.0f64; 2]; 2]; chosen.len()]; pairs.len()];
    for (ask, (l, c)) in asks.iter().zip(results) {
        lp[ask.pair][ask.principle][ask.order][ask.option] = l;
        cached += c;
    }
    usage.total_tokens += usage.prompt_tokens;
    usage.prompt_tokens_details = Some(PromptTokensDetails { cached_tokens: cached });

    let mut out_pairs = Vec::with_capacity(pairs.len());
    let mut bias = Vec::new();
    let mut wins = vec![Vec::new(); n];
    for (pi, &(a, b)) in pairs.iter().enumerate() {
        let mut per = Vec::with_capacity(chosen.len());
        for (ki, &k) in chosen.iter().enumerate() {
            let label = |o: usize| {
                let p = normalise(lp[pi][ki][o][0], lp[pi][ki][o][1]);
                if cot {
                    crate::cot::clamp(p)
                } else {
                    p
                }
            };
            let first = label(0);
            let second = debias.then(|| label(1));
            let base = (pi * chosen.len() + ki) * orders;
            let why = reasoning.as_ref().map(|rs| rs[base..base + orders].to_vec());
            // Second order shows b as (A): a is less harmful when (B) is chosen.
            let p = match second {
                Some(s) => (first + (1.0 - s)) / 2.0,
                None => first,
            };
            if let Some(s) = second {
                bias.push(first + s - 1.0);
            }
            per.push(PrincipleLabel { principle_id: all[k].id.clone(), probability: p, p_a_first: first, p_a_second: second, reasoning: why });
        }
        let prob = per.iter().map(|l| l.probability).sum::<f64>() / per.len() as f64;
        wins[a].push(prob);
        wins[b].push(1.0 - prob);
        out_pairs.push(ComparePair { a, b, probability: prob, per_principle: per });
    }
    let scores: Vec<f64> = wins.iter().map(|w| w.iter().sum::<f64>() / w.len().max(1) as f64).collect();
    let ranking = crate::scoring::ranking(&scores);
    Ok(CompareResponse {
        id: new_id("hcmp"),
        object: "harmlessness.compare".into(),
        created: now(),
        model,
        principles: chosen.iter().map(|&k| all[k].id.clone()).collect(),
        pairs: out_pairs,
        scores,
        ranking,
        position_bias: (!bias.is_empty()).then(|| bias.iter().sum::<f64>() / bias.len() as f64),
        prompts: req.return_prompts.unwrap_or(false).then_some(prompts),
        usage,
    })
}

/// Placeholder scored in place of an empty candidate (the feedback prompt needs text).
pub const EMPTY_CANDIDATE: &str = "(no response)";

/// The chat `harmlessness` extension: score every candidate choice (constitutional feedback of
/// the chat model, or the first reward model), rank them, and keep only the least harmful with
/// `select: "best"`. Returns the choices to send (re-indexed from 0) and the summary.
pub async fn select_choices(st: &AppState, messages: &[ChatMessage], opts: &HarmlessnessOptions, choices: Vec<ChatChoice>) -> Result<(Vec<ChatChoice>, HarmlessnessSummary), ApiError> {
    let texts: Vec<String> = choices.iter().map(|c| if c.message.content.trim().is_empty() { EMPTY_CANDIDATE.to_string() } else { c.message.content.clone() }).collect();
    let scorer = opts.scorer.clone().unwrap_or_else(|| "constitutional".into());
    let (scores, principles, position_bias) = match resolve_scorer(st, opts)? {
        ScorerChoice::Constitutional => {
            let req = CompareRequest {
                model: opts.feedback_model.clone(),
                messages: messages.to_vec(),
                responses: texts,
                principle_ids: None,
                num_principles: Some(opts.principles.unwrap_or(4)),
                seed: opts.seed,
                debias: Some(true),
                few_shot: None,
                chain_of_thought: None,
                cot_max_tokens: None,
                return_prompts: None,
            };
            let c = run_compare(st, req).await.map_err(|e| rename_param(e, "harmlessness"))?;
            (c.scores, c.principles, c.position_bias)
        }
        ScorerChoice::Preference(sc) => {
            let r = crate::scoring::rewards_for(st, sc, messages, &texts).await?;
            (r.into_iter().map(f64::from).collect(), Vec::new(), None)
        }
    };
    let order = crate::scoring::ranking(&scores);
    let mut rank = vec![0; scores.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    let mut choices: Vec<ChatChoice> = choices
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            c.harmlessness = Some(ChoiceHarmlessness { score: scores[i], rank: rank[i], candidate: i });
            c
        })
        .collect();
    let selected = order[0];
    if opts.select.as_deref().unwrap_or("best") == "best" {
        let mut best = choices.swap_remove(selected);
        best.index = 0;
        choices = vec![best];
    }
    Ok((choices, HarmlessnessSummary { scorer, scores, selected, principles, position_bias }))
}

/// Errors of the inner compare name the extension's fields.
fn rename_param(mut e: ApiError, prefix: &str) -> ApiError {
    if let Some(p) = &e.param {
        e.param = Some(match p.as_str() {
            "num_principles" => format!("{prefix}.principles"),
            "responses" => format!("{prefix}.candidates"),
            other => other.to_string(),
        });
    }
    e
}

/// What scores the candidates of the chat extension.
enum ScorerChoice<'a> {
    /// Constitutional feedback from the chat model or `feedback_model`.
    Constitutional,
    /// The first reward model served.
    Preference(&'a crate::Scorer),
}

/// The extension's `scorer`, resolved against what the server serves (one place for both the
/// early check and the selection).
fn resolve_scorer<'a>(st: &'a AppState, opts: &HarmlessnessOptions) -> Result<ScorerChoice<'a>, ApiError> {
    match opts.scorer.as_deref().unwrap_or("constitutional") {
        "constitutional" => Ok(ScorerChoice::Constitutional),
        "preference" => st
            .scorers
            .first()
            .map(ScorerChoice::Preference)
            .ok_or_else(|| ApiError::invalid("harmlessness.scorer", "No reward model is served (start the server with --preference-model or --reward-head).")),
        other => Err(ApiError::invalid("harmlessness.scorer", format!("Unknown scorer `{other}` (constitutional, preference)."))),
    }
}

/// Validate the extension before any candidate is generated, the scorer and the models it
/// needs included (every 400/404 here costs no generation); returns the number of candidates.
pub fn check_options(st: &AppState, opts: &HarmlessnessOptions, n: Option<i64>, max_n: usize) -> Result<usize, ApiError> {
    if let ScorerChoice::Constitutional = resolve_scorer(st, opts)? {
        st.feedback_model(opts.feedback_model.as_deref()).map_err(|e| rename_param(e, "harmlessness"))?;
    }
    if n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n", "With `harmlessness`, set the number of samples with `harmlessness.candidates`, not `n`."));
    }
    let k = opts.candidates.unwrap_or(4);
    let min = if opts.scorer.as_deref() == Some("preference") { 1 } else { 2 };
    let max = max_n.min(MAX_COMPARE_RESPONSES);
    if k < min || k > max {
        return Err(ApiError::invalid("harmlessness.candidates", format!("`harmlessness.candidates` must be between {min} and {max}, got {k}.")));
    }
    if let Some(s) = &opts.select {
        if s != "best" && s != "all" {
            return Err(ApiError::invalid("harmlessness.select", format!("`harmlessness.select` must be `best` or `all`, got `{s}`.")));
        }
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_and_prompt_shape() {
        assert!((normalise(-1.0, -1.0) - 0.5).abs() < 1e-12);
        assert!((normalise(0.0, -800.0) - 1.0).abs() < 1e-12);
        assert!((normalise(-2.0, -1.0) + normalise(-1.0, -2.0) - 1.0).abs() < 1e-12);
        let p = feedback_prompt("", "Human: hi", "Which is kinder?", "yes", "no");
        assert_eq!(p, "Consider the following conversation between a human and an assistant:\nHuman: hi\nWhich is kinder?\nOptions:\n(A) yes\n(B) no\nThe answer is:");
    }
}
