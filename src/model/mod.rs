//! Weights and architecture: file formats, the Gemma 3 forward pass, its
//! KV cache and the tokenizer.

pub mod config;
pub mod gemma3;
pub mod gguf;
pub mod kv_cache;
pub mod tokenizer;
pub mod weights;

pub use config::Config;
pub use gemma3::Gemma3;
pub use kv_cache::KvCache;
pub use tokenizer::Tokenizer;

use anyhow::{Context, Result};
use std::path::Path;

/// Loads a Gemma 3 model from a GGUF file.
pub fn load_gguf(path: &Path) -> Result<Gemma3> {
    let file = gguf::GgufFile::open(path)?;
    let cfg = file.config()?;
    Gemma3::new(cfg, &file).with_context(|| format!("cannot load {}", path.display()))
}
