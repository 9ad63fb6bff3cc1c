//! A tiny Gemma 3 with random weights, written by the tests themselves: as
//! GGUF (what chimera loads) and as Hugging Face tensors (what
//! candle-transformers' own Gemma 3 loads), plus a word-level tokenizer.

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use chimera::model::Config;
use std::collections::HashMap;
use std::path::Path;

/// Tensors in GGUF naming; norm weights as GGUF stores them (the full
/// scale, not Hugging Face's offset from 1).
pub struct Tiny {
    pub cfg: Config,
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

fn rand_vec(n: usize, seed: &mut u64, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
        })
        .collect()
}

impl Tiny {
    pub fn random(cfg: Config, seed: u64) -> Self {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let (h, i, qd, kd, hd) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.head_dim,
        );
        let mut t = vec![(
            "token_embd.weight".to_string(),
            vec![cfg.vocab_size, h],
            rand_vec(cfg.vocab_size * h, &mut s, 0.5),
        )];
        let norm = |s: &mut u64, n: usize| {
            rand_vec(n, s, 0.2)
                .iter()
                .map(|v| 1.0 + v)
                .collect::<Vec<f32>>()
        };
        for l in 0..cfg.num_hidden_layers {
            let p = format!("blk.{l}");
            let w =
                |s: &mut u64, r: usize, c: usize| rand_vec(r * c, s, (1.0 / c as f32).sqrt() * 1.7);
            t.push((format!("{p}.attn_norm.weight"), vec![h], norm(&mut s, h)));
            t.push((format!("{p}.attn_q.weight"), vec![qd, h], w(&mut s, qd, h)));
            t.push((format!("{p}.attn_k.weight"), vec![kd, h], w(&mut s, kd, h)));
            t.push((format!("{p}.attn_v.weight"), vec![kd, h], w(&mut s, kd, h)));
            t.push((
                format!("{p}.attn_q_norm.weight"),
                vec![hd],
                norm(&mut s, hd),
            ));
            t.push((
                format!("{p}.attn_k_norm.weight"),
                vec![hd],
                norm(&mut s, hd),
            ));
            t.push((
                format!("{p}.attn_output.weight"),
                vec![h, qd],
                w(&mut s, h, qd),
            ));
            t.push((
                format!("{p}.post_attention_norm.weight"),
                vec![h],
                norm(&mut s, h),
            ));
            t.push((format!("{p}.ffn_norm.weight"), vec![h], norm(&mut s, h)));
            t.push((format!("{p}.ffn_gate.weight"), vec![i, h], w(&mut s, i, h)));
            t.push((format!("{p}.ffn_up.weight"), vec![i, h], w(&mut s, i, h)));
            t.push((format!("{p}.ffn_down.weight"), vec![h, i], w(&mut s, h, i)));
            t.push((
                format!("{p}.post_ffw_norm.weight"),
                vec![h],
                norm(&mut s, h),
            ));
        }
        t.push(("output_norm.weight".to_string(), vec![h], norm(&mut s, h)));
        Self { cfg, tensors: t }
    }

    pub fn get_mut(&mut self, name: &str) -> &mut Vec<f32> {
        &mut self.tensors.iter_mut().find(|t| t.0 == name).expect(name).2
    }

    /// Writes the model as a GGUF file with matrices in `dtype` (norms stay
    /// f32), with the `gemma3.*` metadata a converter writes.
    pub fn write_gguf(&self, path: &Path, dtype: GgmlDType) {
        let c = &self.cfg;
        let u = |v: usize| Value::U32(v as u32);
        let meta: Vec<(&str, Value)> = vec![
            ("general.architecture", Value::String("gemma3".into())),
            ("gemma3.context_length", u(c.max_position_embeddings)),
            ("gemma3.embedding_length", u(c.hidden_size)),
            ("gemma3.block_count", u(c.num_hidden_layers)),
            ("gemma3.feed_forward_length", u(c.intermediate_size)),
            ("gemma3.attention.head_count", u(c.num_attention_heads)),
            ("gemma3.attention.head_count_kv", u(c.num_key_value_heads)),
            ("gemma3.attention.key_length", u(c.head_dim)),
            ("gemma3.attention.value_length", u(c.head_dim)),
            (
                "gemma3.attention.layer_norm_rms_epsilon",
                Value::F32(c.rms_norm_eps),
            ),
            ("gemma3.rope.freq_base", Value::F32(c.rope_theta)),
            ("gemma3.attention.sliding_window", u(c.sliding_window)),
            (
                "gemma3.attention.sliding_window_pattern",
                u(c.sliding_window_pattern),
            ),
        ];
        let qts: Vec<(String, QTensor)> = self
            .tensors
            .iter()
            .map(|(name, shape, data)| {
                let t = Tensor::from_vec(data.clone(), shape.as_slice(), &Device::Cpu).unwrap();
                let dt = if shape.len() == 2 {
                    dtype
                } else {
                    GgmlDType::F32
                };
                (name.clone(), QTensor::quantize(&t, dt).unwrap())
            })
            .collect();
        let mut f = std::fs::File::create(path).unwrap();
        let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
        let tensor_refs: Vec<(&str, &QTensor)> = qts.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
    }

    /// The same weights as Hugging Face names and conventions (norms stored
    /// as `w - 1`), for candle-transformers' `gemma3::Model`.
    pub fn hf_tensors(&self) -> HashMap<String, Tensor> {
        let mut m = HashMap::new();
        for (name, shape, data) in &self.tensors {
            let (hf, is_norm) = hf_name(name);
            let data: Vec<f32> = if is_norm {
                data.iter().map(|v| v - 1.0).collect()
            } else {
                data.clone()
            };
            m.insert(
                hf,
                Tensor::from_vec(data, shape.as_slice(), &Device::Cpu).unwrap(),
            );
        }
        m
    }

    pub fn candle_config(&self) -> candle_transformers::models::gemma3::Config {
        let c = &self.cfg;
        candle_transformers::models::gemma3::Config {
            attention_bias: false,
            head_dim: c.head_dim,
            hidden_activation: candle_nn::Activation::GeluPytorchTanh,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_attention_heads: c.num_attention_heads,
            num_hidden_layers: c.num_hidden_layers,
            num_key_value_heads: c.num_key_value_heads,
            rms_norm_eps: c.rms_norm_eps as f64,
            rope_theta: c.rope_theta as f64,
            rope_local_base_freq: c.rope_local_base_freq as f64,
            vocab_size: c.vocab_size,
            final_logit_softcapping: None,
            attn_logit_softcapping: None,
            query_pre_attn_scalar: c.query_pre_attn_scalar as usize,
            sliding_window: c.sliding_window,
            sliding_window_pattern: c.sliding_window_pattern,
            max_position_embeddings: c.max_position_embeddings,
        }
    }
}

/// GGUF name to Hugging Face name, and whether it is a norm weight.
pub fn hf_name(gguf: &str) -> (String, bool) {
    match gguf {
        "token_embd.weight" => ("model.embed_tokens.weight".into(), false),
        "output_norm.weight" => ("model.norm.weight".into(), true),
        _ => {
            let rest = gguf.strip_prefix("blk.").unwrap();
            let (l, t) = rest.split_once('.').unwrap();
            let (hf, norm) = match t {
                "attn_norm.weight" => ("input_layernorm.weight", true),
                "attn_q.weight" => ("self_attn.q_proj.weight", false),
                "attn_k.weight" => ("self_attn.k_proj.weight", false),
                "attn_v.weight" => ("self_attn.v_proj.weight", false),
                "attn_q_norm.weight" => ("self_attn.q_norm.weight", true),
                "attn_k_norm.weight" => ("self_attn.k_norm.weight", true),
                "attn_output.weight" => ("self_attn.o_proj.weight", false),
                "post_attention_norm.weight" => ("post_attention_layernorm.weight", true),
                "ffn_norm.weight" => ("pre_feedforward_layernorm.weight", true),
                "ffn_gate.weight" => ("mlp.gate_proj.weight", false),
                "ffn_up.weight" => ("mlp.up_proj.weight", false),
                "ffn_down.weight" => ("mlp.down_proj.weight", false),
                "post_ffw_norm.weight" => ("post_feedforward_layernorm.weight", true),
                other => panic!("unknown tensor {other}"),
            };
            (format!("model.layers.{l}.{hf}"), norm)
        }
    }
}

/// A word-level tokenizer over `vocab` ids: Gemma's special tokens at their
/// usual ids, `specials` placed at other ids on request, and words `w<id>`
/// (each followed by a space) elsewhere.
pub fn tokenizer(vocab: usize, specials: &[(&str, u32)]) -> chimera::model::Tokenizer {
    let inner: tokenizers::Tokenizer = tokenizer_json(vocab, specials)
        .parse()
        .expect("tiny tokenizer parses");
    chimera::model::Tokenizer::from_tokenizer(inner).unwrap()
}

/// The `tokenizer.json` text of [`tokenizer`].
pub fn tokenizer_json(vocab: usize, specials: &[(&str, u32)]) -> String {
    let mut names: Vec<String> = (0..vocab).map(|i| format!("w{i} ")).collect();
    for (name, id) in [
        ("<pad>", 0u32),
        ("<eos>", 1),
        ("<bos>", 2),
        ("<unk>", 3),
        ("<start_of_turn>", 105),
        ("<end_of_turn>", 106),
    ]
    .iter()
    .copied()
    .filter(|(n, _)| !specials.iter().any(|(s, _)| s == n))
    .chain(specials.iter().copied())
    {
        names[id as usize] = name.to_string();
    }
    let vocab_json: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), serde_json::json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| n.starts_with('<'))
        .map(|(i, n)| serde_json::json!({"id": i, "content": n, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    let bos = names.iter().position(|n| n == "<bos>").unwrap();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "w\\d+ "}, "behavior": "Isolated", "invert": false},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<bos>": {"id": "<bos>", "ids": [bos], "tokens": ["<bos>"]}}
        },
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": vocab_json, "unk_token": "<unk>"}
    });
    json.to_string()
}
