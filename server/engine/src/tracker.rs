//! Per-request timing and admission bookkeeping on the engine thread.
//!
//! A request enters the tracker when the engine receives it. Until it is first scheduled it
//! holds a place in the admission queue (counted in [`EngineStats`], reserved by
//! [`crate::EngineClient::submit`]); the place is released exactly once, at first scheduling or
//! when the request ends before that. Timings go to the observer as [`RequestMilestone`]s.

use crate::engine_loop::EngineStats;
use crate::observe::{EngineObserver, RequestMilestone};
use crate::request::RequestId;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

struct Tracked {
    arrival: Instant,
    prompt_len: usize,
    /// Still holds its admission-queue place (never scheduled yet).
    queued: bool,
    first_scheduled: Option<Instant>,
    first_token: Option<Instant>,
}

/// See the module docs.
pub(crate) struct Tracker {
    map: HashMap<RequestId, Tracked>,
    stats: Arc<EngineStats>,
    observer: Arc<dyn EngineObserver>,
}

impl Tracker {
    pub(crate) fn new(stats: Arc<EngineStats>, observer: Arc<dyn EngineObserver>) -> Self {
        Self { map: HashMap::new(), stats, observer }
    }

    /// The engine received a request (its admission place was reserved by the client).
    pub(crate) fn added(&mut self, id: RequestId, prompt_len: usize) {
        self.map.insert(id, Tracked { arrival: Instant::now(), prompt_len, queued: true, first_scheduled: None, first_token: None });
    }

    fn release(stats: &EngineStats, t: &mut Tracked) {
        if t.queued {
            t.queued = false;
            stats.admission_requests.fetch_sub(1, Ordering::SeqCst);
            stats.admission_tokens.fetch_sub(t.prompt_len as u64, Ordering::SeqCst);
        }
    }

    /// The request was scheduled in this step.
    pub(crate) fn scheduled(&mut self, id: RequestId, now: Instant) {
        if let Some(t) = self.map.get_mut(&id) {
            if t.first_scheduled.is_none() {
                t.first_scheduled = Some(now);
                self.observer.milestone(RequestMilestone::Scheduled { queue_seconds: now.duration_since(t.arrival).as_secs_f64() });
                Self::release(&self.stats, t);
            }
        }
    }

    /// The request produced a token.
    pub(crate) fn token(&mut self, id: RequestId, now: Instant) {
        let mut first = None;
        if let Some(t) = self.map.get_mut(&id) {
            if t.first_token.is_none() {
                t.first_token = Some(now);
                let prefill = t.first_scheduled.map(|s| now.duration_since(s).as_secs_f64());
                first = Some((t.prompt_len, prefill));
            }
        }
        self.observer.milestone(RequestMilestone::Token { first });
    }

    /// The request ended (finished, aborted, failed or refused); `finished` observes its decode time.
    pub(crate) fn ended(&mut self, id: RequestId, finished: bool) {
        if let Some(mut t) = self.map.remove(&id) {
            Self::release(&self.stats, &mut t);
            if let (true, Some(f)) = (finished, t.first_token) {
                self.observer.milestone(RequestMilestone::Decoded { seconds: f.elapsed().as_secs_f64() });
            }
        }
    }

    /// Release every place (shutdown).
    pub(crate) fn clear(&mut self) {
        let ids: Vec<_> = self.map.keys().copied().collect();
        for id in ids {
            self.ended(id, false);
        }
    }
}
