//! Admission control and engine metrics with a fake executor (no model): the admission queue
//! refuses past its limits, never overshoots under concurrent submitters, and is released
//! exactly once per request however it ends (finished, aborted while waiting, aborted while
//! running).

use hhh_engine::{spawn_engine, Batch, EngineConfig, EngineError, EngineEvent, Executor, ExecutorError, SamplingParams, SchedulerConfig, SeqOutput, StepOutput, TokenLogprob};
use hhh_metrics::Metrics;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

/// Emits token 7 for every sampling sequence, after a short sleep (so queues build up).
struct Slow(Duration);

impl Executor for Slow {
    fn execute(&mut self, batch: &Batch) -> Result<StepOutput, ExecutorError> {
        std::thread::sleep(self.0);
        Ok(StepOutput {
            seqs: batch.seqs.iter().map(|s| SeqOutput { sampled: s.sample.then(|| TokenLogprob { token: 7, logprob: 0.0, top: vec![] }), prompt_logprobs: vec![], pooled: None }).collect(),
        })
    }
}

fn engine(max_waiting_requests: usize, max_waiting_tokens: usize, metrics: Arc<Metrics>) -> hhh_engine::EngineClient {
    let cfg = EngineConfig {
        scheduler: SchedulerConfig {
            max_num_seqs: 1,
            max_num_batched_tokens: 64,
            max_model_len: 256,
            block_size: 4,
            num_blocks: 256,
            enable_prefix_caching: true,
            eos_token_ids: vec![],
            ..Default::default()
        },
        max_waiting_requests,
        max_waiting_tokens,
        observer: metrics,
    };
    spawn_engine(cfg, |_| Ok(Slow(Duration::from_millis(5)))).unwrap()
}

fn params(max_tokens: usize) -> SamplingParams {
    SamplingParams { temperature: 0.0, max_tokens, ignore_eos: true, ..Default::default() }
}

fn drain(h: &mut hhh_engine::RequestHandle) -> usize {
    let mut n = 0;
    while let Some(ev) = h.blocking_recv() {
        match ev {
            EngineEvent::Token(_) => n += 1,
            EngineEvent::Finished { .. } => return n,
            _ => {}
        }
    }
    panic!("engine stopped")
}

fn wait_released(e: &hhh_engine::EngineClient) {
    for _ in 0..2000 {
        let s = e.stats();
        if s.admission_requests.load(SeqCst) == 0 && s.admission_tokens.load(SeqCst) == 0 && s.num_requests_with_blocks.load(SeqCst) == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("admission places or blocks still held");
}

#[test]
fn admission_queue_refuses_past_limits_and_releases_every_place() {
    let m = Arc::new(Metrics::new());
    let e = engine(3, 1000, m.clone());
    // One long request occupies the single running slot; three more fill the queue.
    let mut running = e.submit(vec![1, 2, 3], params(200)).unwrap();
    while e.stats().admission_requests.load(SeqCst) != 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut queued: Vec<_> = (0..3).map(|_| e.submit(vec![1, 2], params(2)).unwrap()).collect();
    match e.submit(vec![1], params(2)) {
        Err(EngineError::Overloaded { limit: 3, .. }) => {}
        Err(other) => panic!("wrong error {other}"),
        Ok(_) => panic!("a fourth waiting request must be refused"),
    }
    // Abort one queued request (drop the handle) and one running: places come back.
    drop(queued.pop());
    while e.stats().admission_requests.load(SeqCst) != 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(std::mem::replace(&mut running, e.submit(vec![5], params(1)).unwrap()));
    for mut h in queued {
        assert_eq!(drain(&mut h), 2);
    }
    assert_eq!(drain(&mut running), 1);
    wait_released(&e);
    assert!(m.queue_time.get_sample_count() >= 4);
    assert!(m.generation_tokens.get() >= 5);
}

#[test]
fn token_limit_admits_an_oversized_prompt_only_into_an_empty_queue() {
    let e = engine(100, 10, Arc::new(Metrics::new()));
    let mut hold = e.submit(vec![1; 4], params(100)).unwrap();
    while e.stats().admission_requests.load(SeqCst) != 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut a = e.submit(vec![1; 8], params(1)).unwrap();
    assert!(matches!(e.submit(vec![1; 3], params(1)), Err(EngineError::Overloaded { limit: 10, .. })));
    let mut b = e.submit(vec![1; 2], params(1)).unwrap();
    drop(hold);
    assert_eq!(drain(&mut a) + drain(&mut b), 2);
    wait_released(&e);
    // Empty queue: a 50-token prompt is admitted despite the 10-token limit.
    hold = e.submit(vec![1; 50], params(1)).unwrap();
    assert_eq!(drain(&mut hold), 1);
    wait_released(&e);
}

#[test]
fn concurrent_submitters_never_overshoot() {
    let e = engine(5, 1_000_000, Arc::new(Metrics::new()));
    let _hold = e.submit(vec![1], params(250)).unwrap();
    while e.stats().admission_requests.load(SeqCst) != 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8).map(|_| s.spawn(|| (0..50).map(|_| e.submit(vec![1, 2], params(1))).collect::<Vec<_>>())).collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 5, "exactly the queue limit is admitted while nothing is scheduled");
    drop(results);
}

#[test]
fn collect_gathers_a_request_to_its_end() {
    let m = Arc::new(Metrics::new());
    let e = engine(10, 1000, m.clone());
    let c = e.submit(vec![1, 2, 3], params(4)).unwrap().blocking_collect();
    assert_eq!(c.tokens.iter().map(|t| t.token).collect::<Vec<_>>(), [7, 7, 7, 7]);
    assert_eq!((c.finish, c.prompt_tokens, c.error.is_none()), (Some(hhh_engine::FinishReason::Length), 3, true));
    assert!(c.result().is_ok());
    // The metrics crate saw the engine's reports: 4 generated tokens, 3 prompt tokens (recorded
    // before each event is sent), and the steps (published after the step's events, so waited for).
    assert_eq!((m.generation_tokens.get(), m.prompt_tokens.get()), (4, 3));
    wait_released(&e);
    for _ in 0..400 {
        if m.engine_steps.get() >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(m.engine_steps.get() >= 4, "{}", m.engine_steps.get());
}
