//! Weights and architecture: file formats, the Gemma 3 forward pass, its
//! KV cache and the tokenizer.

pub mod config;
pub mod gemma3;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod kv_cache;
pub mod safetensors;
pub mod spm;
pub mod tokenizer;
pub mod weights;

pub use config::Config;
pub use gemma3::Gemma3;
pub use kv_cache::KvCache;
pub use safetensors::DType;
pub use tokenizer::Tokenizer;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Loads a Gemma 3 model from a GGUF file.
pub fn load_gguf(path: &Path) -> Result<Gemma3> {
    load_gguf_file(&gguf::GgufFile::open(path)?)
}

/// Loads a Gemma 3 model from an open GGUF file (whose metadata can then
/// serve the tokenizer too, without reading the header again).
pub fn load_gguf_file(file: &gguf::GgufFile) -> Result<Gemma3> {
    let cfg = file.config()?;
    Gemma3::new(cfg, file).with_context(|| format!("cannot load {}", file.path().display()))
}

/// Loads a Gemma 3 model from a `.gguf` file or a Hugging Face folder
/// (`config.json` and safetensors; their matrices in f32).
pub fn load(path: &Path) -> Result<Gemma3> {
    load_with(path, DType::default())
}

/// [`load`], with the type a Hugging Face checkpoint's matrices are
/// computed in (GGUF files keep their own encodings).
pub fn load_with(path: &Path, dtype: DType) -> Result<Gemma3> {
    match hf_folder(path) {
        Some(dir) => safetensors::load(&dir, dtype),
        None => load_gguf(path),
    }
}

/// The Hugging Face folder `path` stands for: a folder (which must then
/// hold config.json), or its config.json or a safetensors file in it.
pub fn hf_folder(path: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        return Some(path.to_path_buf());
    }
    let name = path.file_name()?.to_string_lossy();
    if name == safetensors::CONFIG || name.ends_with(".safetensors") {
        return match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => Some(p.to_path_buf()),
            _ => Some(PathBuf::from(".")),
        };
    }
    None
}

/// Bytes of the weight files behind `path` (all shards of a folder).
pub fn weights_bytes(path: &Path) -> u64 {
    match hf_folder(path) {
        Some(dir) => std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
                    .filter_map(|e| std::fs::metadata(e.path()).ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0),
        None => std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
    }
}
