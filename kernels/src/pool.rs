//! A fork-join pool for the kernels' parallel loops whose helper threads spin between loops.
//!
//! A forward pass runs ~180 short parallel loops (6 per layer), a few tens of microseconds to a
//! few milliseconds each, with serial work between them. With rayon the idle worker goes to
//! sleep in between and each loop pays a futex wake-up (tens of microseconds on a VM) before
//! the second core joins: measured on the 2-core VM, a 16-sequence decode step ran only 1.25x
//! faster on 2 threads than on 1 while its matmuls alone ran 2x faster. Here helpers spin on
//! the job counter for a while ([`SPIN`]) before parking, like llama.cpp's thread pool, so the
//! next loop starts on all cores at once; tasks are claimed one at a time from a shared counter
//! (dynamic balance).
//!
//! One loop runs at a time: a call made while another is running (another engine in the same
//! process, or a loop inside a task) runs its tasks serially on the calling thread. Results
//! never depend on which thread runs a task.

mod hint;
pub use hint::{prefetch_hint, set_prefetch_hints};

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle helper spins before it parks.
const SPIN: Duration = Duration::from_millis(2);

/// A task function with its lifetime erased; only dereferenced while the loop that set it is
/// open (the caller does not return before every helper has left it).
#[derive(Clone, Copy)]
struct TaskFn(*const (dyn Fn(usize) + Sync));
// SAFETY: the pointee is `Sync`, and it outlives every use (see `run`).
unsafe impl Send for TaskFn {}

struct Pool {
    /// Odd while a loop is open; bumped to open and to close it.
    epoch: AtomicU64,
    /// The open loop's task function and number of tasks (written before the epoch turns odd).
    job: Mutex<Option<(TaskFn, usize)>>,
    /// Next task index to claim, tasks finished, helpers inside the loop.
    next: AtomicUsize,
    done: AtomicUsize,
    active: AtomicUsize,
    /// Whether a loop is running (callers that find one run serially).
    busy: AtomicBool,
    /// A task panicked on a helper (re-raised on the caller).
    panicked: AtomicBool,
    /// Parked helpers wait here for the epoch to change.
    parked: Mutex<usize>,
    wake: Condvar,
    helpers: usize,
}

static POOL: OnceLock<&'static Pool> = OnceLock::new();

/// The pool, created on first use with one helper fewer than the threads of the current rayon
/// pool (the server's `--threads`; the calling thread is the other one).
fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let helpers = rayon::current_num_threads().saturating_sub(1);
        let p: &'static Pool = Box::leak(Box::new(Pool {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            parked: Mutex::new(0),
            wake: Condvar::new(),
            helpers,
        }));
        for i in 0..helpers {
            let spawned = std::thread::Builder::new().name(format!("hhh-kernel-{i}")).spawn(move || helper(p, i));
            if spawned.is_err() {
                // Fewer helpers only means less parallelism: the caller runs what is left.
                break;
            }
        }
        p
    })
}

/// Threads a parallel loop runs on: the helpers and the calling thread.
pub fn threads() -> usize {
    pool().helpers + 1
}

/// Runs `f(0)`, …, `f(n - 1)`, each exactly once, on the calling thread and the pool's helpers;
/// returns when all have finished.
pub fn run(n: usize, f: &(dyn Fn(usize) + Sync)) {
    let p = pool();
    if n <= 1 || p.helpers == 0 || p.busy.compare_exchange(false, true, SeqCst, SeqCst).is_err() {
        (0..n).for_each(f);
        return;
    }
    // SAFETY: only the lifetime is erased; `f` is not used after this call returns (below).
    let erased: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(f as *const (dyn Fn(usize) + Sync)) };
    if let Ok(mut j) = p.job.lock() {
        *j = Some((TaskFn(erased), n));
    }
    p.next.store(0, SeqCst);
    p.done.store(0, SeqCst);
    p.epoch.fetch_add(1, SeqCst); // open
    if let Ok(parked) = p.parked.lock() {
        if *parked > 0 {
            p.wake.notify_all();
        }
    }
    let mut caller_panic = None;
    loop {
        let i = p.next.fetch_add(1, SeqCst);
        if i >= n {
            break;
        }
        // A panic must not leave the loop open while helpers may still call `f`.
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(i))) {
            caller_panic = Some(e);
        }
        p.done.fetch_add(1, SeqCst);
    }
    while p.done.load(SeqCst) < n {
        std::hint::spin_loop();
    }
    // Close, then wait for helpers that entered: a helper entering after this sees the closed
    // epoch and leaves without touching `f`.
    p.epoch.fetch_add(1, SeqCst);
    while p.active.load(SeqCst) > 0 {
        std::hint::spin_loop();
    }
    if let Ok(mut j) = p.job.lock() {
        *j = None;
    }
    let panicked = p.panicked.swap(false, SeqCst);
    p.busy.store(false, SeqCst);
    if let Some(e) = caller_panic {
        std::panic::resume_unwind(e);
    }
    if panicked {
        panic!("a kernel task panicked on a pool helper thread");
    }
}

/// `f(start, end)` on disjoint ranges that together cover `0..n` exactly once, in parallel
/// ([`run`]), each thread streaming through memory in order: `0..n` is cut into one contiguous
/// region per thread; a thread takes its region from the front, in chunks of a quarter of what
/// is left (long runs first, single items at the end), then takes a quarter of what is left of
/// another region from its back, until every region is empty. A region's front is handed out
/// in ascending order and its back in descending order; every range is contiguous.
///
/// For matmuls whose weights stream from memory, few long runs per thread matter. The guided
/// tasks this replaced (sizes 1/(2 · threads) of what was left, claimed in turn from one
/// counter, so each thread jumped over the other's runs: ~6 new streams per thread per loop)
/// were slower on a 2-core Zen 3 VM: the default model's 121 one-row matmuls of a step,
/// alternating the two in one process (~900 sweeps each, medians), took 4.36 and 4.18 ms
/// with guided tasks against 4.19 and 4.01 ms with these (Q/K/V 4.5 %, O 7–9 %, the head 2 %
/// longer); at 16 rows 2 % longer. Whole decode steps (`step_bench`, the two alternating
/// step by step in one process, 3 runs of 8 s): median step time 3–5 % lower at one row, 2–4 %
/// at 4 rows, 0.3–1.5 % at 16 rows.
pub fn for_ranges(n: usize, f: &(dyn Fn(usize, usize) + Sync)) {
    let threads = threads();
    if n == 0 {
        return;
    }
    if threads == 1 || u32::try_from(n).is_err() {
        return f(0, n);
    }
    let regions: Vec<Region> = (0..threads)
        .map(|t| {
            let (a, b) = region(t, threads, n);
            Region::new(a, b)
        })
        .collect();
    run(threads, &|t| {
        while let Some((a, b)) = regions[t].take(false) {
            f(a, b);
        }
        while let Some((a, b)) = (1..threads).find_map(|d| regions[(t + d) % threads].take(true)) {
            f(a, b);
        }
    });
}

/// Thread `t`'s region of `0..n` in [`for_ranges`] with `threads` threads: `(start, end)`.
/// Task `t` of the loop takes it; the caller claims the first task as it opens the loop, so
/// helper `i` usually gets region `i + 1` (what [`prefetch_hint`]s are cut by).
pub fn region(t: usize, threads: usize, n: usize) -> (usize, usize) {
    (t * n / threads.max(1), (t + 1) * n / threads.max(1))
}

/// What is left of one thread's region in [`for_ranges`]: `front` in the high 32 bits, `back`
/// (exclusive) in the low; empty when `front >= back`. Items are only ever removed, by a
/// compare-and-swap, so each is handed out once. Aligned to its own pair of cache lines (the
/// owner updates it for every chunk; a neighbour's updates must not evict it).
#[repr(align(128))]
struct Region(AtomicU64);

impl Region {
    /// `a..b`, both below 2^32.
    fn new(a: usize, b: usize) -> Self {
        Region(AtomicU64::new(((a as u64) << 32) | b as u64))
    }

    /// A quarter (rounded up) of the items left, from the front or from the `back`; `None`
    /// when empty.
    fn take(&self, back: bool) -> Option<(usize, usize)> {
        let mut v = self.0.load(SeqCst);
        loop {
            let (f, b) = (v >> 32, v & u64::from(u32::MAX));
            if f >= b {
                return None;
            }
            let c = (b - f).div_ceil(4);
            let (next, got) = if back { ((f << 32) | (b - c), (b - c, b)) } else { (((f + c) << 32) | b, (f, f + c)) };
            match self.0.compare_exchange(v, next, SeqCst, SeqCst) {
                Ok(_) => return Some((got.0 as usize, got.1 as usize)),
                Err(now) => v = now,
            }
        }
    }
}

/// `f(i, &mut items[i])` for every item, in parallel ([`run`]).
pub fn for_each_mut<T: Send>(items: &mut [T], f: impl Fn(usize, &mut T) + Sync) {
    struct Items<T>(*mut T);
    // SAFETY: each index is claimed by exactly one task, so the `&mut` below are disjoint.
    unsafe impl<T: Send> Sync for Items<T> {}
    let base = Items(items.as_mut_ptr());
    let base = &base;
    let n = items.len();
    run(n, &|i| {
        // SAFETY: `i < n` and no other task gets index `i` (see `run`).
        let item = unsafe { &mut *base.0.add(i) };
        f(i, item)
    });
}

/// `f(c, chunk)` for every chunk of `size` elements of `items` (the last one may be shorter;
/// chunk `c` starts at element `c * size`), in parallel ([`run`]).
pub fn for_each_chunk_mut<T: Send>(items: &mut [T], size: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let mut chunks: Vec<&mut [T]> = items.chunks_mut(size.max(1)).collect();
    for_each_mut(&mut chunks, |c, chunk| f(c, chunk));
}

/// A vector of `n` elements written in parallel, chunk by chunk, without zero-filling it first
/// (at 16 rows the zeroing of the step's outputs was ~4 % of the caller's time, serial, with
/// the helpers waiting): `f(c, chunk)` gets chunk `c` (elements `c * size ..`, the last one may
/// be shorter) as uninitialized memory. A panic in `f` is re-raised here and the vector is
/// dropped empty.
///
/// # Safety
/// `f` must initialize every element of every chunk it is given; the vector is returned as
/// initialized.
pub unsafe fn collect_chunks<T: Send>(n: usize, size: usize, f: impl Fn(usize, &mut [std::mem::MaybeUninit<T>]) + Sync) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    poison(&mut v.spare_capacity_mut()[..n]);
    for_each_chunk_mut(&mut v.spare_capacity_mut()[..n], size, f);
    // SAFETY: the loop gave every element to `f` in exactly one chunk, and `f` initialized
    // each (the caller's contract); `n <= capacity`.
    unsafe { v.set_len(n) };
    v
}

/// Debug builds (the tests) fill memory that is about to be handed out as written with a
/// pattern (all bits set: a NaN for floats), so that an element a kernel fails to write shows
/// up in the results instead of whatever the allocator left there; release builds do nothing.
pub(crate) fn poison<T>(mem: &mut [std::mem::MaybeUninit<T>]) {
    if cfg!(debug_assertions) {
        // SAFETY: writing bytes into `MaybeUninit` memory of this length is always valid.
        unsafe { std::ptr::write_bytes(mem.as_mut_ptr(), 0xFF, mem.len()) };
    }
}

fn helper(p: &'static Pool, index: usize) {
    let mut seen = 0u64;
    let mut hints = hint::HelperHints::new(index);
    loop {
        // Wait for an open loop this helper has not served: spin, then park.
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = p.epoch.load(SeqCst);
            if e != seen && e % 2 == 1 {
                seen = e;
                break;
            }
            // While waiting, fetch what the latest hint names for this helper.
            if hints.serve(|| p.epoch.load(SeqCst) == e) {
                continue;
            }
            spins += 1;
            if spins.is_multiple_of(1024) && start.elapsed() > SPIN {
                if let Ok(mut parked) = p.parked.lock() {
                    *parked += 1;
                    while p.epoch.load(SeqCst) == e {
                        parked = match p.wake.wait_timeout(parked, Duration::from_millis(100)) {
                            Ok((g, _)) => g,
                            Err(_) => return,
                        };
                    }
                    *parked -= 1;
                }
            }
            std::hint::spin_loop();
        }
        p.active.fetch_add(1, SeqCst);
        if p.epoch.load(SeqCst) == seen {
            let job = p.job.lock().ok().and_then(|j| *j);
            if let Some((TaskFn(f), n)) = job {
                loop {
                    let i = p.next.fetch_add(1, SeqCst);
                    if i >= n {
                        break;
                    }
                    // SAFETY: the loop is open (checked after entering `active`), so its caller
                    // has not returned and `f` is alive.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { (*f)(i) }));
                    if r.is_err() {
                        p.panicked.store(true, SeqCst);
                    }
                    p.done.fetch_add(1, SeqCst);
                }
            }
        }
        p.active.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every index runs exactly once, loops back to back (helpers spinning) and after a pause
    /// (helpers parked), nested loops run serially, and concurrent callers all complete.
    #[test]
    fn every_task_once_nested_and_concurrent() {
        for round in 0..200 {
            let n = 1 + round % 37;
            let mut hits = vec![0u32; n];
            for_each_mut(&mut hits, |_, h| *h += 1);
            assert!(hits.iter().all(|&h| h == 1), "round {round}: {hits:?}");
        }
        std::thread::sleep(SPIN * 3);
        let total = AtomicUsize::new(0);
        run(8, &|_| {
            run(5, &|_| {
                total.fetch_add(1, SeqCst);
            })
        });
        assert_eq!(total.load(SeqCst), 40);
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        run(16, &|i| {
                            total.fetch_add(i, SeqCst);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(SeqCst), 4 * 50 * (0..16).sum::<usize>());
    }

    /// The ranges cover `0..n` exactly once, each non-empty, for sizes around the thread
    /// count, with ranges slow enough that both threads take and steal, and nested inside
    /// another loop (serial).
    #[test]
    fn ranges_cover_every_item_once() {
        for n in [0, 1, 2, 3, 5, 8, 17, 100, 1000, 3072] {
            for slow in [false, true] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                for_ranges(n, &|a, b| {
                    assert!(a < b && b <= n, "range {a}..{b} of {n}");
                    if slow {
                        std::thread::sleep(Duration::from_micros(20));
                    }
                    hits[a..b].iter().for_each(|h| {
                        h.fetch_add(1, SeqCst);
                    });
                });
                assert!(hits.iter().all(|h| h.load(SeqCst) == 1), "n = {n}, slow = {slow}");
            }
        }
        let total = AtomicUsize::new(0);
        run(3, &|_| {
            for_ranges(50, &|a, b| {
                total.fetch_add(b - a, SeqCst);
            })
        });
        assert_eq!(total.load(SeqCst), 150);
    }

    /// A region hands out quarters of what is left from either end, disjoint, until empty.
    #[test]
    fn region_takes_quarters_from_both_ends() {
        let r = Region::new(10, 30);
        assert_eq!(r.take(false), Some((10, 15)));
        assert_eq!(r.take(true), Some((26, 30)));
        assert_eq!(r.take(false), Some((15, 18)));
        let mut seen: Vec<(usize, usize)> = std::iter::from_fn(|| r.take(true)).collect();
        seen.sort();
        assert_eq!(seen.first().map(|s| s.0), Some(18));
        assert!(seen.windows(2).all(|w| w[0].1 == w[1].0), "{seen:?}");
        assert_eq!(seen.last().map(|s| s.1), Some(26));
        assert_eq!(r.take(false), None);
    }
}
