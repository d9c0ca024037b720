//! The scheduler as a plain state machine, driven by a fake executor that keeps its own paged
//! "KV cache" of token ids: it writes tokens through the block table and reads the whole
//! history back through it before "sampling", so a wrong block table changes the output.

use super::*;
use crate::executor::{Executor, SampledToken, SeqOutput, StepOutput};
use crate::request::{EngineEvent, FinishReason, PooledOutput, PoolingParams, SamplingParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

const VOCAB: u32 = 50;

fn next_token(history: &[u32]) -> u32 {
    let mut h: u64 = 1469598103934665603;
    for &t in history {
        h = (h ^ t as u64).wrapping_mul(1099511628211);
    }
    (h % VOCAB as u64) as u32
}

struct FakeExec {
    block_size: usize,
    slots: Vec<Option<u32>>,
}

impl Executor for FakeExec {
    fn execute(&mut self, batch: &Batch) -> Result<StepOutput, crate::ExecutorError> {
        let mut out = StepOutput::default();
        for s in &batch.seqs {
            for (i, &t) in s.tokens.iter().enumerate() {
                let pos = s.start_pos + i;
                let b = s.block_table[pos / self.block_size] as usize;
                self.slots[b * self.block_size + pos % self.block_size] = Some(t);
            }
            let mut o = SeqOutput::default();
            // Prompt logprob of the token after row r: a digest of the history up to r, read
            // back from the KV slots.
            for (i, &t) in s.prompt_targets.iter().enumerate() {
                let row = s.start_pos + s.prompt_targets_offset + i;
                let digest = (0..=row).fold(0u64, |h, p| {
                    let b = s.block_table[p / self.block_size] as usize;
                    h.wrapping_mul(31).wrapping_add(self.slots[b * self.block_size + p % self.block_size].expect("KV slot never written") as u64)
                });
                o.prompt_logprobs.push(crate::executor::TokenLogprob { token: t, logprob: -((digest % 1000) as f32), top: vec![] });
            }
            if s.sample {
                let end = s.start_pos + s.tokens.len();
                let hist: Vec<u32> = (0..end)
                    .map(|p| {
                        let b = s.block_table[p / self.block_size] as usize;
                        self.slots[b * self.block_size + p % self.block_size].expect("KV slot never written")
                    })
                    .collect();
                if s.params.pooling.is_some() {
                    // The "score" is a digest of the whole history as read back from the KV slots.
                    let digest = hist.iter().fold(0u64, |h, &t| h.wrapping_mul(31).wrapping_add(t as u64));
                    o.pooled = Some(PooledOutput { scores: vec![digest as f32], hidden: None });
                } else {
                    o.sampled = Some(SampledToken { token: next_token(&hist), logprob: 0.0, top: vec![] });
                }
            }
            out.seqs.push(o);
        }
        Ok(out)
    }
}

fn reference(prompt: &[u32], max_tokens: usize, eos: u32) -> (Vec<u32>, FinishReason) {
    let mut all = prompt.to_vec();
    let mut out = vec![];
    loop {
        let t = next_token(&all);
        all.push(t);
        out.push(t);
        if t == eos {
            return (out, FinishReason::Stop);
        }
        if out.len() >= max_tokens {
            return (out, FinishReason::Length);
        }
    }
}

fn cfg(num_blocks: usize, block_size: usize, budget: usize) -> SchedulerConfig {
    SchedulerConfig { max_num_seqs: 8, max_num_batched_tokens: budget, max_model_len: 4096, block_size, num_blocks, enable_prefix_caching: true, eos_token_ids: vec![7], ..Default::default() }
}

fn params(max_tokens: usize) -> SamplingParams {
    SamplingParams { max_tokens, temperature: 0.0, ..Default::default() }
}

/// Run one step and collect outputs/finishes.
fn step(s: &mut Scheduler, ex: &mut FakeExec, outs: &mut HashMap<u64, Vec<u32>>, fin: &mut HashMap<u64, FinishReason>) -> SchedulerOutput {
    let o = s.schedule();
    let batch = s.build_batch(&o);
    assert!(batch.num_tokens() <= s.config().max_num_batched_tokens);
    let res = ex.execute(&batch).unwrap();
    for (id, ev) in s.update(&o, res) {
        match ev {
            EngineEvent::Token(t) => outs.entry(id).or_default().push(t.token),
            EngineEvent::Finished { reason, .. } => {
                fin.insert(id, reason);
            }
            _ => {}
        }
    }
    s.check_invariants().unwrap();
    o
}

#[test]
fn chunked_prefill_respects_budget_and_matches_reference() {
    let (bs, nb) = (4, 64);
    let mut s = Scheduler::new(cfg(nb, bs, 8)).unwrap();
    let mut ex = FakeExec { block_size: bs, slots: vec![None; nb * bs] };
    let prompt: Vec<u32> = (0..30).map(|i| (i * 3 % 40 + 10) as u32).collect();
    s.add_request(Request::new(1, prompt.clone(), params(20))).unwrap();
    let (mut outs, mut fin) = (HashMap::new(), HashMap::new());
    let first = step(&mut s, &mut ex, &mut outs, &mut fin);
    assert_eq!(first.scheduled[0].num_new_tokens, 8, "prefill is chunked to the budget");
    while s.has_work() {
        step(&mut s, &mut ex, &mut outs, &mut fin);
    }
    let (want, reason) = reference(&prompt, 20, 7);
    assert_eq!(outs[&1], want);
    assert_eq!(fin[&1], reason);
    assert_eq!(s.kv().num_free_blocks(), nb);
}

#[test]
fn prefix_hits_are_reused() {
    let (bs, nb) = (4, 64);
    let mut s = Scheduler::new(cfg(nb, bs, 64)).unwrap();
    let mut ex = FakeExec { block_size: bs, slots: vec![None; nb * bs] };
    let prompt: Vec<u32> = (10..30).collect();
    let (mut outs, mut fin) = (HashMap::new(), HashMap::new());
    s.add_request(Request::new(1, prompt.clone(), params(3))).unwrap();
    while s.has_work() {
        step(&mut s, &mut ex, &mut outs, &mut fin);
    }
    let mut p2 = prompt.clone();
    p2.extend([40, 41]);
    s.add_request(Request::new(2, p2.clone(), params(3))).unwrap();
    let o = step(&mut s, &mut ex, &mut outs, &mut fin);
    assert_eq!(o.scheduled[0].start_pos, 20, "five full blocks come from the prefix cache");
    while s.has_work() {
        step(&mut s, &mut ex, &mut outs, &mut fin);
    }
    assert_eq!(outs[&2], reference(&p2, 3, 7).0);
    assert_eq!(s.kv().prefix_hit_tokens, 20);
}

#[test]
fn preemption_recomputes_to_the_same_output() {
    let (bs, nb) = (4, 12);
    let mut s = Scheduler::new(cfg(nb, bs, 64)).unwrap();
    let mut ex = FakeExec { block_size: bs, slots: vec![None; nb * bs] };
    let (mut outs, mut fin) = (HashMap::new(), HashMap::new());
    let prompts: Vec<Vec<u32>> = (0..4).map(|r| (0..9).map(|i| 10 + (r * 7 + i) % 30).collect()).collect();
    for (i, p) in prompts.iter().enumerate() {
        let mut pr = params(12);
        pr.ignore_eos = true;
        s.add_request(Request::new(i as u64, p.clone(), pr)).unwrap();
    }
    let mut preempted = 0;
    while s.has_work() {
        preempted += step(&mut s, &mut ex, &mut outs, &mut fin).preempted.len();
    }
    assert!(preempted > 0, "pool too large to force preemption");
    for (i, p) in prompts.iter().enumerate() {
        let mut all = p.clone();
        let mut want = vec![];
        for _ in 0..12 {
            let t = next_token(&all);
            all.push(t);
            want.push(t);
        }
        assert_eq!(outs[&(i as u64)], want, "request {i}");
    }
    assert_eq!(s.kv().num_free_blocks(), nb);
}

#[test]
fn request_larger_than_pool_is_rejected() {
    let mut s = Scheduler::new(cfg(2, 4, 64)).unwrap();
    assert!(s.add_request(Request::new(1, vec![1; 9], params(1))).is_err());
}

/// Seeded random operation sequences over a 2-token vocabulary (to force prefix sharing):
/// add, abort, step. After every operation the block pool invariants hold; at the end every
/// block is free and every request that was not aborted produced the reference output.
#[test]
fn random_operations_keep_invariants() {
    for seed in 0..300u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let bs = rng.random_range(1..5);
        let nb = rng.random_range(8..40);
        let budget = rng.random_range(1..24);
        let mut c = cfg(nb, bs, budget);
        c.max_num_seqs = rng.random_range(1..6);
        let mut s = Scheduler::new(c).unwrap();
        let mut ex = FakeExec { block_size: bs, slots: vec![None; nb * bs] };
        let (mut outs, mut fin) = (HashMap::new(), HashMap::new());
        let mut live: Vec<u64> = vec![];
        let mut prompts = HashMap::new();
        let mut aborted = std::collections::HashSet::new();
        let mut next_id = 0u64;
        for _ in 0..200 {
            match rng.random_range(0..10) {
                0..=2 => {
                    let len = rng.random_range(1..(bs * 4));
                    let prompt: Vec<u32> = (0..len).map(|_| rng.random_range(0..2)).collect();
                    let mt = rng.random_range(1..10);
                    if s.add_request(Request::new(next_id, prompt.clone(), params(mt))).is_ok() {
                        prompts.insert(next_id, (prompt, mt));
                        live.push(next_id);
                    }
                    next_id += 1;
                }
                3 if !live.is_empty() => {
                    let id = live.swap_remove(rng.random_range(0..live.len()));
                    if !fin.contains_key(&id) {
                        s.abort(id);
                        aborted.insert(id);
                    }
                }
                _ => {
                    step(&mut s, &mut ex, &mut outs, &mut fin);
                }
            }
            s.check_invariants().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
        let mut guard = 0;
        while s.has_work() {
            step(&mut s, &mut ex, &mut outs, &mut fin);
            guard += 1;
            assert!(guard < 10_000, "seed {seed}: no progress");
        }
        assert_eq!(s.kv().num_free_blocks(), nb, "seed {seed}: leaked blocks");
        assert_eq!(s.kv().num_requests(), 0);
        for (id, (prompt, mt)) in &prompts {
            if aborted.contains(id) {
                continue;
            }
            let (want, reason) = reference(prompt, *mt, 7);
            assert_eq!(outs.get(id), Some(&want), "seed {seed} request {id}");
            assert_eq!(fin[id], reason);
        }
    }
}

/// Pooling (scoring) requests: prefill only, one `Pooled` event then `Finished` with no
/// completion tokens; N requests sharing a conversation reuse its blocks (even when admitted in
/// the same step) and still see their whole own prompt; every block is freed at the end.
#[test]
fn pooling_requests_prefill_only_and_share_prefix() {
    let (bs, nb) = (4, 64);
    let mut s = Scheduler::new(cfg(nb, bs, 64)).unwrap();
    let mut ex = FakeExec { block_size: bs, slots: vec![None; nb * bs] };
    let conv: Vec<u32> = (0..21).map(|i| (i * 7 % 40 + 10) as u32).collect();
    let pool = SamplingParams { max_tokens: 0, pooling: Some(PoolingParams::default()), ..params(0) };
    let mut prompts = HashMap::new();
    for id in 1..=4u64 {
        let mut p = conv.clone();
        p.extend((0..id as u32 + 2).map(|i| 11 + i * id as u32 % 30));
        prompts.insert(id, p.clone());
        s.add_request(Request::new(id, p, pool.clone())).unwrap();
    }
    let mut pooled = HashMap::new();
    let mut fin = HashMap::new();
    while s.has_work() {
        let o = s.schedule();
        let batch = s.build_batch(&o);
        let res = ex.execute(&batch).unwrap();
        for (id, ev) in s.update(&o, res) {
            match ev {
                EngineEvent::Pooled(p) => assert!(pooled.insert(id, p.scores[0]).is_none(), "one Pooled event per request"),
                EngineEvent::Finished { reason, completion_tokens, .. } => {
                    assert!(pooled.contains_key(&id), "Pooled comes before Finished");
                    assert_eq!(completion_tokens, 0);
                    fin.insert(id, reason);
                }
                EngineEvent::Token(_) => panic!("a pooling request generated a token"),
                EngineEvent::PromptLogprobs { .. } => {}
            }
        }
        s.check_invariants().unwrap();
    }
    for (id, p) in &prompts {
        let digest = p.iter().fold(0u64, |h, &t| h.wrapping_mul(31).wrapping_add(t as u64));
        assert_eq!(pooled[id], digest as f32, "request {id} pooled over its own full prompt");
        assert_eq!(fin[id], FinishReason::Stop);
    }
    // Requests 2..4 found the conversation's 5 full blocks of 4 tokens in the cache.
    assert_eq!(s.kv().prefix_hit_tokens, 3 * 20);
    assert_eq!(s.kv().num_free_blocks(), nb);
}

/// Label scoring: prompt logprobs only from `prompt_logprobs_start` on, with the shared prompt
/// served from the prefix cache; the logprobs cover exactly the option positions and are those of
/// each request's own history.
#[test]
fn prompt_logprobs_from_a_start_position_use_the_prefix_cache() {
    let (bs, nb) = (4, 64);
    let mut s = Scheduler::new(cfg(nb, bs, 16)).unwrap();
    let mut ex = FakeExec { block_size: bs, slots: vec![None; nb * bs] };
    let shared: Vec<u32> = (0..21).map(|i| (i * 7 % 40 + 10) as u32).collect();
    let start = shared.len();
    let options: [Vec<u32>; 3] = [vec![11, 12, 13], vec![14, 15], vec![16]];
    let params = SamplingParams { max_tokens: 1, prompt_logprobs: Some(0), prompt_logprobs_start: start, ..params(1) };
    let mut got: HashMap<u64, Vec<(usize, f32)>> = HashMap::new();
    let run = |s: &mut Scheduler, ex: &mut FakeExec, got: &mut HashMap<u64, Vec<(usize, f32)>>| {
        while s.has_work() {
            let o = s.schedule();
            let batch = s.build_batch(&o);
            assert!(batch.num_tokens() <= 16);
            let res = ex.execute(&batch).unwrap();
            for (id, ev) in s.update(&o, res) {
                if let EngineEvent::PromptLogprobs { start, logprobs } = ev {
                    got.entry(id).or_default().extend(logprobs.iter().enumerate().map(|(i, l)| (start + i, l.logprob)));
                }
            }
            s.check_invariants().unwrap();
        }
    };
    for (i, opt) in options.iter().enumerate().take(2) {
        let mut p = shared.clone();
        p.extend(opt);
        s.add_request(Request::new(i as u64 + 1, p, params.clone())).unwrap();
    }
    run(&mut s, &mut ex, &mut got);
    let hits_before = s.kv().prefix_hit_tokens;
    let mut p = shared.clone();
    p.extend(&options[2]);
    s.add_request(Request::new(3, p, params.clone())).unwrap();
    run(&mut s, &mut ex, &mut got);
    // The third request found the shared prompt's 5 full blocks in the cache.
    assert_eq!(s.kv().prefix_hit_tokens - hits_before, 20);
    for (i, opt) in options.iter().enumerate() {
        let mut full = shared.clone();
        full.extend(opt);
        let want: Vec<(usize, f32)> = (start..full.len()).map(|pos| (pos, -((full[..pos].iter().fold(0u64, |h, &t| h.wrapping_mul(31).wrapping_add(t as u64)) % 1000) as f32))).collect();
        assert_eq!(got[&(i as u64 + 1)], want, "request {}", i + 1);
    }
    assert_eq!(s.kv().num_free_blocks(), nb);
}

/// Each sampling step tells the executor the index of the token it samples (the sampler keys its
/// random stream by seed and index), with or without the output tokens themselves.
#[test]
fn sampling_steps_carry_the_token_index() {
    let (bs, nb) = (4, 64);
    let mut s = Scheduler::new(cfg(nb, bs, 64)).unwrap();
    let mut ex = FakeExec { block_size: bs, slots: vec![None; nb * bs] };
    s.add_request(Request::new(1, vec![11, 12, 13], SamplingParams { max_tokens: 5, temperature: 1.0, ignore_eos: true, ..Default::default() })).unwrap();
    let mut seen = Vec::new();
    while s.has_work() {
        let o = s.schedule();
        let batch = s.build_batch(&o);
        for q in batch.seqs.iter().filter(|q| q.sample) {
            assert!(q.output_tokens.is_empty(), "no penalty, no constraint: the tokens are not copied");
            seen.push(q.num_output_tokens);
        }
        let res = ex.execute(&batch).unwrap();
        s.update(&o, res);
    }
    assert_eq!(seen, [0, 1, 2, 3, 4]);
}

/// Requests that run to `max_tokens` (so that slots and blocks stay taken as the test expects).
fn long_params(max_tokens: usize) -> SamplingParams {
    SamplingParams { ignore_eos: true, ..params(max_tokens) }
}

fn batch_params(max_tokens: usize) -> SamplingParams {
    SamplingParams { priority: crate::request::Priority::Batch, ..long_params(max_tokens) }
}

#[test]
fn interactive_requests_are_admitted_before_earlier_batch_requests_and_served_first() {
    let (bs, nb) = (4, 256);
    let mut c = cfg(nb, bs, 16);
    c.max_num_seqs = 2;
    let mut s = Scheduler::new(c).unwrap();
    let mut ex = FakeExec { block_size: bs, slots: vec![None; nb * bs] };
    let (mut outs, mut fin) = (HashMap::new(), HashMap::new());
    let p = |k: u32| (0..6).map(|i| 10 + (i * k) % 30).collect::<Vec<u32>>();
    for id in 1..=3 {
        s.add_request(Request::new(id, p(id as u32), batch_params(30))).unwrap();
    }
    s.add_request(Request::new(10, p(10), long_params(5))).unwrap();
    let o = step(&mut s, &mut ex, &mut outs, &mut fin);
    // The interactive request arrived last but is admitted first, alone: a step with an
    // interactive prompt carries no batch rows.
    assert_eq!(o.scheduled.iter().map(|x| x.id).collect::<Vec<_>>(), vec![10]);
    assert_eq!(s.num_waiting_batch(), 3);
    // The next step: one batch request fills the second slot.
    let o = step(&mut s, &mut ex, &mut outs, &mut fin);
    assert_eq!(o.scheduled.iter().map(|x| x.id).collect::<Vec<_>>(), vec![10, 1]);
    assert_eq!(s.num_waiting_batch(), 2);
    // A second interactive request while both slots are busy: the running batch request is
    // preempted at the next step to make room, and the interactive one runs.
    s.add_request(Request::new(11, p(11), long_params(5))).unwrap();
    let o = step(&mut s, &mut ex, &mut outs, &mut fin);
    assert_eq!(o.preempted, vec![1]);
    assert!(o.scheduled.iter().any(|x| x.id == 11) && o.scheduled.iter().all(|x| x.id != 1));
    while s.has_work() {
        step(&mut s, &mut ex, &mut outs, &mut fin);
    }
    // Every request, preempted or not, gives the reference output.
    for id in [1, 2, 3] {
        assert_eq!(outs[&id], reference(&p(id as u32), 30, u32::MAX).0, "batch request {id}");
    }
    for id in [10, 11] {
        assert_eq!(outs[&id], reference(&p(id as u32), 5, u32::MAX).0, "interactive request {id}");
    }
    assert_eq!(s.kv().num_free_blocks(), nb);
}

#[test]
fn batch_rows_get_the_budget_interactive_rows_leave_and_are_preempted_first() {
    // 12 blocks of 4 tokens: two long batch requests fill the pool; an interactive request then
    // takes blocks from the newest batch request, never the other way round.
    let (bs, nb) = (4, 12);
    let mut s = Scheduler::new(cfg(nb, bs, 8)).unwrap();
    let mut ex = FakeExec { block_size: bs, slots: vec![None; nb * bs] };
    let (mut outs, mut fin) = (HashMap::new(), HashMap::new());
    let long: Vec<u32> = (0..20).map(|i| 10 + i % 30).collect();
    let long2: Vec<u32> = (0..20).map(|i| 11 + i % 29).collect();
    s.add_request(Request::new(1, long.clone(), batch_params(4))).unwrap();
    s.add_request(Request::new(2, long2.clone(), batch_params(4))).unwrap();
    for _ in 0..5 {
        step(&mut s, &mut ex, &mut outs, &mut fin);
    }
    let short: Vec<u32> = (0..7).map(|i| 20 + i).collect();
    s.add_request(Request::new(3, short.clone(), long_params(6))).unwrap();
    // The pool is full of batch blocks: the next step preempts the newest batch request and
    // admits the interactive one at once.
    let o = step(&mut s, &mut ex, &mut outs, &mut fin);
    assert_eq!(o.preempted, vec![2]);
    assert!(o.scheduled.iter().any(|x| x.id == 3));
    while s.has_work() {
        let o = step(&mut s, &mut ex, &mut outs, &mut fin);
        assert!(!o.preempted.contains(&3), "the interactive request is never preempted for batch work");
        if s.request(3).is_some() {
            // Running: it is scheduled every step; batch rows share what it leaves, at most
            // batch_step_tokens.
            assert!(o.scheduled.first().is_some_and(|x| x.id == 3), "{o:?}");
            let batch: usize = o.scheduled.iter().filter(|x| x.id != 3).map(|x| x.num_new_tokens).sum();
            assert!(batch <= s.config().batch_step_tokens, "{o:?}");
        }
    }
    assert_eq!(outs[&3], reference(&short, 6, u32::MAX).0);
    assert_eq!(outs[&1], reference(&long, 4, u32::MAX).0);
    assert_eq!(outs[&2], reference(&long2, 4, u32::MAX).0);
    assert_eq!(s.kv().num_free_blocks(), nb);
}

#[test]
fn batch_rows_share_at_most_batch_step_tokens_while_interactive_work_exists() {
    let (bs, nb) = (4, 256);
    let mut c = cfg(nb, bs, 64);
    c.batch_step_tokens = 3;
    c.batch_idle_step_tokens = 5;
    let mut s = Scheduler::new(c).unwrap();
    let mut ex = FakeExec { block_size: bs, slots: vec![None; nb * bs] };
    let (mut outs, mut fin) = (HashMap::new(), HashMap::new());
    let p = |k: u32| (0..10).map(|i| 10 + (i * k) % 30).collect::<Vec<u32>>();
    for id in 1..=5 {
        s.add_request(Request::new(id, p(id as u32), batch_params(8))).unwrap();
    }
    // Alone, batch requests take the whole budget: all five prompts in one step.
    let o = step(&mut s, &mut ex, &mut outs, &mut fin);
    assert_eq!(o.scheduled.iter().map(|x| x.num_new_tokens).sum::<usize>(), 50);
    s.add_request(Request::new(9, p(9), long_params(6))).unwrap();
    let (mut steps_with_interactive, mut since, mut prefill_steps) = (0, None, 0);
    while s.has_work() {
        let interactive = s.request(9).is_some();
        let o = step(&mut s, &mut ex, &mut outs, &mut fin);
        let batch: usize = o.scheduled.iter().filter(|x| x.id != 9).map(|x| x.num_new_tokens).sum();
        if interactive {
            steps_with_interactive += 1;
            assert!(batch <= 3, "{batch} batch tokens beside an interactive request: {o:?}");
            if o.scheduled.iter().any(|x| x.id == 9 && x.start_pos < 10) {
                assert_eq!(batch, 0, "a step with the interactive prompt carries no batch rows: {o:?}");
                prefill_steps += 1;
            }
        } else {
            // Shortly after it, batch-only steps stay short.
            let n = since.get_or_insert(0);
            *n += 1;
            if *n <= super::INTERACTIVE_GRACE_STEPS {
                assert!(batch <= 5, "{batch} batch tokens {n} steps after an interactive request");
            }
        }
    }
    assert!(steps_with_interactive >= 6);
    assert_eq!(prefill_steps, 1, "the 10-token prompt is one step");
    // Long after the last interactive request, a batch request gets whole steps again.
    for _ in 0..super::INTERACTIVE_GRACE_STEPS {
        s.schedule();
    }
    s.add_request(Request::new(20, (0..40).map(|i| 10 + i % 30).collect(), batch_params(2))).unwrap();
    let o = step(&mut s, &mut ex, &mut outs, &mut fin);
    // The whole prompt in one step (past any prefix-cache hit), not 5-token chunks.
    assert_eq!(o.scheduled.len(), 1);
    assert_eq!(o.scheduled[0].start_pos + o.scheduled[0].num_new_tokens, 40);
    assert!(o.scheduled[0].num_new_tokens > 5);
    while s.has_work() {
        step(&mut s, &mut ex, &mut outs, &mut fin);
    }
    for id in 1..=5 {
        assert_eq!(outs[&id], reference(&p(id as u32), 8, u32::MAX).0, "batch request {id}");
    }
    assert_eq!(outs[&9], reference(&p(9), 6, u32::MAX).0);
    assert_eq!(s.kv().num_free_blocks(), nb);
}
