//! Sampling on the GPU (`kernels/sampling.cu`): one launch samples every
//! row of a batch of logits; only the chosen ids come back to the host.
//!
//! The kernel follows [`crate::engine::sampler::Sampler`] step by step, so
//! with the same seed and step it picks the same token (see the kernel's
//! header for the two places where it can only agree up to rounding).

use super::kernels::{Kernels, SAMPLE_THREADS};
use crate::engine::Options;
use anyhow::{ensure, Result};
use candle_core::{DType, Tensor};
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// One sequence's sampling settings for one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceSamplerParams {
    /// 0 = greedy (argmax, no penalty).
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    pub seed: u64,
    /// The sampler's counter: how many tokens this sequence has sampled
    /// before (the CPU sampler's `step`).
    pub step: u64,
}

impl DeviceSamplerParams {
    /// The settings of `opts` at `step` (the seed must be set, as for
    /// [`crate::engine::sampler::Sampler::new`]).
    pub fn new(opts: &Options, step: u64) -> Self {
        Self {
            temperature: opts.temperature,
            top_k: opts.top_k,
            top_p: opts.top_p,
            min_p: opts.min_p,
            repeat_penalty: opts.repeat_penalty,
            repeat_last_n: opts.repeat_last_n,
            seed: opts.seed.unwrap_or(0),
            step,
        }
    }
}

/// `SampleRow` of kernels/sampling.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct RowParams {
    temperature: f32,
    top_p: f32,
    min_p: f32,
    repeat_penalty: f32,
    top_k: u32,
    hist_len: u32,
    hist_off: u64,
    seed: u64,
    step: u64,
}

const _: () = assert!(std::mem::size_of::<RowParams>() == 48);

impl RowParams {
    fn bytes(rows: &[RowParams]) -> Vec<u8> {
        let mut out = Vec::with_capacity(rows.len() * 48);
        for r in rows {
            out.extend_from_slice(&r.temperature.to_le_bytes());
            out.extend_from_slice(&r.top_p.to_le_bytes());
            out.extend_from_slice(&r.min_p.to_le_bytes());
            out.extend_from_slice(&r.repeat_penalty.to_le_bytes());
            out.extend_from_slice(&r.top_k.to_le_bytes());
            out.extend_from_slice(&r.hist_len.to_le_bytes());
            out.extend_from_slice(&r.hist_off.to_le_bytes());
            out.extend_from_slice(&r.seed.to_le_bytes());
            out.extend_from_slice(&r.step.to_le_bytes());
        }
        out
    }
}

/// The penalty windows of every row, concatenated, and each row's
/// settings: the last `repeat_last_n` tokens of its history, none when the
/// penalty is off or the row is greedy (as the CPU sampler skips them).
fn pack(params: &[DeviceSamplerParams], history: &[&[u32]]) -> (Vec<RowParams>, Vec<u32>) {
    let mut hist = Vec::new();
    let rows = params
        .iter()
        .zip(history)
        .map(|(p, h)| {
            let on = p.temperature != 0.0 && p.repeat_penalty != 1.0 && p.repeat_last_n > 0;
            let window = if on {
                &h[h.len().saturating_sub(p.repeat_last_n)..]
            } else {
                &[][..]
            };
            let off = hist.len() as u64;
            hist.extend_from_slice(window);
            RowParams {
                temperature: p.temperature,
                top_p: p.top_p,
                min_p: p.min_p,
                repeat_penalty: p.repeat_penalty,
                top_k: p.top_k.min(u32::MAX as usize) as u32,
                hist_len: window.len() as u32,
                hist_off: off,
                seed: p.seed,
                step: p.step,
            }
        })
        .collect();
    (rows, hist)
}

impl Kernels {
    /// Samples one token from each row of `logits` (rows x vocab f32, on
    /// this GPU; the penalty is applied to it in place) with `params[r]`
    /// and the sequence so far `history[r]` (prompt included).
    pub fn sample(
        &self,
        logits: &Tensor,
        params: &[DeviceSamplerParams],
        history: &[&[u32]],
    ) -> Result<Vec<u32>> {
        let rows = params.len();
        ensure!(
            history.len() == rows,
            "sample: {rows} rows of settings, {} histories",
            history.len()
        );
        if rows == 0 {
            return Ok(Vec::new());
        }
        let vocab = logits.elem_count() / rows;
        ensure!(
            vocab > 0 && logits.elem_count() == rows * vocab,
            "sample: {} logits are not {rows} rows",
            logits.elem_count()
        );
        ensure!(
            vocab <= i32::MAX as usize,
            "sample: vocabulary of {vocab} is too large"
        );
        let (rp, hist) = pack(params, history);
        let dev = self.device();
        let rp_bytes = RowParams::bytes(&rp);
        let rp_t = Tensor::from_slice(&rp_bytes, rp_bytes.len(), dev)?;
        // A one-token placeholder keeps the pointer valid when no row has a
        // penalty window.
        let hist_t = if hist.is_empty() {
            Tensor::zeros(1, DType::U32, dev)?
        } else {
            Tensor::from_slice(&hist, hist.len(), dev)?
        };
        let out = Tensor::zeros(rows, DType::U32, dev)?;
        let (pl, pr, ph, po) = (
            self.ptr(logits, DType::F32)?,
            self.ptr(&rp_t, DType::U8)?,
            self.ptr(&hist_t, DType::U32)?,
            self.ptr(&out, DType::U32)?,
        );
        let vocab32 = vocab as i32;
        let mut b = self.stream().launch_builder(&self.sample);
        b.arg(&pl).arg(&vocab32).arg(&pr).arg(&ph).arg(&po);
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (SAMPLE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: rows x vocab logits, `rows` 48-byte settings whose history
        // windows lie inside `hist_t`, `rows` outputs.
        unsafe { b.launch(cfg) }?;
        Ok(out.to_vec1::<u32>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, penalty: f32, last_n: usize) -> DeviceSamplerParams {
        DeviceSamplerParams {
            temperature,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.0,
            repeat_penalty: penalty,
            repeat_last_n: last_n,
            seed: 1,
            step: 0,
        }
    }

    #[test]
    fn penalty_windows_are_the_last_n_tokens() {
        let h1 = [1u32, 2, 3, 4, 5];
        let h2 = [9u32, 8];
        let (rows, hist) = pack(&[params(0.8, 1.1, 3), params(0.8, 1.1, 64)], &[&h1, &h2]);
        assert_eq!(hist, vec![3, 4, 5, 9, 8]);
        assert_eq!((rows[0].hist_off, rows[0].hist_len), (0, 3));
        assert_eq!((rows[1].hist_off, rows[1].hist_len), (3, 2));
        // No window when the penalty is off or the row is greedy.
        let (rows, hist) = pack(
            &[
                params(0.8, 1.0, 3),
                params(0.0, 1.1, 3),
                params(0.8, 1.1, 0),
            ],
            &[&h1, &h1, &h1],
        );
        assert!(hist.is_empty());
        assert!(rows.iter().all(|r| r.hist_len == 0));
    }

    #[test]
    fn row_params_are_laid_out_as_the_kernel_reads_them() {
        let (rows, _) = pack(&[params(0.5, 1.1, 2)], &[&[7, 8, 9]]);
        let b = RowParams::bytes(&rows);
        assert_eq!(b.len(), 48);
        assert_eq!(f32::from_le_bytes(b[0..4].try_into().unwrap()), 0.5);
        assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), 40);
        assert_eq!(u32::from_le_bytes(b[20..24].try_into().unwrap()), 2);
        assert_eq!(u64::from_le_bytes(b[32..40].try_into().unwrap()), 1);
    }
}
