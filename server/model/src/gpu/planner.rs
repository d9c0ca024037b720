//! The GPU memory planner: how many KV blocks fit after the weights and a worst-case step.
//! vLLM's rule: the pool gets `utilization × total − (total − free)`, where `free` is read
//! after the weights are loaded and one step at the maximum batch size has run (so its peak
//! activations, kept by the allocator's pool, count as used).

/// What the device reported after the profiling step, and what the operator asked for.
#[derive(Debug, Clone, Copy)]
pub struct MemoryBudget {
    /// Device memory, bytes.
    pub total: u64,
    /// Free after loading the weights and running the worst-case step, bytes.
    pub free: u64,
    /// `--gpu-memory-utilization`, in (0, 1].
    pub utilization: f64,
}

const GIB: f64 = (1u64 << 30) as f64;

/// Number of KV blocks for the pool. `block_bytes`: one block, all layers, K and V;
/// `max_model_len`, `block_size`: the pool must hold one sequence of `max_model_len` tokens;
/// `override_blocks`: `--num-kv-blocks`, taken as given (still checked against that minimum).
pub fn kv_blocks(b: MemoryBudget, block_bytes: u64, block_size: usize, max_model_len: usize, override_blocks: Option<usize>) -> Result<usize, String> {
    let min_blocks = max_model_len.div_ceil(block_size.max(1));
    let too_small = |blocks: usize, why: String| {
        format!("the KV pool of {blocks} blocks ({} tokens) cannot hold one sequence of --max-model-len {max_model_len} tokens ({min_blocks} blocks of {block_size}); {why}", blocks * block_size)
    };
    if let Some(n) = override_blocks {
        return if n >= min_blocks { Ok(n) } else { Err(too_small(n, "raise --num-kv-blocks or lower --max-model-len".into())) };
    }
    if !(b.utilization > 0.0 && b.utilization <= 1.0) {
        return Err(format!("--gpu-memory-utilization must be in (0, 1], got {}", b.utilization));
    }
    if block_bytes == 0 || b.free > b.total {
        return Err(format!("inconsistent memory figures: free {} of {} bytes, {block_bytes} bytes per block", b.free, b.total));
    }
    let used = (b.total - b.free) as f64;
    let budget = b.utilization * b.total as f64 - used;
    if budget < block_bytes as f64 {
        return Err(format!(
            "weights and the profiling step use {:.2} GiB of the device's {:.2} GiB; --gpu-memory-utilization {} allows {:.2} GiB, which leaves nothing for the KV cache: raise it, or serve a smaller model",
            used / GIB,
            b.total as f64 / GIB,
            b.utilization,
            b.utilization * b.total as f64 / GIB
        ));
    }
    let blocks = (budget / block_bytes as f64).floor() as usize;
    if blocks < min_blocks {
        return Err(too_small(blocks, "lower --max-model-len, raise --gpu-memory-utilization, or serve a smaller model".into()));
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    #[test]
    fn pool_gets_the_utilization_share_minus_what_is_used() {
        // 80 GiB card, 16 GiB of weights + 4 GiB of activations used, 0.9 → 72 − 20 = 52 GiB.
        let b = MemoryBudget { total: 80 * G, free: 60 * G, utilization: 0.9 };
        let block = 2 * 1024 * 1024; // 2 MiB per block
        assert_eq!(kv_blocks(b, block, 16, 8192, None).unwrap(), 52 * 512);
    }

    #[test]
    fn too_little_left_names_the_numbers() {
        // 75 GiB in use, 0.9 of 80 = 72 GiB allowed.
        let b = MemoryBudget { total: 80 * G, free: 5 * G, utilization: 0.9 };
        let e = kv_blocks(b, 1 << 20, 16, 4096, None).unwrap_err();
        assert!(e.contains("75.00 GiB") && e.contains("72.00 GiB") && e.contains("--gpu-memory-utilization"), "{e}");
    }

    #[test]
    fn a_pool_that_cannot_hold_one_sequence_is_refused() {
        let b = MemoryBudget { total: 80 * G, free: 11 * G, utilization: 0.9 }; // 72 - 69 = 3 GiB left
        let e = kv_blocks(b, 256 << 20, 16, 32768, None).unwrap_err(); // 12 blocks, 2048 needed
        assert!(e.contains("12 blocks (192 tokens)") && e.contains("32768"), "{e}");
        assert_eq!(kv_blocks(b, 256 << 20, 16, 192, None).unwrap(), 12);
        assert!(kv_blocks(b, 256 << 20, 16, 193, None).is_err());
    }

    #[test]
    fn override_and_bad_utilization() {
        let b = MemoryBudget { total: 80 * G, free: 1, utilization: 0.9 };
        assert_eq!(kv_blocks(b, 1 << 20, 16, 64, Some(100)).unwrap(), 100);
        assert!(kv_blocks(b, 1 << 20, 16, 64, Some(3)).unwrap_err().contains("--num-kv-blocks"));
        for u in [0.0, -0.5, 1.5, f64::NAN] {
            let b = MemoryBudget { total: 80 * G, free: 60 * G, utilization: u };
            assert!(kv_blocks(b, 1 << 20, 16, 64, None).unwrap_err().contains("(0, 1]"));
        }
    }
}
