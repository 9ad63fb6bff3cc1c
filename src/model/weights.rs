//! Where the forward pass gets its tensors from, whatever the file format.

use crate::cpu::Matrix;
use anyhow::Result;

/// A set of named tensors, in GGUF naming (`blk.N.attn_q.weight`, ...).
/// Other formats translate their names to these.
pub trait TensorSource {
    /// A 2-D weight, kept in its stored encoding where the kernels read it.
    fn matrix(&self, name: &str) -> Result<Matrix>;
    /// A 1-D tensor as f32 values.
    fn vector(&self, name: &str) -> Result<Vec<f32>>;
    fn has(&self, name: &str) -> bool;
    /// Added to every norm weight: Hugging Face Gemma checkpoints store
    /// `w - 1`, GGUF converters store `w`.
    fn norm_offset(&self) -> f32 {
        0.0
    }

    /// An RMSNorm weight of `len` values, offset applied.
    fn norm(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let mut v = self.vector(name)?;
        anyhow::ensure!(
            v.len() == len,
            "{name}: expected {len} values, found {}",
            v.len()
        );
        let off = self.norm_offset();
        if off != 0.0 {
            v.iter_mut().for_each(|x| *x += off);
        }
        Ok(v)
    }
}
