//! Host-side launch plan of the CUDA attention kernels for one step, a pure function of the
//! step's sequences (the same for every layer, so it is built and uploaded once per step).
//!
//! Rows of sequences that compute one token (decode, or a one-token chunk) go to the decode
//! kernel (`cuda/paged_attention.cu`, context split into [`PARTITION`]-token partitions); rows of
//! longer chunks go to the prefill kernel (`cuda/paged_prefill.cu`) in tiles of at most
//! [`PREFILL_TILE_ROWS`] rows of one sequence. Both write their rows of one output tensor, so a
//! mixed step needs no gather or scatter. Shared by the CUDA launchers and the SIMT-shim tests
//! (`kernels/simt`), which run the unmodified kernels on the CPU with these exact arrays.

use crate::paged::SeqMeta;

/// Context positions per thread block of the decode kernel (`PARTITION` in paged_attention.cu).
pub const PARTITION: usize = 512;
/// Query rows per thread block of the prefill kernel (`PF_M` in paged_prefill.cu).
pub const PREFILL_TILE_ROWS: usize = 16;
/// Threads per block of both attention kernels.
pub const ATTN_THREADS: u32 = 128;
/// Largest head dimension of the decode kernel (`MAX_HEAD_DIM`).
pub const DECODE_MAX_HEAD_DIM: usize = 256;
/// Head dimensions the prefill kernel is instantiated for.
pub const PREFILL_HEAD_DIMS: [usize; 2] = [64, 128];

/// The decode kernel's part of a step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodePlan {
    /// `[num_seqs, max_blocks]` block tables, rows padded with 0 (never read past the context).
    pub block_tables: Vec<i32>,
    /// Context length of each sequence (its query's position + 1).
    pub context_lens: Vec<i32>,
    /// Row of q/out of each sequence's query.
    pub rows: Vec<i32>,
    /// Partitions of the longest context: grid.z of the first pass.
    pub num_parts: usize,
}

impl DecodePlan {
    pub fn num_seqs(&self) -> usize {
        self.rows.len()
    }
}

/// The prefill kernel's part of a step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefillPlan {
    /// `[num_seqs, max_blocks]` block tables of the prefill sequences, padded with 0.
    pub block_tables: Vec<i32>,
    /// `[num_tiles, 4]`: sequence (row of `block_tables`), first row of q/out, rows (1..=16),
    /// position of the first row.
    pub tiles: Vec<i32>,
}

impl PrefillPlan {
    pub fn num_tiles(&self) -> usize {
        self.tiles.len() / 4
    }
}

/// Both kernels' parts of one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttnPlan {
    /// Columns of both block-table matrices (the longest table of the step, at least 1).
    pub max_blocks: usize,
    pub decode: DecodePlan,
    pub prefill: PrefillPlan,
}

/// Why a step cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// A sequence's block table does not cover its rows.
    ShortTable { seq: usize, needed: usize, have: usize },
    /// A number does not fit the kernels' 32-bit arguments.
    TooLarge(&'static str),
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanError::ShortTable { seq, needed, have } => write!(f, "sequence {seq}: block table has {have} blocks, {needed} needed"),
            PlanError::TooLarge(what) => write!(f, "{what} does not fit in 32 bits"),
        }
    }
}

impl std::error::Error for PlanError {}

fn i32_of(x: usize, what: &'static str) -> Result<i32, PlanError> {
    i32::try_from(x).map_err(|_| PlanError::TooLarge(what))
}

impl AttnPlan {
    /// Plan a step whose sequences are `seqs` (rows as in the flattened activations).
    pub fn build(seqs: &[SeqMeta], block_size: usize) -> Result<Self, PlanError> {
        let mut max_blocks = 1;
        for (i, s) in seqs.iter().enumerate() {
            let needed = (s.start_pos + s.num_rows).div_ceil(block_size.max(1));
            if s.block_table.len() < needed {
                return Err(PlanError::ShortTable { seq: i, needed, have: s.block_table.len() });
            }
            max_blocks = max_blocks.max(needed);
        }
        let table_row = |s: &SeqMeta| -> Result<Vec<i32>, PlanError> {
            let mut row: Vec<i32> = s.block_table.iter().take(max_blocks).map(|&b| i32_of(b as usize, "block id")).collect::<Result<_, _>>()?;
            row.resize(max_blocks, 0);
            Ok(row)
        };
        let mut plan = AttnPlan { max_blocks, ..Default::default() };
        for s in seqs.iter().filter(|s| s.num_rows > 0) {
            if s.num_rows == 1 {
                let d = &mut plan.decode;
                d.block_tables.extend(table_row(s)?);
                let ctx = s.start_pos + 1;
                d.context_lens.push(i32_of(ctx, "context length")?);
                d.rows.push(i32_of(s.row_start, "row")?);
                d.num_parts = d.num_parts.max(ctx.div_ceil(PARTITION));
            } else {
                let p = &mut plan.prefill;
                let seq = i32_of(p.block_tables.len() / max_blocks, "sequence")?;
                p.block_tables.extend(table_row(s)?);
                for r0 in (0..s.num_rows).step_by(PREFILL_TILE_ROWS) {
                    let rows = PREFILL_TILE_ROWS.min(s.num_rows - r0);
                    p.tiles.extend([seq, i32_of(s.row_start + r0, "row")?, rows as i32, i32_of(s.start_pos + r0, "position")?]);
                }
            }
        }
        Ok(plan)
    }

    /// Check what a kernel would otherwise read or write out of bounds: every block id below
    /// `num_blocks`, every row below `num_rows`. Launchers call this before every launch.
    pub fn check(&self, num_blocks: usize, num_rows: usize) -> Result<(), String> {
        let tables = self.decode.block_tables.iter().chain(&self.prefill.block_tables);
        if let Some(b) = tables.copied().find(|&b| b < 0 || b as usize >= num_blocks) {
            return Err(format!("block id {b} outside the pool of {num_blocks} blocks"));
        }
        let rows = self.decode.rows.iter().map(|&r| (r, 1)).chain(self.prefill.tiles.chunks(4).map(|t| (t[1], t[2])));
        for (r, n) in rows {
            if r < 0 || n < 1 || (r + n) as usize > num_rows {
                return Err(format!("rows {r}..{} outside the {num_rows} query rows", r + n));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(row_start: usize, num_rows: usize, start_pos: usize, table: &[u32]) -> SeqMeta {
        SeqMeta { row_start, num_rows, start_pos, block_table: table.to_vec() }
    }

    #[test]
    fn mixed_step_splits_rows_between_kernels() {
        // decode at position 600 (2 partitions), a 37-row chunk from position 5, a 1-row chunk.
        let seqs = [seq(0, 1, 600, &(0..38).collect::<Vec<_>>()), seq(1, 37, 5, &[7, 3, 9]), seq(38, 1, 0, &[4])];
        let p = AttnPlan::build(&seqs, 16).unwrap();
        assert_eq!(p.max_blocks, 38);
        assert_eq!(p.decode.rows, vec![0, 38]);
        assert_eq!(p.decode.context_lens, vec![601, 1]);
        assert_eq!(p.decode.num_parts, 2);
        assert_eq!(p.decode.block_tables.len(), 2 * 38);
        assert_eq!(&p.decode.block_tables[38..40], &[4, 0]);
        // 37 rows -> tiles of 16, 16, 5 at positions 5, 21, 37.
        assert_eq!(p.prefill.tiles, vec![0, 1, 16, 5, 0, 17, 16, 21, 0, 33, 5, 37]);
        assert_eq!(&p.prefill.block_tables[..4], &[7, 3, 9, 0]);
    }

    #[test]
    fn short_table_is_an_error() {
        let e = AttnPlan::build(&[seq(0, 20, 0, &[1])], 16).unwrap_err();
        assert_eq!(e, PlanError::ShortTable { seq: 0, needed: 2, have: 1 });
    }

    #[test]
    fn every_row_is_covered_exactly_once() {
        let mut x = 12345u64;
        let mut rnd = |n: usize| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) as usize % n
        };
        for _ in 0..200 {
            let mut seqs = Vec::new();
            let mut row = 0;
            for _ in 0..1 + rnd(6) {
                let n = 1 + rnd(40);
                let start = rnd(100);
                let blocks = (start + n).div_ceil(8);
                seqs.push(seq(row, n, start, &(0..blocks as u32).collect::<Vec<_>>()));
                row += n;
            }
            let p = AttnPlan::build(&seqs, 8).unwrap();
            let mut seen = vec![0; row];
            for &r in &p.decode.rows {
                seen[r as usize] += 1;
            }
            for t in p.prefill.tiles.chunks(4) {
                assert!((1..=PREFILL_TILE_ROWS as i32).contains(&t[2]));
                for r in t[1]..t[1] + t[2] {
                    seen[r as usize] += 1;
                }
            }
            assert!(seen.iter().all(|&c| c == 1));
        }
    }
}
