//! Layers on a CUDA GPU: `--device cuda[:N]` and `--num-gpu N`.
//!
//! The engine keeps its CPU model for the token embeddings, for layers
//! `num_gpu..` and for sampling; [`Offload`] holds layers `0..num_gpu` (and
//! the LM head when it holds them all) on the GPU through
//! [`crate::cuda::CudaGemma3`]. One forward pass: embed on the CPU, the
//! hidden state up, GPU layers, back down, CPU layers, then the head where
//! it lives; logits always end on the host, where the engine's sampler
//! (the same one as on the CPU) reads them.
//!
//! Without the `cuda` feature [`Offload::open`] refuses `--device cuda` in
//! one line and treats `auto` as the CPU.

use super::Device;
use crate::model::Config;
use anyhow::Result;
use std::path::Path;

/// How many layers go to the GPU: `num_gpu` (Ollama's option), all of them
/// when unset, never more than the model has.
pub fn layers_on_gpu(num_gpu: Option<usize>, cfg: &Config) -> usize {
    num_gpu
        .unwrap_or(cfg.num_hidden_layers)
        .min(cfg.num_hidden_layers)
}

/// An error for a device this build cannot use (`cuda` without the `cuda`
/// feature), before anything is loaded.
pub fn check_device(device: Device) -> Result<()> {
    #[cfg(not(feature = "cuda"))]
    if let Device::Cuda(_) = device {
        anyhow::bail!(
            "--device {device}: this build has no CUDA support (rebuild with `--features cuda`)"
        );
    }
    let _ = device;
    Ok(())
}

#[cfg(not(feature = "cuda"))]
pub struct Offload {
    _never: std::convert::Infallible,
}

#[cfg(not(feature = "cuda"))]
impl Offload {
    /// `None` (run on the CPU) for `cpu` and `auto`; an error for `cuda`.
    pub fn open(
        device: Device,
        _num_gpu: Option<usize>,
        _weights: &Path,
        _cfg: &Config,
    ) -> Result<Option<Self>> {
        match device {
            Device::Cpu | Device::Auto => Ok(None),
            Device::Cuda(_) => anyhow::bail!(
                "--device {device}: this build has no CUDA support (rebuild with `--features cuda`)"
            ),
        }
    }

    pub fn num_gpu(&self) -> usize {
        match self._never {}
    }

    pub fn describe(&self) -> &str {
        match self._never {}
    }

    pub fn forward(
        &mut self,
        _cpu: &crate::model::Gemma3,
        _rt: &crate::model::gemma3::Runtime,
        _s: &mut crate::model::gemma3::Scratch,
        _b: &crate::model::gemma3::Batch,
        _caches: &mut [crate::model::KvCache],
        _logits: &mut [f32],
    ) -> Result<()> {
        match self._never {}
    }
}

#[cfg(feature = "cuda")]
pub use with_cuda::Offload;

#[cfg(feature = "cuda")]
mod with_cuda {
    use super::*;
    use crate::cuda::CudaGemma3;
    use crate::model::gemma3::{Batch, BatchKind, Runtime, Scratch};
    use crate::model::{Gemma3, KvCache};

    /// Sequences the device caches hold from the first forward on (two
    /// agents, and room for a batch of four).
    const MIN_SEQS: usize = 4;

    /// The GPU half of a model split at layer `num_gpu`.
    pub struct Offload {
        model: CudaGemma3,
        describe: String,
        /// The device caches' shape: sequences, context, chunk.
        shape: (usize, usize, usize),
    }

    impl Offload {
        /// Loads layers `0..num_gpu` onto the GPU `device` names; `None` when
        /// `device` is `auto` and no GPU is usable, or `num_gpu` is 0.
        pub fn open(
            device: Device,
            num_gpu: Option<usize>,
            weights: &Path,
            cfg: &Config,
        ) -> Result<Option<Self>> {
            let Some(ordinal) = crate::cuda::resolve(device)? else {
                return Ok(None);
            };
            let n = layers_on_gpu(num_gpu, cfg);
            if n == 0 {
                return Ok(None);
            }
            let describe = format!(
                "cuda:{ordinal} {}",
                crate::cuda::describe(ordinal).unwrap_or_default()
            );
            let model = CudaGemma3::load(weights, cfg, ordinal, n)?;
            Ok(Some(Self {
                model,
                describe,
                shape: (0, 0, 0),
            }))
        }

        pub fn num_gpu(&self) -> usize {
            self.model.num_gpu()
        }

        pub fn describe(&self) -> &str {
            &self.describe
        }

        /// Sizes the device caches for `caches`: room for at least
        /// [`MIN_SEQS`] sequences from the start, so a second agent joining
        /// a running one finds its slot. They grow only while no sequence
        /// holds positions, since a new shape starts them empty.
        fn fit_caches(&mut self, caches: &[KvCache]) -> Result<()> {
            let want = (
                caches.len().max(MIN_SEQS).max(self.shape.0),
                caches
                    .iter()
                    .map(KvCache::num_ctx)
                    .max()
                    .unwrap_or(1)
                    .max(self.shape.1),
                caches
                    .iter()
                    .map(KvCache::max_chunk)
                    .max()
                    .unwrap_or(1)
                    .max(self.shape.2),
            );
            if want == self.shape {
                return Ok(());
            }
            // A cache's length counts the positions already on the GPU.
            anyhow::ensure!(
                caches.iter().all(|c| c.is_empty()),
                "--device cuda: a sequence needing a larger GPU KV cache ({} sequences, num_ctx {}) \
                 joined while another was running; the cache cannot grow under it (give the agents \
                 the same num_ctx, or use --concurrency sequential)",
                want.0,
                want.1
            );
            self.model.prepare_caches(want.0, want.1, want.2)?;
            self.shape = want;
            Ok(())
        }

        pub fn forward(
            &mut self,
            cpu: &Gemma3,
            rt: &Runtime,
            s: &mut Scratch,
            b: &Batch,
            caches: &mut [KvCache],
            logits: &mut [f32],
        ) -> Result<()> {
            let advance = cpu.check(s, b, caches, logits)?;
            self.fit_caches(caches)?;
            s.set_prompt_batch(b.kind == BatchKind::Prompt);
            cpu.embed(s, b);
            let h = cpu.config().hidden_size;
            let n = b.len();
            let mut m =
                self.model
                    .layers(s.hidden_mut(n, h), b.positions, b.seqs, b.logits_rows)?;
            let total = cpu.config().num_hidden_layers;
            if self.model.num_gpu() < total {
                m = cpu.run_layers(rt, s, b, caches, self.model.num_gpu()..total);
            }
            for (seq, added) in advance {
                caches[seq].advance(added);
            }
            if self.model.has_head() {
                let l = self.model.logits(m)?;
                logits[..l.len()].copy_from_slice(&l);
            } else {
                cpu.head(rt, s, m, logits);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn num_gpu_defaults_to_every_layer_and_is_clamped() {
        let cfg = Config::tiny();
        let n = cfg.num_hidden_layers;
        assert_eq!(layers_on_gpu(None, &cfg), n);
        assert_eq!(layers_on_gpu(Some(1), &cfg), 1);
        assert_eq!(layers_on_gpu(Some(0), &cfg), 0);
        assert_eq!(layers_on_gpu(Some(n + 5), &cfg), n);
    }

    #[test]
    fn devices_this_build_cannot_use_are_refused() {
        assert!(check_device(Device::Cpu).is_ok());
        assert!(check_device(Device::Auto).is_ok());
        #[cfg(not(feature = "cuda"))]
        {
            let e = check_device(Device::Cuda(0)).unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
            assert_eq!(e.lines().count(), 1);
            let p = Path::new("none.gguf");
            assert!(Offload::open(Device::Auto, None, p, &Config::tiny())
                .unwrap()
                .is_none());
        }
    }
}
