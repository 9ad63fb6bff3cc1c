//! Hugging Face checkpoints: a folder with `config.json` and
//! `model.safetensors` (or the shards named by
//! `model.safetensors.index.json`). Weights are read in place from memory
//! maps under their GGUF names, so the forward pass does not know which
//! format it runs on.
//!
//! Both Gemma 3 layouts load: the text-only `Gemma3ForCausalLM` (270M, 1B)
//! and the multimodal `Gemma3ForConditionalGeneration` (4B and larger),
//! whose language model lives under a `language_model` prefix and whose
//! vision tower is never touched.

use super::config::Config;
use super::weights::TensorSource;
use super::Gemma3;
use crate::cpu::matmul::{AlignedBytes, Bytes};
use crate::cpu::{Matrix, QType};
use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, TensorInfo};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The type weight matrices are computed in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// Exact for every stored type; twice the memory of bf16 weights.
    #[default]
    F32,
    F16,
    /// The form official checkpoints are stored in: read in place.
    Bf16,
}

impl DType {
    fn qtype(self) -> QType {
        match self {
            DType::F32 => QType::F32,
            DType::F16 => QType::F16,
            DType::Bf16 => QType::BF16,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
        })
    }
}

impl std::str::FromStr for DType {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(DType::F32),
            "f16" | "float16" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::Bf16),
            _ => bail!("unknown dtype `{s}` (f32, f16 or bf16)"),
        }
    }
}

pub const CONFIG: &str = "config.json";
pub const SINGLE: &str = "model.safetensors";
pub const INDEX: &str = "model.safetensors.index.json";

/// Whether `path` is a Hugging Face model folder.
pub fn is_model_dir(path: &Path) -> bool {
    path.is_dir() && path.join(CONFIG).is_file()
}

/// Loads a Gemma 3 model from a Hugging Face folder, matrices in `dtype`.
pub fn load(dir: &Path, dtype: DType) -> Result<Gemma3> {
    let model = SafetensorsModel::open(dir, dtype)?;
    Gemma3::new(model.config.clone(), &model)
        .with_context(|| format!("cannot load {}", dir.display()))
}

// ---------------------------------------------------------------------------
// config.json

/// What `config.json` says beyond the architecture numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    pub config: Config,
    /// `Gemma3ForConditionalGeneration`: text weights under a
    /// `language_model` prefix, next to a vision tower.
    pub multimodal: bool,
    pub tie_word_embeddings: bool,
}

/// The fields of `Gemma3TextConfig` we read; absent ones take the values
/// `transformers` publishes as its defaults.
#[derive(Debug, Default, Deserialize)]
struct TextConfig {
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_local_base_freq: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    /// transformers 5 spells the rope settings per attention type here.
    rope_parameters: Option<serde_json::Value>,
    sliding_window: Option<usize>,
    sliding_window_pattern: Option<usize>,
    #[serde(rename = "_sliding_window_pattern")]
    sliding_window_pattern_legacy: Option<usize>,
    layer_types: Option<Vec<String>>,
    query_pre_attn_scalar: Option<f64>,
    max_position_embeddings: Option<usize>,
    hidden_activation: Option<String>,
    final_logit_softcapping: Option<f64>,
    attn_logit_softcapping: Option<f64>,
    attention_bias: Option<bool>,
    use_bidirectional_attention: Option<bool>,
    tie_word_embeddings: Option<bool>,
}

/// Parses `config.json`: the architecture check, then the text model's
/// numbers (`text_config` for the multimodal models).
pub fn parse_config(text: &str) -> Result<HfConfig> {
    let v: serde_json::Value =
        serde_json::from_str(text).context("config.json is not valid JSON")?;
    let model_type = v.get("model_type").and_then(|m| m.as_str()).unwrap_or("");
    let archs: Vec<&str> = v
        .get("architectures")
        .and_then(|a| a.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let multimodal = model_type == "gemma3"
        || archs.contains(&"Gemma3ForConditionalGeneration")
        || (model_type.is_empty() && v.get("text_config").is_some());
    let text_only = model_type == "gemma3_text"
        || archs.contains(&"Gemma3ForCausalLM")
        || archs.contains(&"Gemma3TextModel");
    if !multimodal && !text_only {
        let what = match (model_type, archs.first()) {
            ("", None) => "names no model_type or architectures".to_string(),
            ("", Some(a)) => format!("describes a {a} model"),
            (t, None) => format!("describes a `{t}` model"),
            (t, Some(a)) => format!("describes a `{t}` model ({a})"),
        };
        bail!("config.json {what}; chimera runs Gemma 3 (`gemma3_text` or `gemma3`) models");
    }
    let tc: TextConfig = if multimodal {
        match v.get("text_config") {
            Some(t) if !t.is_null() => {
                serde_json::from_value(t.clone()).context("config.json: bad text_config")?
            }
            _ => TextConfig::default(),
        }
    } else {
        serde_json::from_value(v.clone()).context("config.json: bad field")?
    };
    // Multimodal configs keep the tie flag at the top level.
    let tie = tc
        .tie_word_embeddings
        .or_else(|| v.get("tie_word_embeddings").and_then(|t| t.as_bool()))
        .unwrap_or(true);
    Ok(HfConfig {
        config: text_config(&tc)?,
        multimodal,
        tie_word_embeddings: tie,
    })
}

fn text_config(tc: &TextConfig) -> Result<Config> {
    if let Some(act) = &tc.hidden_activation {
        anyhow::ensure!(
            act == "gelu_pytorch_tanh",
            "config.json: hidden_activation `{act}` is not supported (Gemma 3 uses gelu_pytorch_tanh)"
        );
    }
    for (name, v) in [
        ("final_logit_softcapping", tc.final_logit_softcapping),
        ("attn_logit_softcapping", tc.attn_logit_softcapping),
    ] {
        anyhow::ensure!(
            v.is_none(),
            "config.json: {name} is set, which Gemma 3 does not use (a Gemma 2 checkpoint?)"
        );
    }
    anyhow::ensure!(
        tc.attention_bias != Some(true),
        "config.json: attention_bias is not supported"
    );
    anyhow::ensure!(
        tc.use_bidirectional_attention != Some(true),
        "config.json: bidirectional attention (an embedding model) is not supported"
    );

    let layers = tc.num_hidden_layers.unwrap_or(26);
    let pattern_default = tc
        .sliding_window_pattern
        .or(tc.sliding_window_pattern_legacy)
        .unwrap_or(6);
    let (sliding_window_pattern, sliding_layers) = match &tc.layer_types {
        Some(types) => sliding_from_layer_types(types, layers, pattern_default)?,
        None => (pattern_default, None),
    };

    let mut rope_theta = tc.rope_theta.unwrap_or(1_000_000.0);
    let mut rope_local = tc.rope_local_base_freq.unwrap_or(10_000.0);
    let mut scaling = rope_factor(tc.rope_scaling.as_ref())?;
    if let Some(p) = tc.rope_parameters.as_ref().filter(|p| p.is_object()) {
        if let Some(full) = p.get("full_attention") {
            if let Some(t) = full.get("rope_theta").and_then(|t| t.as_f64()) {
                rope_theta = t;
            }
            if tc.rope_scaling.is_none() {
                scaling = rope_factor(Some(full))?;
            }
        }
        if let Some(t) = p
            .get("sliding_attention")
            .and_then(|s| s.get("rope_theta"))
            .and_then(|t| t.as_f64())
        {
            rope_local = t;
        }
    }

    let cfg = Config {
        vocab_size: tc.vocab_size.unwrap_or(262_208),
        hidden_size: tc.hidden_size.unwrap_or(2304),
        intermediate_size: tc.intermediate_size.unwrap_or(9216),
        num_hidden_layers: layers,
        num_attention_heads: tc.num_attention_heads.unwrap_or(8),
        num_key_value_heads: tc.num_key_value_heads.unwrap_or(4),
        head_dim: tc.head_dim.unwrap_or(256),
        rms_norm_eps: tc.rms_norm_eps.unwrap_or(1e-6) as f32,
        rope_theta: rope_theta as f32,
        rope_local_base_freq: rope_local as f32,
        rope_scaling_factor: scaling as f32,
        sliding_window: tc.sliding_window.unwrap_or(4096),
        sliding_window_pattern,
        sliding_layers,
        query_pre_attn_scalar: tc.query_pre_attn_scalar.unwrap_or(256.0) as f32,
        max_position_embeddings: tc.max_position_embeddings.unwrap_or(131_072),
        norm_weight_offset: true,
    };
    cfg.validate().context("config.json")?;
    Ok(cfg)
}

/// The linear factor of a `rope_scaling` (or per-type `rope_parameters`)
/// object; 1 when there is none.
fn rope_factor(v: Option<&serde_json::Value>) -> Result<f64> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(1.0);
    };
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("linear");
    match kind {
        "default" => Ok(1.0),
        "linear" => v
            .get("factor")
            .and_then(|f| f.as_f64())
            .context("config.json: linear rope_scaling without a factor"),
        other => bail!(
            "config.json: rope_scaling `{other}` is not supported (Gemma 3 uses linear scaling)"
        ),
    }
}

/// `layer_types` as `Config` holds them: the period of the global layers
/// when there is one (0: every layer slides), else per-layer flags.
fn sliding_from_layer_types(
    types: &[String],
    layers: usize,
    fallback_pattern: usize,
) -> Result<(usize, Option<Vec<bool>>)> {
    anyhow::ensure!(
        types.len() == layers,
        "config.json: layer_types lists {} layers but num_hidden_layers is {layers}",
        types.len()
    );
    let flags: Vec<bool> = types
        .iter()
        .map(|t| match t.as_str() {
            "sliding_attention" => Ok(true),
            "full_attention" => Ok(false),
            other => bail!("config.json: unknown layer type `{other}`"),
        })
        .collect::<Result<_>>()?;
    if flags.iter().all(|&s| s) {
        return Ok((0, None));
    }
    for p in 1..=layers {
        if flags
            .iter()
            .enumerate()
            .all(|(i, &s)| s == ((i + 1) % p != 0))
        {
            return Ok((p, None));
        }
    }
    Ok((fallback_pattern, Some(flags)))
}

/// Reads and checks `dir/config.json`.
pub fn read_config(dir: &Path) -> Result<HfConfig> {
    let path = dir.join(CONFIG);
    if !path.is_file() {
        bail!(
            "{} has no config.json: not a Hugging Face model folder (chimera loads a .gguf file or a folder with config.json and *.safetensors)",
            dir.display()
        );
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    parse_config(&text).with_context(|| format!("{}", dir.display()))
}

/// The weight files of a folder: the shards its index names, or the single
/// `model.safetensors`. Names only; they may not exist yet.
pub fn weight_files_from_index(index_json: &str) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let idx: Index =
        serde_json::from_str(index_json).context("bad model.safetensors.index.json")?;
    let files: BTreeSet<String> = idx.weight_map.into_values().collect();
    anyhow::ensure!(
        !files.is_empty(),
        "model.safetensors.index.json lists no weights"
    );
    for f in &files {
        anyhow::ensure!(
            !f.contains('/') && !f.contains('\\') && f != "..",
            "model.safetensors.index.json names a file outside the folder: {f}"
        );
    }
    Ok(files.into_iter().collect())
}

fn weight_files(dir: &Path) -> Result<Vec<String>> {
    let index = dir.join(INDEX);
    if index.is_file() {
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("cannot read {}", index.display()))?;
        return weight_files_from_index(&text).with_context(|| format!("{}", dir.display()));
    }
    if dir.join(SINGLE).is_file() {
        return Ok(vec![SINGLE.to_string()]);
    }
    bail!(
        "{} has config.json but no {SINGLE} or {INDEX}",
        dir.display()
    )
}

// ---------------------------------------------------------------------------
// Tensors

struct Shard {
    path: PathBuf,
    map: Arc<memmap2::Mmap>,
    /// Where tensor data starts: after the 8-byte length and the header.
    data_start: usize,
}

/// A Hugging Face Gemma 3 checkpoint as a [`TensorSource`].
pub struct SafetensorsModel {
    dir: PathBuf,
    config: Config,
    shards: Vec<Shard>,
    tensors: HashMap<String, (usize, TensorInfo)>,
    /// `model.`, or where the multimodal models keep the language model.
    prefix: String,
    /// An untied output projection.
    lm_head: Option<String>,
    dtype: DType,
}

impl SafetensorsModel {
    pub fn open(dir: &Path, dtype: DType) -> Result<Self> {
        let hf = read_config(dir)?;
        let mut shards = Vec::new();
        let mut tensors = HashMap::new();
        for name in weight_files(dir)? {
            let path = dir.join(&name);
            if !path.is_file() {
                bail!(
                    "{}: shard {name} is missing ({INDEX} lists it; incomplete download?)",
                    dir.display()
                );
            }
            let file = std::fs::File::open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            // SAFETY: read-only map; a file truncated underneath us would
            // fault, the risk every mmap-based loader accepts.
            let map = unsafe { memmap2::Mmap::map(&file) }
                .with_context(|| format!("cannot map {}", path.display()))?;
            // Checks every tensor lies inside the file: a truncated shard
            // fails here, not as a fault mid-forward.
            let (header, meta) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not a valid safetensors file: {e} (incomplete download?)",
                    path.display()
                )
            })?;
            let idx = shards.len();
            for (tname, info) in meta.tensors() {
                tensors.insert(tname, (idx, info.clone()));
            }
            shards.push(Shard {
                path,
                map: Arc::new(map),
                data_start: 8 + header,
            });
        }
        let prefix = ["model.", "language_model.model.", "model.language_model.", ""]
            .into_iter()
            .find(|p| tensors.contains_key(&format!("{p}embed_tokens.weight")))
            .with_context(|| {
                format!(
                    "{}: no embed_tokens.weight tensor (looked for model.embed_tokens.weight and the multimodal layouts)",
                    dir.display()
                )
            })?
            .to_string();
        let lm_head = if hf.tie_word_embeddings {
            None
        } else {
            Some(
                ["lm_head.weight", "language_model.lm_head.weight"]
                    .into_iter()
                    .find(|n| tensors.contains_key(*n))
                    .with_context(|| {
                        format!(
                            "{}: tie_word_embeddings is false but there is no lm_head.weight",
                            dir.display()
                        )
                    })?
                    .to_string(),
            )
        };
        let mut config = hf.config;
        // The embedding table decides the vocabulary, as for GGUF files.
        let (_, embd) = &tensors[&format!("{prefix}embed_tokens.weight")];
        config.vocab_size = embd.shape.first().copied().unwrap_or(0);
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            shards,
            tensors,
            prefix,
            lm_head,
            dtype,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of all weight files (the vision tower included, when there is
    /// one).
    pub fn file_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.map.len() as u64).sum()
    }

    /// The Hugging Face name of a GGUF-named tensor.
    fn hf_name(&self, gguf: &str) -> Option<String> {
        let p = &self.prefix;
        match gguf {
            "token_embd.weight" => return Some(format!("{p}embed_tokens.weight")),
            "output_norm.weight" => return Some(format!("{p}norm.weight")),
            "output.weight" => return self.lm_head.clone(),
            _ => {}
        }
        let (layer, t) = gguf.strip_prefix("blk.")?.split_once('.')?;
        let hf = match t {
            "attn_norm.weight" => "input_layernorm.weight",
            "attn_q.weight" => "self_attn.q_proj.weight",
            "attn_k.weight" => "self_attn.k_proj.weight",
            "attn_v.weight" => "self_attn.v_proj.weight",
            "attn_q_norm.weight" => "self_attn.q_norm.weight",
            "attn_k_norm.weight" => "self_attn.k_norm.weight",
            "attn_output.weight" => "self_attn.o_proj.weight",
            "post_attention_norm.weight" => "post_attention_layernorm.weight",
            "ffn_norm.weight" => "pre_feedforward_layernorm.weight",
            "ffn_gate.weight" => "mlp.gate_proj.weight",
            "ffn_up.weight" => "mlp.up_proj.weight",
            "ffn_down.weight" => "mlp.down_proj.weight",
            "post_ffw_norm.weight" => "post_feedforward_layernorm.weight",
            _ => return None,
        };
        Some(format!("{p}layers.{layer}.{hf}"))
    }

    /// Where a GGUF-named tensor is stored, and as what.
    fn locate(&self, name: &str) -> Result<Stored<'_>> {
        let hf = self
            .hf_name(name)
            .with_context(|| format!("{}: no tensor for {name}", self.dir.display()))?;
        let (shard, info) = self
            .tensors
            .get(&hf)
            .with_context(|| format!("{}: missing tensor {hf}", self.dir.display()))?;
        let s = &self.shards[*shard];
        let qtype = match info.dtype {
            Dtype::F32 => QType::F32,
            Dtype::F16 => QType::F16,
            Dtype::BF16 => QType::BF16,
            other => bail!(
                "{}: tensor {hf} is stored as {other}; chimera reads f32, f16 and bf16 safetensors",
                s.path.display()
            ),
        };
        let (a, b) = info.data_offsets;
        Ok(Stored {
            map: &s.map,
            start: s.data_start + a,
            len: b - a,
            qtype,
            shape: &info.shape,
        })
    }
}

struct Stored<'a> {
    map: &'a Arc<memmap2::Mmap>,
    start: usize,
    len: usize,
    qtype: QType,
    shape: &'a [usize],
}

impl Stored<'_> {
    fn bytes(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }
}

impl TensorSource for SafetensorsModel {
    fn matrix(&self, name: &str) -> Result<Matrix> {
        let t = self.locate(name)?;
        anyhow::ensure!(
            t.shape.len() == 2,
            "{name}: expected a matrix, found shape {:?}",
            t.shape
        );
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let want = self.dtype.qtype();
        let data = if t.qtype == want {
            Bytes::Mapped {
                map: Arc::clone(t.map),
                start: t.start,
                len: t.len,
            }
        } else {
            Bytes::Owned(Arc::new(convert(t.bytes(), t.qtype, want, rows * cols)))
        };
        Matrix::new(want, rows, cols, data).with_context(|| name.to_string())
    }

    fn vector(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.locate(name)?;
        let mut out = vec![0f32; t.shape.iter().product()];
        crate::cpu::quant::dequantize_row(t.qtype, t.bytes(), &mut out);
        Ok(out)
    }

    fn has(&self, name: &str) -> bool {
        self.hf_name(name)
            .is_some_and(|hf| self.tensors.contains_key(&hf))
    }

    /// Hugging Face Gemma checkpoints store RMSNorm weights as `w - 1`.
    fn norm_offset(&self) -> f32 {
        1.0
    }
}

/// `n` values of type `from` re-encoded as `to`, on every core (a 27B
/// model is 27 billion values).
fn convert(src: &[u8], from: QType, to: QType, n: usize) -> AlignedBytes {
    let (fs, ts) = (elem_bytes(from), elem_bytes(to));
    let mut out = AlignedBytes::zeroed(n * ts);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let per = n.div_ceil(threads).max(1 << 16);
    std::thread::scope(|s| {
        for (src, dst) in src
            .chunks(per * fs)
            .zip(out.as_bytes_mut().chunks_mut(per * ts))
        {
            s.spawn(move || {
                let mut tmp = vec![0f32; 4096];
                for (src, dst) in src.chunks(4096 * fs).zip(dst.chunks_mut(4096 * ts)) {
                    let vals = &mut tmp[..src.len() / fs];
                    crate::cpu::quant::dequantize_row(from, src, vals);
                    for (v, d) in vals.iter().zip(dst.chunks_exact_mut(ts)) {
                        match to {
                            QType::F32 => d.copy_from_slice(&v.to_le_bytes()),
                            QType::F16 => {
                                d.copy_from_slice(&half::f16::from_f32(*v).to_bits().to_le_bytes())
                            }
                            _ => {
                                d.copy_from_slice(&half::bf16::from_f32(*v).to_bits().to_le_bytes())
                            }
                        }
                    }
                }
            });
        }
    });
    out
}

fn elem_bytes(t: QType) -> usize {
    match t {
        QType::F32 => 4,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// google/gemma-3-270m's config.json.
    const GEMMA3_270M: &str = r#"{
      "_sliding_window_pattern": 6,
      "architectures": ["Gemma3ForCausalLM"],
      "attention_bias": false, "attention_dropout": 0.0, "attn_logit_softcapping": null,
      "bos_token_id": 2, "eos_token_id": 1, "final_logit_softcapping": null,
      "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 640,
      "initializer_range": 0.02, "intermediate_size": 2048,
      "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention",
        "sliding_attention", "sliding_attention", "full_attention", "sliding_attention",
        "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention",
        "full_attention", "sliding_attention", "sliding_attention", "sliding_attention",
        "sliding_attention", "sliding_attention", "full_attention"],
      "max_position_embeddings": 32768, "model_type": "gemma3_text",
      "num_attention_heads": 4, "num_hidden_layers": 18, "num_key_value_heads": 1,
      "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
      "rope_local_base_freq": 10000.0, "rope_scaling": null, "rope_theta": 1000000.0,
      "sliding_window": 512, "torch_dtype": "bfloat16", "transformers_version": "4.55.0.dev0",
      "use_bidirectional_attention": false, "use_cache": true, "vocab_size": 262144
    }"#;

    /// google/gemma-3-4b-it's config.json (a sparse text_config: the rest
    /// are transformers' defaults).
    const GEMMA3_4B_IT: &str = r#"{
      "architectures": ["Gemma3ForConditionalGeneration"],
      "boi_token_index": 255999, "eoi_token_index": 256000,
      "eos_token_id": [1, 106], "image_token_index": 262144,
      "initializer_range": 0.02, "mm_tokens_per_image": 256, "model_type": "gemma3",
      "text_config": {
        "hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
        "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024
      },
      "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
      "vision_config": {"hidden_size": 1152, "model_type": "siglip_vision_model"}
    }"#;

    #[test]
    fn text_config_of_the_270m() {
        let hf = parse_config(GEMMA3_270M).unwrap();
        assert!(!hf.multimodal && hf.tie_word_embeddings);
        let c = hf.config;
        assert_eq!(
            (
                c.hidden_size,
                c.num_hidden_layers,
                c.num_attention_heads,
                c.num_key_value_heads
            ),
            (640, 18, 4, 1)
        );
        assert_eq!(
            (c.head_dim, c.sliding_window, c.sliding_window_pattern),
            (256, 512, 6)
        );
        assert_eq!(c.sliding_layers, None);
        assert_eq!(
            (c.rope_theta, c.rope_local_base_freq, c.rope_scaling_factor),
            (1e6, 1e4, 1.0)
        );
        assert_eq!(c.query_pre_attn_scalar, 256.0);
        assert!(c.norm_weight_offset);
        assert!(c.is_sliding(4) && !c.is_sliding(5) && !c.is_sliding(17));
    }

    #[test]
    fn multimodal_configs_give_their_text_model_with_published_defaults() {
        let hf = parse_config(GEMMA3_4B_IT).unwrap();
        assert!(hf.multimodal && hf.tie_word_embeddings);
        let c = hf.config;
        assert_eq!(
            (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
            (2560, 10240, 34)
        );
        assert_eq!(
            (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
            (8, 4, 256)
        );
        assert_eq!(
            (c.rope_scaling_factor, c.sliding_window, c.vocab_size),
            (8.0, 1024, 262_208)
        );
        assert_eq!(c.query_pre_attn_scalar, 256.0);
    }

    #[test]
    fn irregular_layer_types_become_per_layer_flags() {
        let mut v: serde_json::Value = serde_json::from_str(GEMMA3_270M).unwrap();
        v["num_hidden_layers"] = 4.into();
        v["layer_types"] = serde_json::json!([
            "sliding_attention",
            "full_attention",
            "sliding_attention",
            "sliding_attention"
        ]);
        let c = parse_config(&v.to_string()).unwrap().config;
        assert_eq!(c.sliding_layers, Some(vec![true, false, true, true]));
        assert!(c.is_sliding(0) && !c.is_sliding(1) && c.is_sliding(3));
        v["layer_types"] = serde_json::Value::from(vec!["sliding_attention"; 4]);
        let c = parse_config(&v.to_string()).unwrap().config;
        assert_eq!(
            (c.sliding_window_pattern, c.sliding_layers.clone()),
            (0, None)
        );
        assert!((0..4).all(|l| c.is_sliding(l)));
        v["layer_types"] = serde_json::Value::from(vec!["full_attention"; 4]);
        let c = parse_config(&v.to_string()).unwrap().config;
        assert_eq!(c.sliding_window_pattern, 1);
        assert!((0..4).all(|l| !c.is_sliding(l)));
        v["layer_types"] = serde_json::Value::from(vec!["full_attention"; 3]);
        let err = parse_config(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("layer_types lists 3 layers"), "{err}");
    }

    #[test]
    fn other_architectures_and_unsupported_settings_are_refused() {
        let err = parse_config(r#"{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`llama` model (LlamaForCausalLM)"), "{err}");
        let err = parse_config("{}").unwrap_err().to_string();
        assert!(err.contains("names no model_type"), "{err}");
        let mut v: serde_json::Value = serde_json::from_str(GEMMA3_270M).unwrap();
        v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
        let err = parse_config(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("rope_scaling `yarn`"), "{err}");
        v["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 4.0});
        assert_eq!(
            parse_config(&v.to_string())
                .unwrap()
                .config
                .rope_scaling_factor,
            4.0
        );
        v["final_logit_softcapping"] = 30.0.into();
        assert!(parse_config(&v.to_string()).is_err());
    }

    #[test]
    fn index_files_name_their_shards_once() {
        let idx = r#"{"metadata": {"total_size": 1}, "weight_map": {
            "a": "model-00002-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
            "c": "model-00001-of-00002.safetensors"}}"#;
        assert_eq!(
            weight_files_from_index(idx).unwrap(),
            [
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
        let bad = r#"{"weight_map": {"a": "../../etc/passwd"}}"#;
        assert!(weight_files_from_index(bad).is_err());
    }

    #[test]
    fn conversions_round_trip_through_f32() {
        let vals: Vec<f32> = (0..70_000)
            .map(|i| (i as f32 - 35_000.0) / 1024.0)
            .collect();
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bf = convert(&bytes, QType::F32, QType::BF16, vals.len());
        let back = convert(bf.as_bytes(), QType::BF16, QType::F32, vals.len());
        for (i, (a, b)) in vals
            .chunks(1)
            .zip(back.as_bytes().chunks_exact(4))
            .enumerate()
        {
            let b = f32::from_le_bytes(b.try_into().unwrap());
            assert_eq!(half::bf16::from_f32(a[0]).to_f32(), b, "value {i}");
        }
    }
}
