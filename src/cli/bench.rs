//! `chimera bench`: llama-bench's tests (`pp`, `tg`) plus TTFT, load time
//! and memory for one or more models; see [`crate::bench`] for exactly
//! what each number times.
//!
//! ```text
//! chimera bench [-m NAME|PATH ...] [--tokenizer PATH] [-p 512] [-n 128] [-r 5]
//!               [--no-warmup] [-t N] [--device cpu|cuda|cuda:N|auto] [--ubatch 512]
//!               [-o md|json|csv] [--vs-llama-bench PATH]
//! ```
//!
//! `-p` and `-n` take comma-separated lists (`-p 128,512`), 0 skips the
//! tests. Without `-m`, the models of `CHIMERA_BENCH_MODELS` (comma
//! separated) or the default model; named models missing from the cache are
//! fetched first. `CHIMERA_BENCH_QUICK=1` makes the defaults `-p 64 -n 16
//! -r 1`. `--vs-llama-bench PATH` (or `CHIMERA_LLAMA_BENCH=PATH`) also runs
//! that llama-bench on the same GGUF file with the same sizes, repetitions,
//! threads and ubatch, and adds its t/s and the ratio chimera / llama.cpp.
//! The table goes to stdout; progress to stderr when it is a terminal.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::bench::{self, render, BenchReport, Settings, Sizes};
use crate::engine::{Device, EngineConfig};
use crate::models::{resolve, Fetch, Registry};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table like llama-bench's, with the definitions above it.
    Md,
    /// Everything, every sample included.
    Json,
    /// One row per sample.
    Csv,
}

#[derive(Debug, Args)]
#[command(
    after_help = "pp = forward passes over N prompt token ids (no tokenization, no sampling); \
                  tg = N single-token forward passes with logits (no sampling); ttft = generate() \
                  from call start (tokenization included) to the first token sampled; load = \
                  Engine::load wall time; peak RSS = VmHWM after the runs."
)]
pub struct BenchArgs {
    /// Model name from models.toml or a path (repeatable) [default:
    /// $CHIMERA_BENCH_MODELS, else the default model].
    #[arg(short = 'm', long = "model", value_name = "NAME|PATH")]
    pub models: Vec<String>,

    /// Hugging Face tokenizer.json for every model (default: each model's own).
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,

    /// Prompt sizes for pp and ttft, comma separated; 0 = none [default: 512;
    /// 64 with CHIMERA_BENCH_QUICK=1].
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_name = "N",
        value_delimiter = ','
    )]
    pub n_prompt: Option<Vec<usize>>,

    /// Generation sizes for tg, comma separated; 0 = none [default: 128; 16
    /// quick].
    #[arg(short = 'n', long = "n-gen", value_name = "N", value_delimiter = ',')]
    pub n_gen: Option<Vec<usize>>,

    /// Timed repetitions of each test (and loads of each model) [default: 5;
    /// 1 quick].
    #[arg(short = 'r', long = "repetitions", value_name = "N")]
    pub repetitions: Option<usize>,

    /// Skip the uncounted run before each test.
    #[arg(long)]
    pub no_warmup: bool,

    /// CPU threads for the kernels (default: all available cores).
    #[arg(short = 't', long, value_name = "N")]
    pub threads: Option<usize>,

    /// Device: cpu, cuda, cuda:N, or auto.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: Device,

    /// Layers on the GPU (Ollama's num_gpu, llama-bench's -ngl); default: all.
    #[arg(long = "num-gpu", visible_alias = "ngl", value_name = "N")]
    pub num_gpu: Option<usize>,

    /// Most prompt tokens per forward pass (llama-bench's -ub).
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub ubatch: usize,

    /// Output format on stdout.
    #[arg(short = 'o', long = "output", value_enum, default_value = "md")]
    pub output: Format,

    /// Also run this llama-bench binary on the same file and settings and
    /// print the ratio chimera / llama.cpp per test [env: CHIMERA_LLAMA_BENCH].
    #[arg(long, value_name = "PATH")]
    pub vs_llama_bench: Option<PathBuf>,
}

impl BenchArgs {
    fn settings(&self) -> Result<Settings> {
        anyhow::ensure!(
            self.threads != Some(0),
            "invalid --threads 0: must be at least 1"
        );
        anyhow::ensure!(self.ubatch > 0, "invalid --ubatch 0: must be at least 1");
        let base = Sizes::from_env();
        let sizes = Sizes {
            n_prompt: self.n_prompt.clone().unwrap_or(base.n_prompt),
            n_gen: self.n_gen.clone().unwrap_or(base.n_gen),
            repetitions: self.repetitions.unwrap_or(base.repetitions),
            warmup: !self.no_warmup,
        };
        if self.repetitions == Some(0) {
            anyhow::bail!("invalid -r 0: must be at least 1");
        }
        sizes.validate()?;
        Ok(Settings {
            sizes,
            engine: EngineConfig {
                threads: self.threads,
                ubatch: self.ubatch,
                device: self.device,
                num_gpu: self.num_gpu,
            },
        })
    }
}

fn spinner(show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

pub fn run(args: BenchArgs) -> Result<u8> {
    let settings = args.settings()?;
    let llama = args
        .vs_llama_bench
        .clone()
        .or_else(bench::llama_bench_from_env);
    if let Some(l) = &llama {
        anyhow::ensure!(l.is_file(), "llama-bench binary {} not found", l.display());
    }
    let names = if !args.models.is_empty() {
        args.models.clone()
    } else {
        bench::models_from_env().unwrap_or(vec![Registry::builtin()?.default])
    };
    let mut models = Vec::new();
    for n in &names {
        models.push(resolve(n, args.tokenizer.as_deref(), Fetch::IfMissing)?);
    }
    let mut report = BenchReport::new(&settings.sizes, &settings.engine);
    let bar = spinner(std::io::stderr().is_terminal());
    let result = bench::run_all(
        &models,
        &settings,
        llama.as_deref(),
        &mut report,
        &mut |msg| bar.set_message(msg.to_string()),
    );
    bar.finish_and_clear();
    result?;
    let text = match args.output {
        Format::Md => render::markdown(&report),
        Format::Json => render::json(&report)?,
        Format::Csv => render::csv(&report)?,
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(0)
}
