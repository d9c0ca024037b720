//! Prefetch hints: memory the next parallel loop will read, fetched by helpers that are idle.
//!
//! At one to a few rows a decode step is bound by memory bandwidth (its matmuls stream ~96 MB
//! of weights), yet between two matmuls the calling thread works alone (RoPE, the KV write,
//! norms, the attention's last task) while the helpers spin and the memory bus idles. A hint
//! names, per helper, the bytes that helper will read first in the next matmul; a waiting
//! helper prefetches them into its cache until the next loop opens, so that part of the next
//! matmul's traffic overlaps with the serial work. Prefetch instructions never fault and never
//! change a result: a stale or wrong hint costs bandwidth, never correctness.
//!
//! Measured with `step_bench` on the 2-core Zen 3 VM, hints on and off alternating step by
//! step in one process (medians of ~350 steps each), on/off: one row 0.97–1.01 in 7 runs
//! (median 0.985), four rows 0.99 in 2. At 16 rows (compute-bound) 0.995–1.009, and the model
//! does not hint there.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;

/// Bumped by every new hint.
static SEQ: AtomicU64 = AtomicU64::new(0);
/// The latest hint: helper `i`'s `(address, bytes)` ranges at index `i`, in fetch order.
static LISTS: Mutex<Vec<Vec<(usize, usize)>>> = Mutex::new(Vec::new());
/// Whether [`prefetch_hint`] takes hints (the benchmarks' off switch).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Bytes prefetched between two checks for an opened loop.
const CHECK_EVERY: usize = 1024;

/// Replaces the hint: helper `i` (of [`super::threads`]` - 1`) prefetches `per_helper[i]`
/// while it waits for the next loop. Cheap (one lock, no thread woken); a helper that is
/// parked does not act on it.
pub fn prefetch_hint(per_helper: Vec<Vec<(usize, usize)>>) {
    if !ENABLED.load(SeqCst) {
        return;
    }
    if let Ok(mut l) = LISTS.lock() {
        *l = per_helper;
        SEQ.fetch_add(1, SeqCst);
    }
}

/// Turns hints on or off (on by default; `step_bench`'s `HHH_NO_PREFETCH_HINTS=1` A/B switch).
pub fn set_prefetch_hints(on: bool) {
    ENABLED.store(on, SeqCst);
}

/// One helper's progress through the latest hint.
pub(super) struct HelperHints {
    /// The helper's index (its list in [`LISTS`]).
    index: usize,
    /// The hint whose ranges are in `ranges`, and whether they have all been fetched.
    seq: u64,
    done: bool,
    ranges: Vec<(usize, usize)>,
    /// Next range and byte offset in it.
    cursor: (usize, usize),
}

impl HelperHints {
    pub(super) fn new(index: usize) -> Self {
        Self { index, seq: 0, done: true, ranges: Vec::new(), cursor: (0, 0) }
    }

    /// Prefetches what is left of the latest hint while `idle()` holds (checked every
    /// [`CHECK_EVERY`] bytes); returns false when there was nothing left to fetch. A hint cut
    /// short by a loop is resumed at the next wait.
    pub(super) fn serve(&mut self, idle: impl Fn() -> bool) -> bool {
        let seq = SEQ.load(SeqCst);
        if seq != self.seq {
            self.ranges = LISTS.lock().ok().and_then(|l| l.get(self.index).cloned()).unwrap_or_default();
            (self.seq, self.done, self.cursor) = (seq, self.ranges.is_empty(), (0, 0));
        }
        if self.done {
            return false;
        }
        while let Some(&(addr, len)) = self.ranges.get(self.cursor.0) {
            while self.cursor.1 < len {
                if !idle() {
                    return true;
                }
                let end = (self.cursor.1 + CHECK_EVERY).min(len);
                while self.cursor.1 < end {
                    prefetch(addr.wrapping_add(self.cursor.1));
                    self.cursor.1 += 64;
                }
            }
            self.cursor = (self.cursor.0 + 1, 0);
        }
        self.done = true;
        true
    }
}

/// Asks for the cache line at `addr` (into L2 and up; a hint to the CPU, never a fault).
#[inline]
fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch instruction never faults and has no architectural effect, whatever
    // the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(addr as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A helper fetches its own list to the end, resumes a hint cut short, and takes a new hint
    /// from the start; an index without a list, or hints switched off, give nothing to do.
    #[test]
    fn hints_are_served_resumed_and_replaced() {
        let buf = vec![0u8; 8192];
        let a = buf.as_ptr() as usize;
        prefetch_hint(vec![vec![], vec![(a, 4096), (a + 4096, 4096)]]);
        let mut h = HelperHints::new(1);
        // Cut short at the first check: resumed where it stopped.
        assert!(h.serve(|| false));
        assert_eq!(h.cursor, (0, 0));
        let checks = std::cell::Cell::new(0);
        assert!(h.serve(|| {
            checks.set(checks.get() + 1);
            checks.get() <= 2
        }));
        assert_eq!(h.cursor, (0, 2048));
        assert!(h.serve(|| true));
        assert!(h.done && !h.serve(|| true));
        // Helper 0's list is empty and helper 2 has none: nothing to do.
        assert!(!HelperHints::new(0).serve(|| true));
        assert!(!HelperHints::new(2).serve(|| true));
        // A new hint starts from its beginning.
        prefetch_hint(vec![vec![], vec![(a, 64)]]);
        assert!(h.serve(|| true) && h.ranges == vec![(a, 64)]);
        set_prefetch_hints(false);
        let before = SEQ.load(SeqCst);
        prefetch_hint(vec![vec![(a, 64)]]);
        assert_eq!(SEQ.load(SeqCst), before);
        set_prefetch_hints(true);
    }
}
