//! hhh-engine: the continuous-batching core. Pure bookkeeping: no tensors, no HTTP.
//!
//! Data flow of one engine step (all on the engine thread, see [`engine_loop`]):
//!
//! ```text
//! EngineClient::submit ──Command::Add──▶ engine thread
//!     Scheduler::schedule()      token budget: running first, then waiting; preempt by recompute
//!        └─ KvCacheManager       prefix-cache lookup, block allocation (BlockPool: flat Vec + LRU free list)
//!     Executor::execute(&Batch)  the model runner (hhh-model) runs one mixed batch
//!     Scheduler::update()        append tokens, finish requests, free blocks
//!     EngineObserver             a StatsSnapshot per step (the metrics crate makes Prometheus series)
//!     EngineEvent ──────────────▶ RequestHandle (dropping the handle aborts the request)
//! ```

pub mod client;
pub mod constraint;
pub mod engine_loop;
pub mod error;
pub mod executor;
pub mod inspect;
pub mod kv_cache;
pub mod observe;
pub mod request;
pub mod scheduler;
mod tracker;

pub use client::EngineInfo;
pub use client::{Collected, EngineClient, RequestHandle};
pub use constraint::{Constraint, ConstraintState, TokenConstraint};
pub use engine_loop::{spawn_engine, EngineConfig, EngineStats};
pub use error::EngineError;
pub use executor::{Batch, BatchSeq, Executor, ExecutorError, KvGeometry, SampledToken, SeqOutput, StepOutput, TokenLogprob, WeightPayload};
pub use inspect::{InspectOutput, InspectRequest};
pub use observe::{EngineObserver, NoObserver, RequestMilestone, StatsSnapshot, StepStats};
pub use request::{EngineEvent, FinishReason, PooledOutput, PoolingParams, Priority, RequestId, SamplingParams, TokenId};
pub use scheduler::{Scheduler, SchedulerConfig};
