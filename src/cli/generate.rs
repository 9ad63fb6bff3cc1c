//! `chimera generate`: one prompt, streamed, with Ollama-style timings.

use super::args::{ModelArgs, SamplingArgs};
use crate::engine::{Engine, Generation, Observer, Prompt, Request};
use crate::models::{resolve, Fetch};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The prompt text.
    #[arg(
        short = 'p',
        long,
        conflicts_with = "prompt_file",
        required_unless_present = "prompt_file"
    )]
    pub prompt: Option<String>,

    /// Read the prompt from FILE ("-" for stdin).
    #[arg(short = 'f', long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,

    /// System text, folded into the user turn as Gemma's template does.
    #[arg(long, conflicts_with = "raw")]
    pub system: Option<String>,

    /// Send the prompt as is (after <bos>), without the chat template.
    #[arg(long)]
    pub raw: bool,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    /// Output: `text` streams tokens to stdout and timings to stderr; `json`
    /// prints one object with ids, text, options and metrics.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

struct Stream {
    out: std::io::Stdout,
}

impl Observer for Stream {
    fn text(&mut self, piece: &str) {
        let mut lock = self.out.lock();
        let _ = lock.write_all(piece.as_bytes());
        let _ = lock.flush();
    }
}

struct Silent;
impl Observer for Silent {}

pub fn run(args: GenerateArgs) -> Result<u8> {
    let prompt_text = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("cannot read the prompt from stdin")?;
            s
        }
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read prompt file {}", f.display()))?,
        (None, None) => unreachable!("clap requires one"),
    };
    let options = args.sampling.options();
    let files = resolve(
        &args.model.model,
        args.model.tokenizer.as_deref(),
        Fetch::IfMissing,
    )?;
    let mut engine = Engine::load(&files, &args.model.engine_config()?)?;
    options.validate(engine.model().config().max_position_embeddings)?;
    let prompt = if args.raw {
        Prompt::Raw(prompt_text)
    } else {
        Prompt::Chat {
            system: args.system.clone(),
            user: prompt_text,
        }
    };
    let req = Request { prompt, options };
    let g = match args.format {
        Format::Text => {
            let g = engine.generate(
                &req,
                &mut Stream {
                    out: std::io::stdout(),
                },
            )?;
            println!();
            eprint!("{}", timing_block(&g));
            g
        }
        Format::Json => {
            let g = engine.generate(&req, &mut Silent)?;
            println!("{}", serde_json::to_string_pretty(&g)?);
            g
        }
    };
    let _ = g;
    crate::cpu::profile::report();
    Ok(0)
}

/// The timing block Ollama prints with `--verbose`, plus our extra figures.
pub fn timing_block(g: &Generation) -> String {
    let m = &g.metrics;
    let d = |ms: f64| {
        if ms >= 1000.0 {
            format!("{:.3}s", ms / 1000.0)
        } else {
            format!("{ms:.2}ms")
        }
    };
    format!(
        "total duration:       {}\n\
         load duration:        {}\n\
         prompt eval count:    {} token(s)\n\
         prompt eval duration: {}\n\
         prompt eval rate:     {:.2} tokens/s\n\
         eval count:           {} token(s)\n\
         eval duration:        {}\n\
         eval rate:            {:.2} tokens/s\n\
         time to first token:  {}\n\
         inter-token latency:  p50 {} | p90 {} | p99 {}\n\
         generated tokens:     {} (stop: {})\n\
         peak memory:          {:.1} MiB\n",
        d(m.total_ms),
        d(m.load_ms),
        m.prompt_tokens,
        d(m.prompt_eval_ms),
        m.prompt_tokens_per_s,
        m.eval_tokens,
        d(m.eval_ms),
        m.eval_tokens_per_s,
        d(m.ttft_ms),
        d(m.itl_p50_ms),
        d(m.itl_p90_ms),
        d(m.itl_p99_ms),
        m.generated_tokens,
        m.stop_reason,
        m.peak_rss_bytes as f64 / (1024.0 * 1024.0),
    )
}
