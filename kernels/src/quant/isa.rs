//! Which instruction-set extensions the CPU kernels use. By default the widest the CPU has; an
//! operator can turn the AVX-512 paths off for A/B measurements (`serve --no-avx512`,
//! `--no-vnni512`). The choice is process-wide and made once: the kernels pick their path at
//! their first call and weights are laid out for it when a model loads, so [`limit`] must run
//! before the first model is loaded.

use std::sync::OnceLock;

/// Extensions to leave unused even where the CPU has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IsaLimits {
    /// The f32 path's 16-lane AVX-512F accumulators (8-lane AVX2 instead).
    pub no_avx512: bool,
    /// The interleaved AVX-512 VNNI Q4_1 kernel (the AVX2 kernels instead).
    pub no_vnni512: bool,
}

/// Fixed by the first [`limit`] call or the first kernel that reads it, whichever comes first.
static LIMITS: OnceLock<IsaLimits> = OnceLock::new();

/// Set the limits for this process. Setting the limits already in force is a no-op; any other
/// change after a kernel has chosen its path (or after an earlier, different call) is refused
/// with the limits in force, since it could not take effect.
pub fn limit(l: IsaLimits) -> Result<(), IsaLimits> {
    let current = *LIMITS.get_or_init(|| l);
    if current == l {
        return Ok(());
    }
    Err(current)
}

/// The limits in force (the default, no limit, unless [`limit`] ran first).
pub(crate) fn limits() -> IsaLimits {
    *LIMITS.get_or_init(IsaLimits::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_choice_holds() {
        // Whatever ran first in this process, asking for what is in force succeeds and asking
        // for anything else is refused with what is in force.
        let now = limits();
        assert_eq!(limit(now), Ok(()));
        let other = IsaLimits { no_avx512: !now.no_avx512, ..now };
        assert_eq!(limit(other), Err(now));
    }
}
