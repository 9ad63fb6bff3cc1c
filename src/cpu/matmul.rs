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
            cols % qtype.block_elems() == 0,
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
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    fn get(&self, fmt: ActFormat) -> &[u8] {
        let s = slot(fmt);
        assert!(self.ready[s], "activations not prepared for {fmt:?}");
        &self.bufs[s].as_bytes()[..fmt.row_bytes(self.cols) * self.rows]
    }
}

/// `out[t * w.rows + r] = W[r] . x[t]` for all `t < acts.rows()`.
pub fn matmul(pool: &ThreadPool, isa: Isa, w: &Matrix, acts: &QuantActs, out: &mut [f32]) {
    assert_eq!(
        acts.cols, w.cols,
        "matmul: input width does not match the weights"
    );
    let n_tok = acts.rows;
    let n_rows = w.rows;
    assert!(out.len() >= n_tok * n_rows);
    let fmt = w.qtype.act_format();
    let a = acts.get(fmt);
    let arb = fmt.row_bytes(w.cols);
    let wrb = w.row_bytes();
    let nb = w.cols / w.qtype.block_elems();
    // The kernel may depend on the batch size (see `dot_fn_for`).
    let kernels: Vec<_> = (0..n_tok).map(|t| dot_fn_for(isa, w.qtype, n_tok, t)).collect();
    let data: &[u8] = &w.data;
    let dst = SharedMut::new(out);
    // Small row tiles keep a few weight rows in L1 while every activation
    // row streams past them.
    const TILE: usize = 4;
    pool.for_ranges(n_rows, TILE, |range| {
        let mut r0 = range.start;
        while r0 < range.end {
            let r1 = (r0 + TILE).min(range.end);
            for t in 0..n_tok {
                let at = &a[t * arb..(t + 1) * arb];
                // SAFETY: rows r0..r1 of token t belong to this share alone.
                let o = unsafe { dst.slice(t * n_rows + r0, r1 - r0) };
                let f = kernels[t];
                for (i, r) in (r0..r1).enumerate() {
                    o[i] = f(&data[r * wrb..(r + 1) * wrb], at, nb);
                }
            }
            r0 = r1;
        }
    });
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
