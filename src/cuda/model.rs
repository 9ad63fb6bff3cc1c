//! Gemma 3 layers on the GPU: weights through candle, our kernels between
//! the matrix products, a KV cache per sequence on the device.
//!
//! The layer is `model::gemma3`'s, step for step: pre-norm, Q/K/V, per-head
//! norm and rope of Q and K (queries scaled), K/V appended to the cache,
//! attention over the cache, output projection, pruning to the logits rows
//! in the model's last layer, post-norm added to the residual, then the
//! same sandwich around the GELU-gated MLP.

use super::device;
use super::kernels::{AttnShape, Kernels, RopeArgs};
use super::sampler::DeviceSamplerParams;
use crate::cpu::QType;
use crate::model::gguf::GgufFile;
use crate::model::safetensors::SafetensorsModel;
use crate::model::weights::TensorSource;
use crate::model::{Config, DType as WeightType};
use anyhow::{bail, ensure, Context, Result};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul};
use candle_core::{DType, Device, Module, Tensor};
use std::path::Path;

/// A weight matrix on the GPU (rows = outputs, cols = inputs).
enum Linear {
    /// GGUF quantized blocks, multiplied by candle's quantized kernels.
    Quant(QMatMul),
    /// f32, f16 or bf16, multiplied by cuBLAS (activations converted to
    /// the weight's type and back).
    Dense(Tensor),
}

impl Linear {
    fn load(
        src: &dyn TensorSource,
        name: &str,
        rows: usize,
        cols: usize,
        dev: &Device,
    ) -> Result<Self> {
        let m = src.matrix(name)?;
        ensure!(
            m.rows == rows && m.cols == cols,
            "{name}: expected {rows}x{cols}, found {}x{}",
            m.rows,
            m.cols
        );
        let bytes: &[u8] = &m.data;
        let dense = |dt: DType| -> Result<Self> {
            Ok(Linear::Dense(Tensor::from_raw_buffer(
                bytes,
                dt,
                &[rows, cols],
                dev,
            )?))
        };
        let ggml = match m.qtype {
            QType::F32 => return dense(DType::F32),
            QType::F16 => return dense(DType::F16),
            QType::BF16 => return dense(DType::BF16),
            QType::Q4_0 => GgmlDType::Q4_0,
            QType::Q5_0 => GgmlDType::Q5_0,
            QType::Q8_0 => GgmlDType::Q8_0,
            QType::Q4K => GgmlDType::Q4K,
            QType::Q5K => GgmlDType::Q5K,
            QType::Q6K => GgmlDType::Q6K,
        };
        let q = qtensor_from_ggml(ggml, bytes, vec![rows, cols], dev)
            .with_context(|| format!("uploading {name}"))?;
        Ok(Linear::Quant(QMatMul::from_qtensor(q)?))
    }

    /// `x` (n x cols, f32) times the transposed weight: n x rows, f32.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Linear::Quant(q) => q.forward(x)?,
            Linear::Dense(w) if w.dtype() == DType::F32 => x.matmul(&w.t()?)?,
            Linear::Dense(w) => x
                .to_dtype(w.dtype())?
                .matmul(&w.t()?)?
                .to_dtype(DType::F32)?,
        })
    }

    fn size_bytes(&self) -> usize {
        match self {
            Linear::Quant(QMatMul::QTensor(q)) => q.storage_size_in_bytes(),
            Linear::Quant(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) | Linear::Dense(t) => {
                t.elem_count() * t.dtype().size_in_bytes()
            }
        }
    }
}

struct Layer {
    attn_norm: Tensor,
    post_attn_norm: Tensor,
    ffn_norm: Tensor,
    post_ffn_norm: Tensor,
    q_norm: Tensor,
    k_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
    sliding: bool,
}

/// The final norm and the LM head (present when every layer is on the GPU).
struct Head {
    norm: Tensor,
    lm_head: Linear,
    vocab: usize,
}

/// One layer's cache: keys and values, f16, sequences x cap x kv_dim.
struct LayerCache {
    k: Tensor,
    v: Tensor,
    cap: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CacheShape {
    num_seqs: usize,
    num_ctx: usize,
    max_chunk: usize,
}

/// The first `num_gpu` layers of a Gemma 3 model on one GPU, with their
/// KV caches, and the head and sampler when it holds every layer.
pub struct CudaGemma3 {
    cfg: Config,
    k: Kernels,
    layers: Vec<Layer>,
    head: Option<Head>,
    /// Added to every norm weight (1 for Hugging Face checkpoints).
    norm_offset: f32,
    caches: Vec<LayerCache>,
    shape: Option<CacheShape>,
    /// The hidden state the last [`CudaGemma3::layers`] left, and its rows.
    x: Option<(Tensor, usize)>,
    name: String,
}

// The engine may move its model between threads.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<CudaGemma3>();
};

fn norm_vector(src: &dyn TensorSource, name: &str, len: usize, dev: &Device) -> Result<Tensor> {
    let v = src.vector(name)?;
    ensure!(
        v.len() == len,
        "{name}: expected {len} values, found {}",
        v.len()
    );
    Ok(Tensor::from_vec(v, len, dev)?)
}

fn u32s(v: &[usize], dev: &Device) -> Result<Tensor> {
    let v: Vec<u32> = v
        .iter()
        .map(|&x| u32::try_from(x).context("index too large for the GPU kernels"))
        .collect::<Result<_>>()?;
    let n = v.len();
    Ok(Tensor::from_vec(v, n, dev)?)
}

impl CudaGemma3 {
    /// Loads layers `0..num_gpu` of the model at `path` (a `.gguf` file or
    /// a Hugging Face folder, whose matrices go up as bf16) onto GPU
    /// `ordinal`, plus the final norm and LM head when `num_gpu` covers
    /// every layer. `cfg` is the model's configuration, as the CPU model
    /// read it.
    pub fn load(path: &Path, cfg: &Config, ordinal: usize, num_gpu: usize) -> Result<Self> {
        cfg.validate()?;
        ensure!(
            num_gpu <= cfg.num_hidden_layers,
            "--num-gpu {num_gpu}: the model has only {} layers",
            cfg.num_hidden_layers
        );
        let dev = device::open(ordinal)?;
        let k = Kernels::new(&dev)?;
        let src: Box<dyn TensorSource> = match crate::model::hf_folder(path) {
            Some(dir) => Box::new(SafetensorsModel::open(&dir, WeightType::Bf16)?),
            None => Box::new(GgufFile::open(path)?),
        };
        let src = src.as_ref();
        let (h, inter, qd, kd, hd) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.head_dim,
        );
        ensure!(
            super::kernels::HEAD_DIMS.contains(&hd),
            "the CUDA attention kernel supports head sizes {:?}, not {hd}",
            super::kernels::HEAD_DIMS
        );
        let mut layers = Vec::with_capacity(num_gpu);
        for l in 0..num_gpu {
            let p = format!("blk.{l}");
            let lin = |t: &str, rows, cols| {
                Linear::load(src, &format!("{p}.{t}.weight"), rows, cols, &dev)
            };
            let norm = |t: &str, len| norm_vector(src, &format!("{p}.{t}.weight"), len, &dev);
            let layer = (|| -> Result<Layer> {
                Ok(Layer {
                    attn_norm: norm("attn_norm", h)?,
                    post_attn_norm: norm("post_attention_norm", h)?,
                    ffn_norm: norm("ffn_norm", h)?,
                    post_ffn_norm: norm("post_ffw_norm", h)?,
                    q_norm: norm("attn_q_norm", hd)?,
                    k_norm: norm("attn_k_norm", hd)?,
                    q: lin("attn_q", qd, h)?,
                    k: lin("attn_k", kd, h)?,
                    v: lin("attn_v", kd, h)?,
                    o: lin("attn_output", h, qd)?,
                    gate: lin("ffn_gate", inter, h)?,
                    up: lin("ffn_up", inter, h)?,
                    down: lin("ffn_down", h, inter)?,
                    sliding: cfg.is_sliding(l),
                })
            })()
            .with_context(|| format!("loading layer {l} onto cuda:{ordinal}"))?;
            layers.push(layer);
        }
        let head = if num_gpu == cfg.num_hidden_layers {
            let name = if src.has("output.weight") {
                "output.weight"
            } else {
                "token_embd.weight"
            };
            let m = src.matrix(name)?;
            let vocab = m.rows;
            drop(m);
            Some(Head {
                norm: norm_vector(src, "output_norm.weight", h, &dev)?,
                lm_head: Linear::load(src, name, vocab, h, &dev)
                    .with_context(|| format!("loading the LM head onto cuda:{ordinal}"))?,
                vocab,
            })
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.clone(),
            norm_offset: src.norm_offset(),
            k,
            layers,
            head,
            caches: Vec::new(),
            shape: None,
            x: None,
            name: device::describe(ordinal).unwrap_or_else(|_| format!("cuda:{ordinal}")),
        })
    }

    /// Layers held on the GPU (`--num-gpu`).
    pub fn num_gpu(&self) -> usize {
        self.layers.len()
    }

    /// Whether the final norm, LM head and sampler are on the GPU (every
    /// layer is).
    pub fn has_head(&self) -> bool {
        self.head.is_some()
    }

    /// The GPU, as [`super::describe`] names it.
    pub fn device_name(&self) -> &str {
        &self.name
    }

    pub fn kernels(&self) -> &Kernels {
        &self.k
    }

    /// Bytes of weights a decode step reads on the GPU.
    pub fn weight_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
                    .iter()
                    .map(|w| w.size_bytes())
                    .sum::<usize>()
            })
            .sum();
        layers + self.head.as_ref().map_or(0, |h| h.lm_head.size_bytes())
    }

    /// Allocates (or keeps, when the shape is unchanged) the device KV
    /// caches: `num_seqs` sequences of `num_ctx` positions, fed at most
    /// `max_chunk` tokens per sequence per forward (sliding layers keep a
    /// ring of window + max_chunk - 1 slots, as `model::KvCache`). Cached
    /// contents are not cleared: positions restart from wherever the caller
    /// starts them.
    pub fn prepare_caches(
        &mut self,
        num_seqs: usize,
        num_ctx: usize,
        max_chunk: usize,
    ) -> Result<()> {
        ensure!(num_seqs > 0 && num_ctx > 0, "empty KV cache requested");
        let shape = CacheShape {
            num_seqs,
            num_ctx,
            max_chunk: max_chunk.max(1),
        };
        if self.shape == Some(shape) {
            return Ok(());
        }
        self.caches.clear();
        self.shape = None;
        let kd = self.cfg.kv_dim();
        let dev = self.k.device().clone();
        for layer in &self.layers {
            let cap = if layer.sliding {
                (self.cfg.sliding_window + shape.max_chunk - 1).min(num_ctx)
            } else {
                num_ctx
            };
            let k = Tensor::zeros((num_seqs, cap, kd), DType::F16, &dev)?;
            let v = Tensor::zeros((num_seqs, cap, kd), DType::F16, &dev)?;
            self.caches.push(LayerCache { k, v, cap });
        }
        self.shape = Some(shape);
        Ok(())
    }

    /// Bytes of the device KV caches.
    pub fn cache_bytes(&self) -> usize {
        self.caches.iter().map(|c| 2 * 2 * c.k.elem_count()).sum()
    }

    /// Runs layers `0..num_gpu` over `hidden` (rows x hidden f32 on the
    /// host, from `Gemma3::embed`; rows = `positions.len()`), appending to
    /// the caches of `seqs`, and writes the result back into `hidden`. When
    /// the GPU holds every layer, the last one keeps only `logits_rows`
    /// (moved to the front, as `Gemma3::run_layers`). Returns the rows the
    /// hidden state holds.
    pub fn layers(
        &mut self,
        hidden: &mut [f32],
        positions: &[usize],
        seqs: &[usize],
        logits_rows: &[usize],
    ) -> Result<usize> {
        let n = positions.len();
        let h = self.cfg.hidden_size;
        let shape = self
            .shape
            .context("CudaGemma3::prepare_caches must come before the first forward")?;
        ensure!(n > 0, "empty batch");
        ensure!(
            seqs.len() == n && hidden.len() >= n * h,
            "batch arrays differ in length"
        );
        let mut per_seq = vec![0usize; shape.num_seqs];
        for (&p, &s) in positions.iter().zip(seqs) {
            ensure!(
                s < shape.num_seqs,
                "sequence {s} has no GPU cache ({} prepared)",
                shape.num_seqs
            );
            ensure!(
                p < shape.num_ctx,
                "position {p} is beyond the context of {} tokens",
                shape.num_ctx
            );
            per_seq[s] += 1;
            ensure!(
                per_seq[s] <= shape.max_chunk,
                "more than {} tokens of sequence {s} in one forward",
                shape.max_chunk
            );
        }
        for &r in logits_rows {
            ensure!(r < n, "logits row {r} is outside the batch");
        }
        let dev = self.k.device().clone();
        let mut x = Tensor::from_slice(&hidden[..n * h], (n, h), &dev)?;
        let pos = u32s(positions, &dev)?;
        let seq = u32s(seqs, &dev)?;
        let last = self.cfg.num_hidden_layers - 1;
        let mut m = n;
        for l in 0..self.layers.len() {
            let keep = (l == last).then_some(logits_rows);
            m = self.layer(l, &mut x, positions, &pos, &seq, keep)?;
            if m == 0 {
                break;
            }
        }
        if m > 0 {
            let out = x.narrow(0, 0, m)?.flatten_all()?.to_vec1::<f32>()?;
            hidden[..m * h].copy_from_slice(&out);
        }
        self.x = Some((x, m));
        Ok(m)
    }

    fn layer(
        &self,
        l: usize,
        x: &mut Tensor,
        positions: &[usize],
        pos: &Tensor,
        seq: &Tensor,
        keep: Option<&[usize]>,
    ) -> Result<usize> {
        let cfg = &self.cfg;
        let (k, layer, cache) = (&self.k, &self.layers[l], &self.caches[l]);
        let (n, hd, eps, off) = (
            positions.len(),
            cfg.head_dim,
            cfg.rms_norm_eps,
            self.norm_offset,
        );
        let dev = k.device();

        let hn = Tensor::zeros((n, cfg.hidden_size), DType::F32, dev)?;
        k.rms_norm(x, &layer.attn_norm, off, eps, &hn, false)?;
        let q = layer.q.forward(&hn)?;
        let kk = layer.k.forward(&hn)?;
        let v = layer.v.forward(&hn)?;
        let (base, freq_scale) = if layer.sliding {
            (cfg.rope_local_base_freq, 1.0)
        } else {
            (cfg.rope_theta, 1.0 / cfg.rope_scaling_factor)
        };
        k.rope_qk(
            &q,
            &kk,
            pos,
            &RopeArgs {
                n_heads: cfg.num_attention_heads,
                n_kv_heads: cfg.num_key_value_heads,
                head_dim: hd,
                theta_scale: base.powf(-2.0 / hd as f32),
                freq_scale,
                q_scale: cfg.attn_scale(),
                q_norm: Some(&layer.q_norm),
                k_norm: Some(&layer.k_norm),
                norm_offset: off,
                eps,
            },
        )?;
        k.kv_append(&kk, &v, &cache.k, &cache.v, pos, seq, cache.cap)?;
        let att = Tensor::zeros((n, cfg.q_dim()), DType::F32, dev)?;
        k.attention(
            &q,
            &cache.k,
            &cache.v,
            pos,
            seq,
            positions,
            &att,
            &AttnShape {
                n_heads: cfg.num_attention_heads,
                n_kv_heads: cfg.num_key_value_heads,
                head_dim: hd,
                cap: cache.cap,
                window: if layer.sliding { cfg.sliding_window } else { 0 },
            },
        )?;
        let mut o = layer.o.forward(&att)?;
        let mut m = n;
        if let Some(rows) = keep {
            // The model's last layer: only the rows whose logits are wanted
            // go on (their keys and values are cached already).
            if rows.is_empty() {
                return Ok(0);
            }
            let idx = u32s(rows, dev)?;
            *x = x.index_select(&idx, 0)?;
            o = o.index_select(&idx, 0)?;
            m = rows.len();
        }
        k.rms_norm(&o, &layer.post_attn_norm, off, eps, x, true)?;
        let hn = hn.narrow(0, 0, m)?;
        k.rms_norm(x, &layer.ffn_norm, off, eps, &hn, false)?;
        let gate = layer.gate.forward(&hn)?;
        let up = layer.up.forward(&hn)?;
        k.gelu_mul(&gate, &up, &gate)?;
        let down = layer.down.forward(&gate)?;
        k.rms_norm(&down, &layer.post_ffn_norm, off, eps, x, true)?;
        Ok(m)
    }

    /// Final norm and LM head over the first `rows` rows of the hidden
    /// state the last [`CudaGemma3::layers`] left: rows x vocab on the GPU.
    fn head_logits(&self, rows: usize) -> Result<Tensor> {
        let Some(head) = &self.head else {
            bail!(
                "the LM head is on the CPU: only {} of {} layers are on the GPU",
                self.layers.len(),
                self.cfg.num_hidden_layers
            );
        };
        let Some((x, m)) = &self.x else {
            bail!("no hidden state on the GPU: run CudaGemma3::layers first");
        };
        ensure!(
            rows <= *m,
            "{rows} logits rows asked for, the hidden state holds {m}"
        );
        let x = x.narrow(0, 0, rows)?;
        let hn = Tensor::zeros((rows, self.cfg.hidden_size), DType::F32, self.k.device())?;
        self.k.rms_norm(
            &x,
            &head.norm,
            self.norm_offset,
            self.cfg.rms_norm_eps,
            &hn,
            false,
        )?;
        let logits = head.lm_head.forward(&hn)?;
        ensure!(
            logits.elem_count() == rows * head.vocab,
            "LM head produced {} values for {rows} rows",
            logits.elem_count()
        );
        Ok(logits)
    }

    /// Vocabulary size of the LM head, when it is on the GPU.
    pub fn vocab_size(&self) -> Option<usize> {
        self.head.as_ref().map(|h| h.vocab)
    }

    /// Final norm, LM head and sampling, all on the GPU, for the first
    /// `rows` rows of the hidden state (the logits rows of the last
    /// forward, in order): row r is sampled with `samplers[r]` and the
    /// sequence so far `history[r]` (prompt included). Returns one token
    /// id per row.
    pub fn head_and_sample(
        &mut self,
        rows: usize,
        samplers: &[DeviceSamplerParams],
        history: &[&[u32]],
    ) -> Result<Vec<u32>> {
        ensure!(
            samplers.len() == rows && history.len() == rows,
            "{rows} rows, {} sampler settings, {} histories",
            samplers.len(),
            history.len()
        );
        if rows == 0 {
            return Ok(Vec::new());
        }
        let logits = self.head_logits(rows)?;
        self.k.sample(&logits, samplers, history)
    }

    /// Final norm and LM head as [`CudaGemma3::head_and_sample`], the
    /// logits copied to the host (rows x vocab), for tests and callers
    /// that want them.
    pub fn logits(&mut self, rows: usize) -> Result<Vec<f32>> {
        if rows == 0 {
            return Ok(Vec::new());
        }
        Ok(self.head_logits(rows)?.flatten_all()?.to_vec1::<f32>()?)
    }
}
