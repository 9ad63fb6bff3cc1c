//! Hugging Face checkpoints (config.json + safetensors) against GGUF files
//! of the same tiny random Gemma 3: the same logits whatever the format,
//! layout, sharding or compute type; and one clear error line for every way
//! a folder or repo can be wrong.

mod common;

use candle_core::quantized::GgmlDType;
use candle_core::{DType as CDType, Tensor};
use chimera::model::gemma3::{Batch, BatchKind, Runtime, Scratch};
use chimera::model::safetensors::DType;
use chimera::model::{load_gguf, load_with, Config, Gemma3, KvCache};
use common::tiny::Tiny;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Logits of every position, the whole sequence in one batch.
fn logits(m: &Gemma3, tokens: &[u32]) -> Vec<Vec<f32>> {
    let rt = Runtime::new(2);
    let cfg = m.config();
    let mut s = Scratch::new(cfg, rt.isa, tokens.len(), 2);
    let mut caches = vec![KvCache::new(cfg, 256, tokens.len())];
    let vocab = m.vocab_size();
    let pos: Vec<usize> = (0..tokens.len()).collect();
    let mut out = vec![0f32; tokens.len() * vocab];
    let b = Batch {
        tokens,
        positions: &pos,
        seqs: &vec![0; tokens.len()],
        logits_rows: &pos,
        kind: BatchKind::Prompt,
    };
    m.forward(&rt, &mut s, &b, &mut caches, &mut out).unwrap();
    out.chunks(vocab).map(|l| l.to_vec()).collect()
}

/// Past the sliding window (8), so both layer kinds matter.
fn tokens(vocab: usize) -> Vec<u32> {
    (0..40u64)
        .map(|i| (i * 2654435761 % (vocab as u64 - 10) + 10) as u32)
        .collect()
}

fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>], tol: f32, what: &str) {
    for (p, (x, y)) in a.iter().zip(b).enumerate() {
        let scale = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        let d = x
            .iter()
            .zip(y)
            .map(|(u, v)| (u - v).abs())
            .fold(0f32, f32::max);
        assert!(
            d <= tol * scale,
            "{what}, position {p}: max |diff| {d} (scale {scale})"
        );
    }
}

/// config.json as transformers writes it for a text-only Gemma 3.
fn config_json(c: &Config) -> serde_json::Value {
    let layer_types: Vec<&str> = (0..c.num_hidden_layers)
        .map(|l| {
            if c.is_sliding(l) {
                "sliding_attention"
            } else {
                "full_attention"
            }
        })
        .collect();
    serde_json::json!({
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_local_base_freq": c.rope_local_base_freq,
        "rope_scaling": null,
        "sliding_window": c.sliding_window,
        "layer_types": layer_types,
        "query_pre_attn_scalar": c.query_pre_attn_scalar,
        "max_position_embeddings": c.max_position_embeddings,
        "final_logit_softcapping": null,
        "attn_logit_softcapping": null,
        "torch_dtype": "bfloat16",
    })
}

/// Writes `tensors` as a Hugging Face folder: config.json, and one file or
/// `shards` shards with their index.
fn write_folder(
    dir: &Path,
    config: &serde_json::Value,
    tensors: HashMap<String, Tensor>,
    shards: usize,
) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    if shards == 1 {
        candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
        return;
    }
    let mut names: Vec<String> = tensors.keys().cloned().collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (i, chunk) in names.chunks(names.len().div_ceil(shards)).enumerate() {
        let file = format!("model-{:05}-of-{shards:05}.safetensors", i + 1);
        let part: HashMap<String, Tensor> = chunk
            .iter()
            .map(|n| (n.clone(), tensors[n].clone()))
            .collect();
        candle_core::safetensors::save(&part, dir.join(&file)).unwrap();
        for n in chunk {
            weight_map.insert(n.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

fn hf_tensors(t: &Tiny, dtype: CDType) -> HashMap<String, Tensor> {
    t.hf_tensors()
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(dtype).unwrap()))
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    tiny: Tiny,
}

fn fixture(seed: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    Fixture {
        _dir: dir,
        root,
        tiny: Tiny::random(Config::tiny(), seed),
    }
}

impl Fixture {
    fn gguf(&self, dtype: GgmlDType) -> Gemma3 {
        let p = self.root.join(format!("tiny-{dtype:?}.gguf"));
        self.tiny.write_gguf(&p, dtype);
        load_gguf(&p).unwrap()
    }

    fn folder(&self, name: &str, stored: CDType, shards: usize) -> PathBuf {
        let dir = self.root.join(name);
        write_folder(
            &dir,
            &config_json(&self.tiny.cfg),
            hf_tensors(&self.tiny, stored),
            shards,
        );
        dir
    }
}

#[test]
fn safetensors_and_gguf_give_the_same_model_and_logits() {
    let f = fixture(11);
    let toks = tokens(f.tiny.cfg.vocab_size);
    for (stored, gguf, tol) in [
        (CDType::F32, GgmlDType::F32, 1e-4),
        (CDType::F16, GgmlDType::F16, 5e-3),
    ] {
        let dir = f.folder(&format!("hf-{stored:?}"), stored, 1);
        let dtype = if stored == CDType::F32 {
            DType::F32
        } else {
            DType::F16
        };
        let ours = load_with(&dir, dtype).unwrap();
        let reference = f.gguf(gguf);
        assert_eq!(
            ours.config(),
            &Config {
                norm_weight_offset: true,
                ..reference.config().clone()
            }
        );
        // Same matrices (norms differ by Hugging Face's `w - 1` rounding).
        assert_close(
            &logits(&ours, &toks),
            &logits(&reference, &toks),
            tol,
            &format!("{stored:?}"),
        );
    }
}

#[test]
fn bf16_checkpoints_run_in_place_or_converted() {
    let f = fixture(12);
    let toks = tokens(f.tiny.cfg.vocab_size);
    let dir = f.folder("hf-bf16", CDType::BF16, 1);
    let reference = logits(&f.gguf(GgmlDType::F32), &toks);
    let in_place = logits(&load_with(&dir, DType::Bf16).unwrap(), &toks);
    let as_f32 = logits(&load_with(&dir, DType::F32).unwrap(), &toks);
    let as_f16 = logits(&load_with(&dir, DType::F16).unwrap(), &toks);
    // bf16 widens to f32 exactly: the two differ only in how the kernels
    // accumulate.
    assert_close(&in_place, &as_f32, 1e-3, "bf16 in place vs f32");
    assert_close(&as_f16, &as_f32, 5e-3, "f16 vs f32");
    // Against the f32 weights: bf16's 8-bit mantissa.
    assert_close(&as_f32, &reference, 0.05, "bf16 vs the f32 original");
    // The default is f32.
    assert_eq!(logits(&chimera::model::load(&dir).unwrap(), &toks), as_f32);
}

#[test]
fn shards_and_the_multimodal_layout_load_the_same_weights() {
    let f = fixture(13);
    let toks = tokens(f.tiny.cfg.vocab_size);
    let single = logits(
        &load_with(&f.folder("single", CDType::F32, 1), DType::F32).unwrap(),
        &toks,
    );
    let sharded = logits(
        &load_with(&f.folder("sharded", CDType::F32, 3), DType::F32).unwrap(),
        &toks,
    );
    assert_eq!(single, sharded);

    // Gemma3ForConditionalGeneration: the text model under
    // `language_model.`, its numbers in text_config, a vision tower beside.
    let mut tensors: HashMap<String, Tensor> = hf_tensors(&f.tiny, CDType::F32)
        .into_iter()
        .map(|(k, v)| (format!("language_model.{k}"), v))
        .collect();
    let dev = candle_core::Device::Cpu;
    tensors.insert(
        "vision_tower.vision_model.embeddings.patch_embedding.weight".into(),
        Tensor::zeros((4, 3, 2, 2), CDType::F32, &dev).unwrap(),
    );
    tensors.insert(
        "multi_modal_projector.mm_input_projection_weight".into(),
        Tensor::zeros((4, 64), CDType::F32, &dev).unwrap(),
    );
    let mut text = config_json(&f.tiny.cfg);
    text["model_type"] = "gemma3_text".into();
    text.as_object_mut().unwrap().remove("architectures");
    let config = serde_json::json!({
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": text,
        "vision_config": {"model_type": "siglip_vision_model"},
    });
    let dir = f.root.join("multimodal");
    write_folder(&dir, &config, tensors, 2);
    assert_eq!(logits(&load_with(&dir, DType::F32).unwrap(), &toks), single);
}

/// `chimera generate` on the folder and on the GGUF: the same greedy tokens
/// (resolve, the engine and the tokenizer beside the weights, end to end).
#[test]
fn the_binary_runs_a_folder_like_a_gguf() {
    let f = fixture(14);
    let dir = f.folder("hf", CDType::F32, 1);
    std::fs::write(
        dir.join("tokenizer.json"),
        common::tiny::tokenizer_json(300, &[]),
    )
    .unwrap();
    let gguf = f.root.join("tiny.gguf");
    f.tiny.write_gguf(&gguf, GgmlDType::F32);
    std::fs::write(
        f.root.join("tokenizer.json"),
        common::tiny::tokenizer_json(300, &[]),
    )
    .unwrap();
    let run = |model: &Path| -> serde_json::Value {
        let out = chimera(
            &f.root,
            &[
                "generate",
                "-m",
                model.to_str().unwrap(),
                "--raw",
                "--temperature",
                "0",
            ],
        )
        .args(["-n", "12", "--format", "json", "-p", "w10 w11 w12 w13 "])
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (a, b) = (run(&dir), run(&gguf));
    assert_eq!(a["prompt_token_ids"], b["prompt_token_ids"]);
    assert_eq!(a["token_ids"], b["token_ids"]);
    assert_eq!(a["token_ids"].as_array().unwrap().len(), 12);
    // A file inside the folder stands for the folder.
    let c = run(&dir.join("config.json"));
    assert_eq!(c["token_ids"], a["token_ids"]);
}

// ---------------------------------------------------------------------------
// Errors: one line, non-zero exit, no panic.

/// The binary, with caches pointed at empty folders and the hub offline.
fn chimera(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chimera"));
    c.args(args)
        .env("CHIMERA_CACHE", root.join("empty-chimera-cache"))
        .env("HF_HOME", root.join("empty-hf-home"))
        .env("HF_HUB_OFFLINE", "1");
    c
}

fn one_error(root: &Path, model: &str, needles: &[&str]) {
    let out = chimera(root, &["generate", "-m", model, "-p", "hi"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail: {err}");
    assert!(!err.contains("panicked"), "no panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} in {err}");
    }
}

#[test]
fn a_folder_without_config_json() {
    let f = fixture(1);
    let dir = f.root.join("weights-only");
    std::fs::create_dir_all(&dir).unwrap();
    candle_core::safetensors::save(
        &hf_tensors(&f.tiny, CDType::F32),
        dir.join("model.safetensors"),
    )
    .unwrap();
    one_error(&f.root, dir.to_str().unwrap(), &["has no config.json"]);
}

#[test]
fn a_config_of_another_architecture() {
    let f = fixture(1);
    let dir = f.root.join("llama");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096}"#,
    )
    .unwrap();
    one_error(
        &f.root,
        dir.to_str().unwrap(),
        &["`llama` model (LlamaForCausalLM)", "Gemma 3"],
    );
    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2"}"#,
    )
    .unwrap();
    one_error(&f.root, dir.to_str().unwrap(), &["`gemma2` model"]);
}

#[test]
fn a_missing_or_truncated_shard() {
    let f = fixture(1);
    let dir = f.folder("sharded", CDType::F32, 2);
    let second = dir.join("model-00002-of-00002.safetensors");
    let bytes = std::fs::read(&second).unwrap();
    std::fs::remove_file(&second).unwrap();
    std::fs::write(
        dir.join("tokenizer.json"),
        common::tiny::tokenizer_json(300, &[]),
    )
    .unwrap();
    one_error(
        &f.root,
        dir.to_str().unwrap(),
        &["shard model-00002-of-00002.safetensors is missing"],
    );
    std::fs::write(&second, &bytes[..bytes.len() / 2]).unwrap();
    one_error(
        &f.root,
        dir.to_str().unwrap(),
        &["model-00002-of-00002.safetensors is not a valid safetensors file"],
    );
}

#[test]
fn an_offline_cache_miss_names_the_repo_and_the_fetch_command() {
    let f = fixture(1);
    one_error(
        &f.root,
        "google/gemma-3-270m",
        &[
            "HF_HUB_OFFLINE",
            "google/gemma-3-270m",
            "huggingface-cli download google/gemma-3-270m",
        ],
    );
    // The registry's names for the official repos lead to the same place.
    one_error(
        &f.root,
        "gemma3-1b-it-bf16",
        &["HF_HUB_OFFLINE", "google/gemma-3-1b-it"],
    );
}

#[test]
fn a_cached_hub_snapshot_loads_offline() {
    // The standard cache layout hf-hub and huggingface_hub share.
    let f = fixture(15);
    let hf_home = f.root.join("empty-hf-home");
    let repo = hf_home.join("hub/models--someone--tiny-gemma");
    let snap = repo.join("snapshots/0123456789abcdef");
    write_folder(
        &snap,
        &config_json(&f.tiny.cfg),
        hf_tensors(&f.tiny, CDType::BF16),
        1,
    );
    std::fs::write(
        snap.join("tokenizer.json"),
        common::tiny::tokenizer_json(300, &[]),
    )
    .unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123456789abcdef").unwrap();
    let out = chimera(
        &f.root,
        &["generate", "-m", "someone/tiny-gemma", "--raw", "-n", "3"],
    )
    .args(["--temperature", "0", "--format", "json", "-p", "w10 w11 "])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["token_ids"].as_array().unwrap().len(), 3);
}
