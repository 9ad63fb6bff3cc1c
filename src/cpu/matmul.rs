//! Quantized matrix products: `out[t][r] = dot(W[r], x[t])` for every
//! activation row `t` and weight row `r`.
//!
//! Activations are quantized once per input ([`QuantActs::prepare`]) and the
//! result is shared by every matrix that reads that input (Q, K and V; gate
//! and up). Work is split by weight rows across the pool, so each thread
//! streams its own slice of the weights once, whatever the number of
//! activation rows.

use super::pool::{SharedMut, ThreadPool};
use super::quant::{ActFormat, QType};
use super::{dot_fn_for, quantize_row, Isa};
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes that live either in a memory-mapped file or in our own allocation.
#[derive(Clone)]
pub enum Bytes {
    Mapped {
        map: Arc<memmap2::Mmap>,
        start: usize,
        len: usize,
    },
    Owned(Arc<AlignedBytes>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped { map, start, len } => &map[*start..*start + *len],
            Bytes::Owned(v) => v.as_bytes(),
        }
    }
}

/// A byte buffer aligned to 64 bytes, so f32 and f16 views of it are valid
/// and SIMD loads do not straddle cache lines needlessly.
#[derive(Clone, Default)]
pub struct AlignedBytes {
    words: Vec<Align64>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Align64([u8; 64]);

impl AlignedBytes {
    pub fn zeroed(len: usize) -> Self {
        Self {
            words: vec![Align64([0; 64]); len.div_ceil(64)],
            len,
        }
    }

    pub fn from_slice(b: &[u8]) -> Self {
        let mut s = Self::zeroed(b.len());
        s.as_bytes_mut().copy_from_slice(b);
        s
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialized bytes.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.len) }
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, self.len) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A weight matrix of `rows` x `cols` in GGML row-major block layout.
#[derive(Clone)]
pub struct Matrix {
    pub qtype: QType,
    pub rows: usize,
    pub cols: usize,
    pub data: Bytes,
}

impl Matrix {
    pub fn new(qtype: QType, rows: usize, cols: usize, data: Bytes) -> anyhow::Result<Self> {
        anyhow::ensure!(
            cols.is_multiple_of(qtype.block_elems()),
            "a {} matrix needs a multiple of {} columns, got {cols}",
            qtype.name(),
            qtype.block_elems()
        );
        let want = qtype.row_bytes(cols) * rows;
        anyhow::ensure!(
            data.len() == want,
            "a {rows}x{cols} {} matrix needs {want} bytes, got {}",
            qtype.name(),
            data.len()
        );
        Ok(Self {
            qtype,
            rows,
            cols,
            data,
        })
    }

    /// A matrix that owns a copy of f32 values.
    pub fn from_f32(rows: usize, cols: usize, values: &[f32]) -> anyhow::Result<Self> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::new(
            QType::F32,
            rows,
            cols,
            Bytes::Owned(Arc::new(AlignedBytes::from_slice(&bytes))),
        )
    }

    pub fn row_bytes(&self) -> usize {
        self.qtype.row_bytes(self.cols)
    }

    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    pub fn size_bytes(&self) -> usize {
        self.data.len()
    }

    /// Row `r` as f32 values (embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        super::quant::dequantize_row(self.qtype, self.row(r), &mut out[..self.cols]);
    }
}

/// One input of a matrix product, quantized into each format a weight type
/// asks for, at most once per format.
pub struct QuantActs {
    isa: Isa,
    rows: usize,
    cols: usize,
    bufs: [AlignedBytes; 3],
    ready: [bool; 3],
    max_bytes: [usize; 3],
    prompt_batch: bool,
    /// For two or more rows on VNNI: per Q8_0 block, the offset correction
    /// lanes (`tiles::q8_0_block_sums`) and the scale as f32, block-major
    /// (`scales[b * rows + t]`, eight spare at the end).
    block_sums: Option<(AlignedBytes, Vec<f32>)>,
    /// Whether `block_sums` holds the current input's.
    sums_ready: bool,
}

fn slot(fmt: ActFormat) -> usize {
    match fmt {
        ActFormat::F32 => 0,
        ActFormat::Q8_0 => 1,
        ActFormat::Q8K => 2,
    }
}

impl QuantActs {
    /// Buffers for up to `max_rows` rows of up to `max_cols` columns.
    pub fn new(isa: Isa, max_rows: usize, max_cols: usize) -> Self {
        let max_cols = max_cols.next_multiple_of(super::quant::QK_K);
        let max_bytes = [
            ActFormat::F32.row_bytes(max_cols) * max_rows,
            ActFormat::Q8_0.row_bytes(max_cols) * max_rows,
            ActFormat::Q8K.row_bytes(max_cols) * max_rows,
        ];
        Self {
            isa,
            rows: 0,
            cols: 0,
            // Grown on first use, so formats the model never reads cost nothing.
            bufs: Default::default(),
            ready: [false; 3],
            max_bytes,
            prompt_batch: true,
            block_sums: None,
            sums_ready: false,
        }
    }

    /// Takes `x` (`rows` x `cols` f32, row-major) as the current input and
    /// quantizes it for every format in `formats`.
    pub fn prepare(
        &mut self,
        pool: &ThreadPool,
        x: &[f32],
        rows: usize,
        cols: usize,
        formats: &[ActFormat],
    ) {
        assert!(x.len() >= rows * cols);
        self.rows = rows;
        self.cols = cols;
        self.ready = [false; 3];
        for &fmt in formats {
            let s = slot(fmt);
            if self.ready[s] {
                continue;
            }
            let rb = fmt.row_bytes(cols);
            let need = rb * rows;
            assert!(
                need <= self.max_bytes[s],
                "activation buffer too small: {rows} x {cols}"
            );
            if self.bufs[s].len() < need {
                self.bufs[s] = AlignedBytes::zeroed(self.max_bytes[s]);
            }
            let isa = self.isa;
            let out = SharedMut::new(self.bufs[s].as_bytes_mut());
            pool.for_ranges(rows, 1, |range| {
                for t in range {
                    // SAFETY: each row index is visited by exactly one share.
                    let o = unsafe { out.slice(t * rb, rb) };
                    quantize_row(isa, fmt, &x[t * cols..(t + 1) * cols], o);
                }
            });
            self.ready[s] = true;
        }
        self.prepare_block_sums(pool);
    }

    /// Fills `block_sums` when the offset-type tiles may read them.
    fn prepare_block_sums(&mut self, pool: &ThreadPool) {
        self.sums_ready = false;
        #[cfg(target_arch = "x86_64")]
        {
            let (rows, cols) = (self.rows, self.cols);
            let s = slot(ActFormat::Q8_0);
            let wanted = self.ready[s]
                && self.isa == Isa::Avx2
                && rows >= 2
                && cols.is_multiple_of(32)
                && super::tiles::has_vnni();
            if !wanted {
                return;
            }
            let nb = cols / 32;
            let (sums_len, scales_len) = (rows * nb * 32, nb * rows + 8);
            let grow = match &self.block_sums {
                Some((s, c)) => s.len() < sums_len || c.len() < scales_len,
                None => true,
            };
            if grow {
                let max_rows = self.max_bytes[s] / ActFormat::Q8_0.row_bytes(cols).max(1);
                let max_rows = max_rows.max(rows);
                self.block_sums = Some((
                    AlignedBytes::zeroed(max_rows * nb * 32),
                    vec![0f32; nb * max_rows + 8],
                ));
            }
            let arb = ActFormat::Q8_0.row_bytes(cols);
            let a = self.bufs[s].as_bytes().as_ptr() as usize;
            let (sums, scales) = self.block_sums.as_mut().unwrap();
            let sums = sums.as_bytes_mut().as_mut_ptr() as usize;
            let scales = scales.as_mut_ptr() as usize;
            pool.for_ranges(rows, 1, |range| {
                for t in range {
                    // SAFETY: VNNI was detected; row t writes its own sums
                    // and the scales at `b * rows + t`, inside the buffers
                    // sized above; no other row writes them.
                    unsafe {
                        super::tiles::q8_0_block_sums(
                            (a as *const u8).add(t * arb),
                            nb,
                            (sums as *mut std::arch::x86_64::__m256i).add(t * nb),
                            (scales as *mut f32).add(t),
                            rows,
                        )
                    };
                }
            });
            self.sums_ready = true;
        }
    }

    /// The block sums and scales of the current input, when prepared.
    fn block_sums(&self) -> Option<(&[u8], &[f32])> {
        match (&self.block_sums, self.sums_ready) {
            (Some((s, c)), true) => Some((s.as_bytes(), c.as_slice())),
            _ => None,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Whether the rows are one prompt's tokens (the default), summed with
    /// llama.cpp's batch kernels' rounding, or tokens of different
    /// sequences decoded together, each summed exactly as if it were alone
    /// (so batching never changes a sequence's output).
    pub fn set_prompt_batch(&mut self, prompt: bool) {
        self.prompt_batch = prompt;
    }

    fn get(&self, fmt: ActFormat) -> &[u8] {
        let s = slot(fmt);
        assert!(self.ready[s], "activations not prepared for {fmt:?}");
        &self.bufs[s].as_bytes()[..fmt.row_bytes(self.cols) * self.rows]
    }
}

/// `out[t * w.rows + r] = W[r] . x[t]` for all `t < acts.rows()`.
pub fn matmul(pool: &ThreadPool, isa: Isa, w: &Matrix, acts: &QuantActs, out: &mut [f32]) {
    matmul_many(pool, isa, acts, &mut [(w, out)]);
}

/// Several products over the same input in one parallel pass (Q, K and V;
/// gate and up): one hand-off to the threads instead of one per matrix.
pub fn matmul_many(
    pool: &ThreadPool,
    isa: Isa,
    acts: &QuantActs,
    outs: &mut [(&Matrix, &mut [f32])],
) {
    let n_tok = acts.rows;
    let jobs: Vec<(Job, SharedMut<f32>)> = outs
        .iter_mut()
        .map(|(w, out)| {
            assert_eq!(
                acts.cols, w.cols,
                "matmul: input width does not match the weights"
            );
            assert!(out.len() >= n_tok * w.rows);
            let fmt = w.qtype.act_format();
            let job = Job {
                w: &w.data,
                wrb: w.row_bytes(),
                qtype: w.qtype,
                a: acts.get(fmt),
                arb: fmt.row_bytes(w.cols),
                nb: w.cols / w.qtype.block_elems(),
                n_tok,
                n_rows: w.rows,
                isa,
                // One activation row rounds the same either way.
                batched: acts.prompt_batch && n_tok > 1,
                sums: if fmt == ActFormat::Q8_0 {
                    acts.block_sums()
                } else {
                    None
                },
            };
            (job, SharedMut::new(out))
        })
        .collect();
    // Rows are handed out in chunks from a shared counter, so a thread that
    // runs slower (or was descheduled) does less instead of the other
    // waiting for it. Chunks are as long as balance allows: each thread
    // then streams long runs of consecutive rows, which its prefetches
    // (a fixed distance ahead) cover; short chunks leave every thread
    // jumping over the other's rows and its prefetches land in them.
    let per_thread = pool.n_threads() * 8;
    let chunks: Vec<usize> = jobs
        .iter()
        .map(|(j, _)| {
            if n_tok <= 8 {
                (j.n_rows / per_thread).clamp(16, 256) & !3
            } else {
                32
            }
        })
        .collect();
    let starts: Vec<usize> = jobs
        .iter()
        .zip(&chunks)
        .scan(0, |acc, ((j, _), &chunk)| {
            let s = *acc;
            *acc += j.n_rows.div_ceil(chunk);
            Some(s)
        })
        .collect();
    let total = jobs
        .iter()
        .zip(&chunks)
        .map(|((j, _), &c)| j.n_rows.div_ceil(c))
        .sum::<usize>();
    let next = AtomicUsize::new(0);
    pool.run(|_| loop {
        let c = next.fetch_add(1, Ordering::Relaxed);
        if c >= total {
            break;
        }
        let k = starts.partition_point(|&s| s <= c) - 1;
        let (job, dst) = &jobs[k];
        let (local, chunk) = (c - starts[k], chunks[k]);
        let rows = local * chunk..((local + 1) * chunk).min(job.n_rows);
        job.run(rows, *dst);
    });
}

/// The tile schedule of the 32-element block kernels, over a `tile!(R, C,
/// row, token)` macro: tiles of four rows for one or two activation rows
/// (decoding), else two rows by four tokens with the token tiles outside,
/// so the chunk's weight rows (a few KiB) and one tile's activations stay
/// in L1 while the rows sweep past them.
#[cfg(target_arch = "x86_64")]
macro_rules! b32_schedule {
    ($tile:ident, $rows:expr, $n:expr) => {{
        let (rows, n): (std::ops::Range<usize>, usize) = ($rows, $n);
        if n <= 2 {
            let mut r = rows.start;
            while r + 4 <= rows.end {
                if n == 2 {
                    $tile!(4, 2, r, 0)
                } else {
                    $tile!(4, 1, r, 0)
                }
                r += 4;
            }
            while r < rows.end {
                if n == 2 {
                    $tile!(1, 2, r, 0)
                } else {
                    $tile!(1, 1, r, 0)
                }
                r += 1;
            }
        } else {
            let mut t = 0;
            while t < n {
                let mut r = rows.start;
                while r < rows.end {
                    let two = r + 2 <= rows.end;
                    match (two, n - t) {
                        (true, 4..) => $tile!(2, 4, r, t),
                        (true, 3) => $tile!(2, 3, r, t),
                        (true, 2) => $tile!(2, 2, r, t),
                        (true, _) => $tile!(2, 1, r, t),
                        (false, 4..) => $tile!(1, 4, r, t),
                        (false, 3) => $tile!(1, 3, r, t),
                        (false, 2) => $tile!(1, 2, r, t),
                        (false, _) => $tile!(1, 1, r, t),
                    }
                    r += if two { 2 } else { 1 };
                }
                t += 4;
            }
        }
    }};
}

/// One matrix product's operands, shared by the threads.
struct Job<'a> {
    w: &'a [u8],
    wrb: usize,
    qtype: QType,
    a: &'a [u8],
    arb: usize,
    nb: usize,
    n_tok: usize,
    n_rows: usize,
    isa: Isa,
    /// Prompt-batch rounding (see `QuantActs::set_prompt_batch`).
    batched: bool,
    /// `QuantActs::block_sums`, for the offset-type tiles.
    sums: Option<(&'a [u8], &'a [f32])>,
}

impl Job<'_> {
    /// The batch size the kernel choice sees: 1 when every row must round
    /// as if it were alone.
    fn rounding_rows(&self) -> usize {
        if self.batched {
            self.n_tok
        } else {
            1
        }
    }

    /// Computes weight rows `rows` for every activation row.
    fn run(&self, rows: std::ops::Range<usize>, dst: SharedMut<f32>) {
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx2 {
            // SAFETY: Avx2 was detected at run time; pointers stay inside the
            // weight and activation slices (row and block counts come from
            // them); each output index (t, r) is written by one thread only.
            unsafe { self.run_avx2(rows, dst) };
            return;
        }
        for t in 0..self.n_tok {
            let at = &self.a[t * self.arb..(t + 1) * self.arb];
            let f = dot_fn_for(self.isa, self.qtype, self.rounding_rows(), t);
            // SAFETY: rows of this chunk belong to this thread alone.
            let o = unsafe { dst.slice(t * self.n_rows + rows.start, rows.len()) };
            for (i, r) in rows.clone().enumerate() {
                o[i] = f(&self.w[r * self.wrb..(r + 1) * self.wrb], at, self.nb);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn run_avx2(&self, rows: std::ops::Range<usize>, dst: SharedMut<f32>) {
        use super::tiles;
        let (w, a) = (self.w.as_ptr(), self.a.as_ptr());
        let row = |r: usize| w.add(r * self.wrb);
        // Prefetch the row this far ahead (clamped to the matrix).
        let pf = |r: usize| w.add((r + 8).min(self.n_rows - 1) * self.wrb);
        let act = |t: usize| a.add(t * self.arb);
        let put = |t: usize, r: usize, v: f32| {
            *dst.slice(t * self.n_rows + r, 1).get_unchecked_mut(0) = v
        };
        let n = self.n_tok;
        // One K-quant weight row against up to four activation rows.
        macro_rules! k_tile {
            ($kernel:ident, $flag:literal, $r:expr, $ts:expr) => {{
                let ts = $ts;
                let mut ap = [std::ptr::null(); 4];
                for (i, t) in ts.clone().enumerate() {
                    ap[i] = act(t);
                }
                let mut o = [0f32; 4];
                let p = if ts.start == 0 {
                    pf($r)
                } else {
                    std::ptr::null()
                };
                let (w, nb) = (row($r), self.nb);
                match ts.len() {
                    4 => tiles::$kernel::<4, $flag>(
                        w,
                        &[ap[0], ap[1], ap[2], ap[3]],
                        nb,
                        (&mut o[..4]).try_into().unwrap(),
                        p,
                    ),
                    3 => tiles::$kernel::<3, $flag>(
                        w,
                        &[ap[0], ap[1], ap[2]],
                        nb,
                        (&mut o[..3]).try_into().unwrap(),
                        p,
                    ),
                    2 => tiles::$kernel::<2, $flag>(
                        w,
                        &[ap[0], ap[1]],
                        nb,
                        (&mut o[..2]).try_into().unwrap(),
                        p,
                    ),
                    _ => tiles::$kernel::<1, $flag>(
                        w,
                        &[ap[0]],
                        nb,
                        (&mut o[..1]).try_into().unwrap(),
                        p,
                    ),
                }
                for (i, t) in ts.enumerate() {
                    put(t, $r, o[i]);
                }
            }};
        }
        match self.qtype {
            QType::Q8_0 => self.b32::<tiles::Q8_0>(rows, &row, &act, &put),
            QType::Q5_0 => match self.sums {
                Some(sums) if n >= 2 => self.b32u::<tiles::Q5_0>(rows, sums, &row, &act, &put),
                _ => self.b32::<tiles::Q5_0>(rows, &row, &act, &put),
            },
            QType::Q4_0 => match self.sums {
                Some(sums) if n >= 2 => self.b32u::<tiles::Q4_0>(rows, sums, &row, &act, &put),
                _ => self.b32::<tiles::Q4_0>(rows, &row, &act, &put),
            },
            QType::Q4K => {
                // Rows in llama.cpp's groups of four take the grouped rounding.
                let grouped = if self.batched && n > 3 { n - n % 4 } else { 0 };
                let mut r = rows.start;
                let eights = if grouped > 0 { rows.len() / 8 * 8 } else { 0 };
                if eights > 0 {
                    self.q4k_grouped8(r..r + eights, grouped, &row, &act, &put);
                    for r in r..r + eights {
                        for ts in token_tiles(grouped..n) {
                            k_tile!(tile_q4k, false, r, ts);
                        }
                    }
                    r += eights;
                }
                while r < rows.end {
                    for ts in token_tiles(0..grouped) {
                        k_tile!(tile_q4k, true, r, ts);
                    }
                    for ts in token_tiles(grouped..n) {
                        k_tile!(tile_q4k, false, r, ts);
                    }
                    r += 1;
                }
            }
            QType::Q6K => {
                // llama.cpp switches to its tiled kernel from eight rows up.
                // Token tiles outside, as in `q4k_grouped8`.
                for ts in token_tiles(0..n) {
                    for r in rows.clone() {
                        let ts = ts.clone();
                        if self.batched && n >= 8 {
                            k_tile!(tile_q6k, true, r, ts);
                        } else {
                            k_tile!(tile_q6k, false, r, ts);
                        }
                    }
                }
            }
            _ => {
                for t in 0..n {
                    let at = std::slice::from_raw_parts(act(t), self.arb);
                    let f = dot_fn_for(self.isa, self.qtype, self.rounding_rows(), t);
                    for r in rows.clone() {
                        put(
                            t,
                            r,
                            f(std::slice::from_raw_parts(row(r), self.wrb), at, self.nb),
                        );
                    }
                }
            }
        }
    }

    /// Q4_K rows `rows` (a multiple of eight) against the first `grouped`
    /// activation rows (a multiple of four): eight rows by eight or four
    /// tokens per tile, token tiles outside so one tile's activations stay
    /// in L1 while the rows sweep past them.
    #[cfg(target_arch = "x86_64")]
    unsafe fn q4k_grouped8(
        &self,
        rows: std::ops::Range<usize>,
        grouped: usize,
        row: &dyn Fn(usize) -> *const u8,
        act: &dyn Fn(usize) -> *const u8,
        put: &dyn Fn(usize, usize, f32),
    ) {
        use super::tiles::tile8_q4k_grouped;
        let mut t = 0;
        while t < grouped {
            let step = if t + 8 <= grouped { 8 } else { 4 };
            for r0 in rows.clone().step_by(8) {
                let w: [*const u8; 8] = std::array::from_fn(|i| row(r0 + i));
                macro_rules! tile {
                    ($c:literal) => {{
                        let mut o = [[0f32; $c]; 8];
                        let a = std::array::from_fn(|j| act(t + j));
                        tile8_q4k_grouped::<$c>(&w, &a, self.nb, &mut o);
                        for (i, o) in o.iter().enumerate() {
                            for (j, &v) in o.iter().enumerate() {
                                put(t + j, r0 + i, v);
                            }
                        }
                    }};
                }
                if step == 8 {
                    tile!(8)
                } else {
                    tile!(4)
                }
            }
            t += step;
        }
    }

    /// Rows of an offset type on VNNI ([`super::tiles::tile_b32u_vnni`]) for
    /// two activation rows or more: tiles of 4 x 2, else 2 rows x 4.
    #[cfg(target_arch = "x86_64")]
    unsafe fn b32u<B: super::tiles::Block32U>(
        &self,
        rows: std::ops::Range<usize>,
        (sums, scales): (&[u8], &[f32]),
        row: &dyn Fn(usize) -> *const u8,
        act: &dyn Fn(usize) -> *const u8,
        put: &dyn Fn(usize, usize, f32),
    ) {
        use super::tiles::tile_b32u_vnni;
        use std::arch::x86_64::__m256i;
        let (nb, n) = (self.nb, self.n_tok);
        let sum = |t: usize| (sums.as_ptr() as *const __m256i).add(t * nb);
        macro_rules! tile {
            ($r:literal, $c:literal, $r0:expr, $t0:expr) => {{
                let w: [*const u8; $r] = std::array::from_fn(|i| row($r0 + i));
                let a: [*const u8; $c] = std::array::from_fn(|j| act($t0 + j));
                let s: [*const __m256i; $c] = std::array::from_fn(|j| sum($t0 + j));
                let mut o = [[0f32; $c]; $r];
                let ahead = ($r0 + 16.max(4 * $r)).min(self.n_rows - $r);
                let (pf, step) = if $t0 == 0 {
                    (row(ahead), ($r * self.wrb).div_ceil(nb))
                } else {
                    (std::ptr::null(), 0)
                };
                tile_b32u_vnni::<B, $r, $c>(
                    &w,
                    &a,
                    &s,
                    scales.as_ptr().add($t0),
                    n,
                    nb,
                    &mut o,
                    pf,
                    step,
                );
                for i in 0..$r {
                    for j in 0..$c {
                        put($t0 + j, $r0 + i, o[i][j]);
                    }
                }
            }};
        }
        b32_schedule!(tile, rows, n);
    }

    /// Rows of a 32-element block type: tiles of 4 rows x 1 activation row
    /// for decoding, 2 rows x 4 activation rows for prompts.
    #[cfg(target_arch = "x86_64")]
    unsafe fn b32<B: super::tiles::Block32>(
        &self,
        rows: std::ops::Range<usize>,
        row: &dyn Fn(usize) -> *const u8,
        act: &dyn Fn(usize) -> *const u8,
        put: &dyn Fn(usize, usize, f32),
    ) {
        use super::tiles::{has_vnni, tile_b32, tile_b32_vnni};
        let nb = self.nb;
        let vnni = has_vnni();
        macro_rules! tile {
            ($r:literal, $c:literal, $r0:expr, $t0:expr) => {{
                let w: [*const u8; $r] = std::array::from_fn(|i| row($r0 + i));
                let a: [*const u8; $c] = std::array::from_fn(|j| act($t0 + j));
                let mut o = [[0f32; $c]; $r];
                // Prefetch the rows four tiles ahead, spread over the blocks.
                let ahead = ($r0 + 16.max(4 * $r)).min(self.n_rows - $r);
                let pf = row(ahead);
                // Only the first activation tile of a row tile prefetches;
                // the others find the rows in cache.
                let step = if $t0 == 0 {
                    ($r * self.wrb).div_ceil(nb)
                } else {
                    0
                };
                if vnni {
                    tile_b32_vnni::<B, $r, $c>(&w, &a, nb, &mut o, pf, step);
                } else {
                    tile_b32::<B, $r, $c>(&w, &a, nb, &mut o, pf, step);
                }
                for i in 0..$r {
                    for j in 0..$c {
                        put($t0 + j, $r0 + i, o[i][j]);
                    }
                }
            }};
        }
        b32_schedule!(tile, rows, self.n_tok);
    }
}

/// `tokens` in consecutive tiles of up to four.
fn token_tiles(tokens: std::ops::Range<usize>) -> impl Iterator<Item = std::ops::Range<usize>> {
    tokens
        .clone()
        .step_by(4)
        .map(move |t| t..(t + 4).min(tokens.end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::quant;

    #[test]
    fn matmul_matches_row_by_row_reference() {
        let pool = ThreadPool::new(2);
        let (rows, cols, toks) = (37, 512, 5);
        let wf = crate::cpu::tests::randn(rows * cols, 1);
        let w = Matrix::from_f32(rows, cols, &wf).unwrap();
        let x = crate::cpu::tests::randn(toks * cols, 2);
        for isa in [Isa::Scalar, Isa::best()] {
            let mut acts = QuantActs::new(isa, toks, cols);
            acts.prepare(&pool, &x, toks, cols, &[ActFormat::F32]);
            let mut out = vec![0f32; toks * rows];
            matmul(&pool, isa, &w, &acts, &mut out);
            for t in 0..toks {
                for r in 0..rows {
                    let want: f32 = (0..cols).map(|c| wf[r * cols + c] * x[t * cols + c]).sum();
                    let got = out[t * rows + r];
                    assert!(
                        (got - want).abs() < 1e-3 * (1.0 + want.abs()),
                        "{isa:?} t{t} r{r}"
                    );
                }
            }
        }
    }

    #[test]
    fn quantized_matmul_matches_reference_dots() {
        let pool = ThreadPool::new(2);
        let (rows, cols, toks) = (9, 512, 3);
        let t = QType::Q8_0;
        let wf = crate::cpu::tests::randn(rows * cols, 3);
        let mut wq = vec![0u8; t.row_bytes(cols) * rows];
        for r in 0..rows {
            quant::quantize_q8_0_ref(
                &wf[r * cols..(r + 1) * cols],
                &mut wq[r * t.row_bytes(cols)..(r + 1) * t.row_bytes(cols)],
            );
        }
        let w = Matrix::new(
            t,
            rows,
            cols,
            Bytes::Owned(Arc::new(AlignedBytes::from_slice(&wq))),
        )
        .unwrap();
        let x = crate::cpu::tests::randn(toks * cols, 4);
        let isa = Isa::best();
        let mut acts = QuantActs::new(isa, toks, cols);
        acts.prepare(&pool, &x, toks, cols, &[ActFormat::Q8_0]);
        let mut out = vec![0f32; toks * rows];
        matmul(&pool, isa, &w, &acts, &mut out);
        for tk in 0..toks {
            let mut a = vec![0u8; ActFormat::Q8_0.row_bytes(cols)];
            quant::quantize_q8_0_ref(&x[tk * cols..(tk + 1) * cols], &mut a);
            for r in 0..rows {
                let want = quant::vec_dot_ref(t, w.row(r), &a);
                assert!((out[tk * rows + r] - want).abs() < 1e-4 * (1.0 + want.abs()));
            }
        }
    }
}
