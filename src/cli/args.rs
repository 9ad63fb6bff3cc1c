//! Option groups shared by several subcommands.

use crate::engine::{Device, EngineConfig, Options};
use clap::Args;
use std::path::PathBuf;

/// Which model to run and where.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model name from models.toml, or a path to a .gguf file. Named models
    /// missing from the cache are fetched first.
    #[arg(
        short = 'm',
        long,
        default_value = "gemma3-270m-q4_k_m",
        value_name = "NAME|PATH"
    )]
    pub model: String,

    /// Hugging Face tokenizer.json to use (default: the model's own: a GGUF
    /// file's tokenizer metadata, a Hugging Face folder's tokenizer.json, or
    /// the Gemma 3 tokenizer from the cache).
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,

    /// CPU threads for the kernels (default: all available cores).
    #[arg(short = 't', long, value_name = "N")]
    pub threads: Option<usize>,

    /// Device: cpu, cuda, cuda:N, or auto (CUDA when built with it and a
    /// GPU is present).
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: Device,

    /// Layers on the GPU with --device cuda (Ollama's num_gpu; default: all
    /// of them); the rest run on the CPU. Shown in reports' Configuration.
    #[arg(long = "num-gpu", value_name = "N")]
    pub num_gpu: Option<usize>,

    /// Most prompt tokens per forward pass (prompt processing batch).
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub ubatch: usize,
}

impl ModelArgs {
    pub fn engine_config(&self) -> anyhow::Result<EngineConfig> {
        if let Some(0) = self.threads {
            anyhow::bail!("invalid --threads 0: must be at least 1");
        }
        anyhow::ensure!(self.ubatch > 0, "invalid --ubatch 0: must be at least 1");
        Ok(EngineConfig {
            threads: self.threads,
            ubatch: self.ubatch,
            device: self.device,
            num_gpu: self.num_gpu,
        })
    }
}

/// Sampling and context options (Ollama's names; unset flags keep the
/// defaults or the values they override).
#[derive(Debug, Clone, Default, Args)]
pub struct SamplingArgs {
    /// Softmax temperature [default: 0.8]; 0 = greedy.
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// Keep the K most likely tokens [default: 40]; 0 = all.
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Nucleus sampling mass in (0, 1] [default: 0.9].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// Drop tokens below MIN_P times the best one's probability [default: 0].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub min_p: Option<f32>,
    /// Penalty for recently seen tokens [default: 1.1]; 1 = off.
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub repeat_penalty: Option<f32>,
    /// How many recent tokens the penalty covers [default: 64].
    #[arg(long, value_name = "N")]
    pub repeat_last_n: Option<usize>,
    /// Random seed [default: drawn at random and reported].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Most tokens to generate [default: no limit].
    #[arg(short = 'n', long, value_name = "N")]
    pub num_predict: Option<usize>,
    /// Stop when the text contains STOP (repeatable).
    #[arg(long, value_name = "STOP")]
    pub stop: Vec<String>,
    /// Context length in tokens [default: 2048].
    #[arg(long, value_name = "N")]
    pub num_ctx: Option<usize>,
}

impl SamplingArgs {
    /// Overrides the fields of `o` this set gives.
    pub fn apply(&self, o: &mut Options) {
        macro_rules! set {
            ($($f:ident),*) => {$( if let Some(v) = self.$f { o.$f = v; } )*};
        }
        set!(
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            repeat_last_n,
            num_ctx
        );
        if self.seed.is_some() {
            o.seed = self.seed;
        }
        if self.num_predict.is_some() {
            o.num_predict = self.num_predict;
        }
        if !self.stop.is_empty() {
            o.stop = self.stop.clone();
        }
    }

    pub fn options(&self) -> Options {
        let mut o = Options::default();
        self.apply(&mut o);
        o
    }
}
