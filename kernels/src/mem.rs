//! Memory placement for the large, long-lived buffers every step streams through (the
//! weights, the KV cache).

/// Bytes of a transparent huge page (x86-64 and aarch64 with 4 KiB base pages).
const HUGE: usize = 2 << 20;

/// Whether huge pages are asked for: not with `HHH_NO_THP=1` (for A/B measurements).
#[cfg(target_os = "linux")]
fn enabled() -> bool {
    std::env::var_os("HHH_NO_THP").is_none_or(|x| x != "1")
}

/// The address range `(start, bytes)` of a slice, for [`collapse_huge_pages`].
pub fn range_of<T>(s: &[T]) -> (usize, usize) {
    (s.as_ptr() as usize, std::mem::size_of_val(s))
}

/// Asks for the whole 2 MiB pages inside `v`'s allocation to be faulted in as huge pages
/// (`madvise(MADV_HUGEPAGE)`): cheaper than [`collapse_huge_pages`] (no copy) for memory not
/// yet written; pages already written stay as they are. Same conditions as
/// [`collapse_huge_pages`].
pub fn advise_huge_pages<T>(v: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        if !enabled() {
            return;
        }
        let start = v.as_ptr() as usize;
        let end = start + v.capacity() * std::mem::size_of::<T>();
        let (a, b) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if b > a {
            // SAFETY: `a..b` lies inside the vector's allocation and is page-aligned; the
            // advice changes how pages are backed, never their contents; a refusal is harmless.
            unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// Moves the memory of `ranges` (address, bytes) onto transparent huge pages now
/// (`madvise(MADV_COLLAPSE)`, Linux 6.1+), each 2 MiB page that overlaps a range once, and
/// returns the bytes collapsed. A decode step streams every weight and walks the KV cache's
/// scattered blocks; on 4 KiB pages each of those pages takes its own TLB entry, and with THP
/// in `madvise` mode (the usual default) heap memory never gets huge pages by itself. Measured
/// on a 2-core Zen 3 VM (`step_bench`, with and without, 6 alternating pairs): one-row and
/// 16-row decode steps both 0.92x the time.
///
/// Contents never change (the kernel copies the pages); the 2 MiB pages at the ends of a
/// range may also hold neighbouring heap memory, which is harmless (those pages become
/// resident). A page the kernel refuses (THP `never`, no free huge page, a range that crosses
/// a mapping's end) stays as it was. A no-op elsewhere than Linux, and with `HHH_NO_THP=1`
/// (for A/B measurements).
pub fn collapse_huge_pages(ranges: &[(usize, usize)]) -> usize {
    #[cfg(target_os = "linux")]
    {
        if !enabled() {
            return 0;
        }
        let mut pages = std::collections::BTreeSet::new();
        for &(start, bytes) in ranges.iter().filter(|r| r.1 > 0) {
            let mut p = start / HUGE * HUGE;
            while p < start + bytes {
                pages.insert(p);
                p += HUGE;
            }
        }
        // The constant is in glibc's headers since 2.37; Linux has had the call since 6.1.
        const MADV_COLLAPSE: libc::c_int = 25;
        let mut done = 0;
        for p in pages {
            // SAFETY: collapsing changes how an existing mapping is backed, never what it
            // holds; an address that is not mapped (or not anonymous memory) makes the call
            // fail without effect.
            if unsafe { libc::madvise(p as *mut libc::c_void, HUGE, MADV_COLLAPSE) } == 0 {
                done += HUGE;
            }
        }
        done
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = ranges;
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collapsing (or advising) never changes what the memory holds, whether or not the kernel
    /// grants huge pages, and reports at most the 2 MiB pages the ranges overlap.
    #[test]
    fn contents_survive_and_counts_are_bounded() {
        let mut v: Vec<u32> = Vec::with_capacity(3 << 20);
        advise_huge_pages(&v);
        v.extend((0..3u32 << 20).map(|i| i.wrapping_mul(2654435761)));
        let small: Vec<u64> = (0..1000).collect();
        let (r, s) = (range_of(&v), range_of(&small));
        assert_eq!(r.1, (3 << 20) * 4);
        let done = collapse_huge_pages(&[r, s, (r.0, 0)]);
        // 12 MiB spans at most 7 pages of 2 MiB, the small vector at most 2 more.
        assert!(done <= 9 * HUGE, "{done}");
        assert!(v.iter().enumerate().all(|(i, &x)| x == (i as u32).wrapping_mul(2654435761)));
        assert!(small.iter().enumerate().all(|(i, &x)| x == i as u64));
    }
}
