//! The parallel driver of the matmuls: which thread computes which output columns, and the
//! windows through which the kernels write them in place.

/// How [`run_panels`] cuts the output columns into parallel work.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tasks {
    /// Tasks of exactly this many columns (the last of a matrix may be narrower), one matrix
    /// each: for kernels with a fixed-size scratch panel.
    Fixed(usize),
    /// Runs of whole units of this many columns over all matrices' columns together, one
    /// contiguous region per thread taken from its front and stolen from its back
    /// ([`crate::pool::for_ranges`]): each thread streams through its part of the weights in
    /// long runs (the hardware prefetchers keep streaming), and the threads still finish
    /// within about a unit of each other. A run may span matrices (it runs one piece per
    /// matrix).
    Streams(usize),
}

/// The pieces of [`Tasks::Fixed`] tasks: `(matrix, j0, j1)`, one per task; matrices whose
/// input width differs from the first's get none.
fn fixed_pieces(shapes: &[(usize, usize)], cols: usize) -> Vec<(usize, usize, usize)> {
    let Some(&(_, k)) = shapes.first() else { return vec![] };
    let cols = cols.max(1);
    let mut pieces = Vec::new();
    for (i, &(n, _)) in shapes.iter().enumerate().filter(|(_, s)| s.1 == k) {
        for j0 in (0..n).step_by(cols) {
            pieces.push((i, j0, (j0 + cols).min(n)));
        }
    }
    pieces
}

/// The global columns `c0..c1` (the live matrices' columns end to end; `starts[i]` is matrix
/// `i`'s first global column, `None` for a matrix that is not live) as pieces `(matrix, j0,
/// j1)`, in order.
pub(super) fn split_columns(starts: &[Option<(usize, usize)>], c0: usize, c1: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    starts.iter().enumerate().filter_map(move |(i, s)| {
        let (start, n) = (*s)?;
        let (j0, j1) = (c0.max(start) - start, c1.min(start + n).saturating_sub(start));
        (j0 < j1).then_some((i, j0, j1))
    })
}

/// One piece's output, written in place: columns `j0..j1` (`width` of them) of rows
/// `0..rows` of a row-major matrix whose rows are `stride` apart. [`run_panels`] hands each
/// piece a window onto the final outputs (pieces cover disjoint columns, so windows never
/// overlap) instead of a scratch buffer to assemble afterwards: for the LM head at 16 rows that
/// was 3 MB zeroed and 3 MB copied per step on the engine thread while the helpers waited.
pub struct PanelOut<'a> {
    /// First element of row 0; row `r` is `ptr + r * stride .. + width`, valid for writes and
    /// borrowed exclusively by this window for `'a`, not necessarily initialized (invariant of
    /// the constructors).
    ptr: *mut f32,
    stride: usize,
    width: usize,
    rows: usize,
    _out: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: a window is an exclusive borrow of its elements (see `ptr`), like `&mut [f32]`.
unsafe impl Send for PanelOut<'_> {}

impl<'a> PanelOut<'a> {
    /// A window over a whole `[rows, width]` buffer. Panics if `buf` is shorter.
    pub fn new(buf: &'a mut [f32], rows: usize, width: usize) -> Self {
        assert!(buf.len() >= rows * width, "panel buffer of {} for {rows} x {width}", buf.len());
        Self { ptr: buf.as_mut_ptr(), stride: width, width, rows, _out: std::marker::PhantomData }
    }

    /// Writes `src` into row `r` from column `c` on. Panics if that is not inside the window.
    /// The window's memory may be uninitialized ([`run_panels`] does not zero its outputs), so
    /// it is only ever written, never read or borrowed as `&mut [f32]`.
    pub fn write(&mut self, r: usize, c: usize, src: &[f32]) {
        assert!(r < self.rows && c + src.len() <= self.width, "{} values at row {r}, column {c} of a {} x {} panel", src.len(), self.rows, self.width);
        let dst = self.ptr.wrapping_add(r * self.stride + c);
        // SAFETY: the elements lie inside the window (checked), which is valid for writes and
        // borrowed exclusively (invariant of `ptr`); `src` is a different allocation. A whole
        // 16-lane group (the interleaved kernels' usual write) is copied at a constant size:
        // inline moves instead of a call to `memcpy` (~1 % of a 16-client server profile).
        unsafe {
            if let Ok(group) = <&[f32; 16]>::try_from(src) {
                (dst as *mut [f32; 16]).write_unaligned(*group);
            } else {
                std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len());
            }
        }
    }
}

/// The shared driver of the matmuls: for matrices of shapes `(n, k)` (those whose `k` differs
/// from the first's get zeros) and `m` activation rows, runs `panel(i, j0, j1, out)` over
/// pieces that cover every column of every live matrix exactly once, cut as `tasks` says, in
/// one parallel loop, `out` being that piece's window onto matrix `i`'s `[m, n]` output
/// (columns `j0..j1`). The kernels' outputs do not depend on the column range, so results do
/// not depend on the cut or on which thread ran a piece.
///
/// # Safety
/// `panel` must write every element of the window it is given (the outputs are not zero-filled
/// first, and are returned as initialized).
pub(crate) unsafe fn run_panels<F>(shapes: &[(usize, usize)], m: usize, tasks: Tasks, panel: F) -> Vec<Vec<f32>>
where
    F: Fn(usize, usize, usize, &mut PanelOut) + Sync,
{
    // Outputs that pieces cover are not zero-filled first (at 16 rows the memset was ~2 % of a
    // step, serial on the caller): every column of a live matrix goes to exactly one piece, and
    // every kernel writes every element of its window (`QuantMatrix::dot_panel`'s contract).
    let live = |k: usize| shapes.first().is_some_and(|f| f.1 == k);
    let mut outs: Vec<Vec<f32>> = shapes.iter().map(|&(n, k)| if live(k) { Vec::with_capacity(m * n) } else { vec![0f32; m * n] }).collect();
    for o in outs.iter_mut() {
        crate::pool::poison(o.spare_capacity_mut());
    }
    /// Each output's first element.
    struct Bases(Vec<*mut f32>);
    // SAFETY: the pointers are only used to make windows onto disjoint columns (below).
    unsafe impl Sync for Bases {}
    impl Bases {
        fn of(&self, i: usize) -> *mut f32 {
            self.0[i]
        }
    }
    let bases = Bases(outs.iter_mut().map(|o| o.as_mut_ptr()).collect());
    let run = |i: usize, j0: usize, j1: usize| {
        let n = shapes[i].0;
        // SAFETY: `j0 < j1 <= n`, so every row's columns `j0..j1` lie inside `outs[i]` (`[m,
        // n]` capacity), which is neither moved nor touched otherwise until the loop below has
        // returned; each column is handed to exactly one piece (the callers of `run`), so the
        // windows are disjoint.
        let ptr = unsafe { bases.of(i).add(j0) };
        panel(i, j0, j1, &mut PanelOut { ptr, stride: n, width: j1 - j0, rows: m, _out: std::marker::PhantomData });
    };
    match tasks {
        Tasks::Fixed(cols) => {
            let pieces = fixed_pieces(shapes, cols);
            // Pieces are disjoint (tested) and `pool::run` gives each index to one task.
            crate::pool::run(pieces.len(), &|p| run(pieces[p].0, pieces[p].1, pieces[p].2));
        }
        Tasks::Streams(unit) => {
            let unit = unit.max(1);
            let mut total = 0;
            let starts: Vec<Option<(usize, usize)>> = shapes
                .iter()
                .map(|&(n, k)| {
                    live(k).then(|| {
                        total += n;
                        (total - n, n)
                    })
                })
                .collect();
            // `for_ranges` hands out every unit once, and `split_columns` turns disjoint
            // column ranges into disjoint pieces (tested).
            let units = total.div_ceil(unit);
            crate::pool::for_ranges(units, &|a, b| {
                for (i, j0, j1) in split_columns(&starts, a * unit, (b * unit).min(total)) {
                    run(i, j0, j1);
                }
            });
        }
    }
    for (o, &(n, k)) in outs.iter_mut().zip(shapes) {
        if live(k) {
            // SAFETY: every element was written by the loop above (see where `outs` is made;
            // a panic in a task is re-raised by the loop, before this); `m * n` is the capacity.
            unsafe { o.set_len(m * n) };
        }
    }
    outs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every column of every live matrix is in exactly one fixed piece, of the task width but
    /// at matrix ends.
    #[test]
    fn fixed_pieces_cover_every_column_once() {
        let shapes = [(960, 576), (100, 64), (3072, 576), (70, 576)];
        for cols in [1, 16, 48] {
            let p = fixed_pieces(&shapes, cols);
            for (i, &(n, k)) in shapes.iter().enumerate() {
                let mut seen = vec![0u8; n];
                for &(_, j0, j1) in p.iter().filter(|q| q.0 == i) {
                    assert!(j1 - j0 == cols || j1 == n, "{cols}: {j0}..{j1}");
                    seen[j0..j1].iter_mut().for_each(|s| *s += 1);
                }
                assert!(seen.iter().all(|&s| s == u8::from(k == 576)), "{cols} columns, matrix {i}");
            }
        }
    }

    /// Global column ranges that tile the live matrices' columns map to pieces that cover
    /// every column of every live matrix once, spanning matrix boundaries.
    #[test]
    fn split_columns_covers_every_column_once() {
        let starts = [Some((0, 960)), None, Some((960, 3072)), Some((4032, 70))];
        let total = 4102;
        for step in [1, 16, 100, 961, 5000] {
            let mut seen: Vec<Vec<u8>> = [960, 100, 3072, 70].iter().map(|&n| vec![0; n]).collect();
            for c0 in (0..total).step_by(step) {
                for (i, j0, j1) in split_columns(&starts, c0, (c0 + step).min(total)) {
                    assert!(j0 < j1, "{step}: empty piece");
                    seen[i][j0..j1].iter_mut().for_each(|s| *s += 1);
                }
            }
            for (i, s) in seen.iter().enumerate() {
                assert!(s.iter().all(|&c| c == u8::from(i != 1)), "step {step}, matrix {i}");
            }
        }
    }

    /// Both cuts give every output the same bits as the one-piece product, at several thread
    /// counts' worth of pieces, and leave a matrix of another width zero.
    #[test]
    fn cuts_give_the_same_outputs() {
        let shapes = [(100, 64), (7, 32), (37, 64)];
        let m = 3;
        let val = |i: usize, r: usize, j: usize| (i * 1000 + r * 100 + j) as f32;
        let panel = |i: usize, j0: usize, j1: usize, part: &mut PanelOut| {
            for r in 0..m {
                let row: Vec<f32> = (j0..j1).map(|j| val(i, r, j)).collect();
                part.write(r, 0, &row);
            }
        };
        for tasks in [Tasks::Fixed(16), Tasks::Fixed(1), Tasks::Streams(16), Tasks::Streams(1), Tasks::Streams(1000)] {
            // SAFETY: `panel` writes every element of its window.
            let outs = unsafe { run_panels(&shapes, m, tasks, panel) };
            for (i, (o, &(n, _))) in outs.iter().zip(&shapes).enumerate() {
                let want: Vec<f32> = (0..m * n).map(|e| if i == 1 { 0.0 } else { val(i, e / n, e % n) }).collect();
                assert_eq!(o, &want, "{tasks:?}, matrix {i}");
            }
        }
    }
}
