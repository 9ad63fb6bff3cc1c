//! GGUF files: header through candle's `gguf_file`, tensor data read in
//! place from a memory map (no copy, so a model costs its file size in page
//! cache and loads in milliseconds once the file is cached).

use super::config::Config;
use super::weights::TensorSource;
use crate::cpu::matmul::{AlignedBytes, Bytes};
use crate::cpu::{Matrix, QType};
use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct GgufFile {
    path: PathBuf,
    map: Arc<memmap2::Mmap>,
    content: Content,
}

impl GgufFile {
    /// Opens and validates a GGUF file; errors name the file and say what
    /// is wrong with it in one line.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open model file {}", path.display()))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < 8 {
            bail!("{} is not a GGUF file ({} bytes)", path.display(), len);
        }
        // SAFETY: the map is read-only; a file truncated underneath us would
        // fault, which is the same risk every mmap-based loader accepts.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("cannot map model file {}", path.display()))?;
        if &map[..4] != b"GGUF" {
            bail!("{} is not a GGUF file (bad magic)", path.display());
        }
        let content = Content::read(&mut std::io::Cursor::new(&map[..])).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a valid GGUF file: {}",
                path.display(),
                first_line(&e)
            )
        })?;
        let f = Self {
            path: path.to_path_buf(),
            map: Arc::new(map),
            content,
        };
        // Every tensor must lie inside the file: catches truncated downloads
        // at load time rather than as a fault in the middle of a forward.
        for (name, info) in &f.content.tensor_infos {
            let (start, size) = f.extent(info.ggml_dtype, info.shape.elem_count(), info.offset);
            if start + size > f.map.len() as u64 {
                bail!(
                    "{} is truncated: tensor {name} ends at byte {} but the file has {} (incomplete download?)",
                    path.display(),
                    start + size,
                    f.map.len()
                );
            }
        }
        Ok(f)
    }

    fn extent(&self, dtype: GgmlDType, elems: usize, offset: u64) -> (u64, u64) {
        let size = (elems / dtype.block_size() * dtype.type_size()) as u64;
        (self.content.tensor_data_offset + offset, size)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    pub fn architecture(&self) -> Option<&str> {
        match self.metadata().get("general.architecture") {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        }
    }

    pub fn file_size(&self) -> usize {
        self.map.len()
    }

    fn meta_u(&self, key: &str) -> Option<usize> {
        let v = self.metadata().get(key)?;
        v.to_u64()
            .ok()
            .or_else(|| v.to_u32().ok().map(u64::from))
            .or_else(|| v.to_i32().ok().and_then(|x| u64::try_from(x).ok()))
            .map(|x| x as usize)
    }

    fn meta_f(&self, key: &str) -> Option<f32> {
        let v = self.metadata().get(key)?;
        v.to_f32()
            .ok()
            .or_else(|| v.to_f64().ok().map(|x| x as f32))
    }

    /// The architecture from `gemma3.*` metadata, with the published Gemma 3
    /// values for what the file does not carry.
    pub fn config(&self) -> Result<Config> {
        match self.architecture() {
            Some("gemma3") => {}
            Some(other) => bail!(
                "{} is a `{other}` model; chimera runs Gemma 3 (`gemma3`) models",
                self.path.display()
            ),
            None => bail!(
                "{} has no general.architecture; is it a model file?",
                self.path.display()
            ),
        }
        let req = |k: &str| {
            self.meta_u(&format!("gemma3.{k}")).with_context(|| {
                format!(
                    "{}: missing gemma3.{k} in the GGUF metadata",
                    self.path.display()
                )
            })
        };
        let hidden = req("embedding_length")?;
        let layers = req("block_count")?;
        let heads = req("attention.head_count")?;
        let kv_heads = self
            .meta_u("gemma3.attention.head_count_kv")
            .unwrap_or(heads);
        let head_dim = self
            .meta_u("gemma3.attention.key_length")
            .unwrap_or(hidden / heads.max(1));
        let embd = self
            .content
            .tensor_infos
            .get("token_embd.weight")
            .with_context(|| format!("{}: no token_embd.weight tensor", self.path.display()))?;
        let vocab = embd.shape.dims().first().copied().unwrap_or(0);
        let (default_scale, qpas) = Config::gemma3_defaults(hidden, layers, heads, head_dim);
        let rope_scaling_factor = match self.metadata().get("gemma3.rope.scaling.type") {
            Some(Value::String(t)) if t == "linear" => self
                .meta_f("gemma3.rope.scaling.factor")
                .unwrap_or(default_scale),
            Some(Value::String(t)) if t == "none" => 1.0,
            _ => self
                .meta_f("gemma3.rope.scaling.factor")
                .unwrap_or(default_scale),
        };
        let cfg = Config {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: req("feed_forward_length")?,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: self
                .meta_f("gemma3.attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-6),
            rope_theta: self.meta_f("gemma3.rope.freq_base").unwrap_or(1_000_000.0),
            rope_local_base_freq: 10_000.0,
            rope_scaling_factor,
            sliding_window: self
                .meta_u("gemma3.attention.sliding_window")
                .unwrap_or(4096),
            sliding_window_pattern: self
                .meta_u("gemma3.attention.sliding_window_pattern")
                .unwrap_or(6),
            sliding_layers: None,
            query_pre_attn_scalar: qpas,
            max_position_embeddings: self.meta_u("gemma3.context_length").unwrap_or(131_072),
            norm_weight_offset: false,
        };
        cfg.validate()
            .with_context(|| format!("{}", self.path.display()))?;
        Ok(cfg)
    }

    fn info(&self, name: &str) -> Result<&candle_core::quantized::gguf_file::TensorInfo> {
        self.content
            .tensor_infos
            .get(name)
            .with_context(|| format!("{}: missing tensor {name}", self.path.display()))
    }
}

fn qtype_of(d: GgmlDType) -> Option<QType> {
    Some(match d {
        GgmlDType::F32 => QType::F32,
        GgmlDType::F16 => QType::F16,
        GgmlDType::BF16 => QType::BF16,
        GgmlDType::Q4_0 => QType::Q4_0,
        GgmlDType::Q5_0 => QType::Q5_0,
        GgmlDType::Q8_0 => QType::Q8_0,
        GgmlDType::Q4K => QType::Q4K,
        GgmlDType::Q5K => QType::Q5K,
        GgmlDType::Q6K => QType::Q6K,
        _ => return None,
    })
}

impl TensorSource for GgufFile {
    fn matrix(&self, name: &str) -> Result<Matrix> {
        let info = self.info(name)?;
        let dims = info.shape.dims();
        anyhow::ensure!(
            dims.len() == 2,
            "{name}: expected a matrix, found shape {:?}",
            dims
        );
        let (rows, cols) = (dims[0], dims[1]);
        match qtype_of(info.ggml_dtype) {
            Some(qt) => {
                let (start, len) = self.extent(info.ggml_dtype, rows * cols, info.offset);
                let data = Bytes::Mapped {
                    map: Arc::clone(&self.map),
                    start: start as usize,
                    len: len as usize,
                };
                Matrix::new(qt, rows, cols, data).with_context(|| name.to_string())
            }
            None => {
                // Rare encodings (Q2_K, Q3_K, Q4_1, ...) are re-encoded as
                // Q8_0 once, through candle's dequantizer, so every matrix
                // runs on a fast kernel.
                let values = self.dequantize(name)?;
                let t = QType::Q8_0;
                anyhow::ensure!(
                    cols % 32 == 0,
                    "{name}: {cols} columns cannot be re-encoded as Q8_0"
                );
                let mut bytes = AlignedBytes::zeroed(t.row_bytes(cols) * rows);
                for (src, dst) in values
                    .chunks_exact(cols)
                    .zip(bytes.as_bytes_mut().chunks_exact_mut(t.row_bytes(cols)))
                {
                    crate::cpu::quant::quantize_q8_0_ref(src, dst);
                }
                Matrix::new(t, rows, cols, Bytes::Owned(Arc::new(bytes)))
            }
        }
    }

    fn vector(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        let n = info.shape.elem_count();
        match qtype_of(info.ggml_dtype) {
            Some(qt @ (QType::F32 | QType::F16 | QType::BF16)) => {
                let (start, len) = self.extent(info.ggml_dtype, n, info.offset);
                let mut out = vec![0f32; n];
                crate::cpu::quant::dequantize_row(
                    qt,
                    &self.map[start as usize..(start + len) as usize],
                    &mut out,
                );
                Ok(out)
            }
            _ => self.dequantize(name),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }
}

impl GgufFile {
    fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let mut cursor = std::io::Cursor::new(&self.map[..]);
        let t = self
            .content
            .tensor(&mut cursor, name, &candle_core::Device::Cpu)
            .and_then(|q| q.dequantize(&candle_core::Device::Cpu))
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| {
                anyhow::anyhow!("{}: cannot read tensor {name}: {e}", self.path.display())
            })?;
        Ok(t)
    }
}

/// candle appends a backtrace to its errors when RUST_BACKTRACE is set; a
/// user needs only the message.
fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}
