//! The CUDA backend (cargo feature `cuda`): Gemma 3 layers on an NVIDIA GPU,
//! through candle's CUDA backend for the matrix products and our own
//! kernels (`kernels/*.cu`) for everything between them.
//!
//! # What runs where
//!
//! The engine keeps its CPU model ([`crate::model::Gemma3`]) for the token
//! embeddings and for any layers left on the CPU; [`CudaGemma3`] holds the
//! first `num_gpu` layers on the GPU (`--num-gpu N`, Ollama's `num_gpu`;
//! default: all of them) and, when it holds them all, the final norm, the
//! LM head and the sampler too. One forward pass is:
//!
//! 1. `Gemma3::embed` on the CPU (a row lookup per token);
//! 2. [`CudaGemma3::layers`]: the hidden state goes up (rows x hidden f32),
//!    layers `0..num_gpu` run on the GPU, the state comes back;
//! 3. the CPU runs layers `num_gpu..` (`Gemma3::run_layers`) and its head,
//!    or, with every layer on the GPU, the head runs there too and
//!    [`CudaGemma3::logits`] brings the logits back.
//!
//! The engine (`engine::gpu::Offload`) samples on the host, with the same
//! sampler as the CPU path; [`CudaGemma3::head_and_sample`] (the head and
//! the sampling chain on the device, only token ids coming back) is built
//! and tested against the CPU sampler but not yet what the engine calls.
//!
//! Either side prunes the last layer to the rows whose logits are wanted,
//! as `Gemma3::run_layers` does, so the two paths do the same work.
//!
//! # Kernels
//!
//! Matrix products are candle's: `QMatMul` for GGUF quantized weights
//! (candle's MMVQ/MMQ kernels), cuBLAS for f32/f16/bf16 weights (bf16 for
//! Hugging Face checkpoints). The rest are ours, each with a Rust reference
//! it is tested against (`tests/cuda_kernels.rs`):
//!
//! | kernel | what | reference |
//! |---|---|---|
//! | `rms_norm_f32` | RMSNorm with `w + offset` (1 for HF checkpoints, 0 for GGUF), optionally added to the residual | `cpu::ops::{rms_norm, rms_norm_add}` |
//! | `gelu_mul_f32` | `gelu_tanh(gate) * up` (exact tanh, not ggml's f16 table) | `cpu::ops::gelu_tanh` |
//! | `rope_qk_f32` | per-head RMSNorm, then NEOX rotary embedding of Q and K in place (per-layer base and linear scale, a position per row), Q scaled | `cpu::ops::{rms_norm_inplace, rope_cos_sin, rope_apply}` |
//! | `kv_append_f16` | keys and values into the f16 cache (ring slots `p % cap` on sliding layers) | `model::KvCache` |
//! | `attn_decode_f16_hd*`, `attn_combine_f32` | one query per row over its sequence's cache, sliding window, GQA, split over the sequence (flash-decoding) | `cpu::ops::F16Attention` |
//! | `sample_f32` | repeat penalty, top-k, temperature, top-p, min-p and the seeded draw, or argmax, one block per sequence | `engine::sampler::Sampler` |
//!
//! `build.rs` compiles the kernels to PTX with nvcc (`compute_80` unless
//! `CUDA_COMPUTE_CAP` says otherwise; `NVCC` or `CUDA_HOME` locate it) and
//! embeds it; the driver JIT-compiles it for the GPU at hand on first use.
//!
//! # Running a CUDA build
//!
//! A `--features cuda` binary links the NVIDIA driver library dynamically:
//! it needs `libcuda.so.1` (the driver) to start at all, plus the CUDA
//! runtime libraries candle links (cuBLAS, cuRAND, NVRTC) on the library
//! path, and a driver recent enough for the CUDA version the PTX was built
//! with. Build it for machines with the NVIDIA driver; elsewhere use the
//! default CPU build. Where the driver is present but no GPU is usable,
//! `--device cuda` fails with one line saying so and `--device auto` runs
//! on the CPU ([`resolve`]).

pub mod device;
pub mod kernels;
pub mod model;
pub mod sampler;

pub use device::{describe, device_count, open, resolve};
pub use kernels::Kernels;
pub use model::CudaGemma3;
pub use sampler::DeviceSamplerParams;

/// The PTX build.rs made of `kernels/*.cu`.
pub mod ptx {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}
