//! Command-line interface: one clap struct per subcommand, shared option
//! groups flattened into each, and a `run` that returns the exit code.

pub mod args;
pub mod batch;
pub mod bench;
pub mod compare;
pub mod fetch;
pub mod generate;
pub mod ingest;
pub mod report;

use clap::{Parser, Subcommand};

/// Run Gemma 3 in-process and turn benchmark artifacts into measured reports.
#[derive(Debug, Parser)]
#[command(name = "chimera", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate text from one prompt, streaming tokens and timing each.
    Generate(generate::GenerateArgs),
    /// Scan an artifact tree and print its data summary and performance metrics.
    Ingest(ingest::IngestArgs),
    /// Download a model and its tokenizer into the cache.
    Fetch(fetch::FetchArgs),
    /// Run the agents over an artifact folder and write measured reports.
    Report(report::ReportArgs),
    /// Benchmark models as llama-bench does (pp, tg) plus TTFT, load time and memory.
    Bench(bench::BenchArgs),
    /// Run a grid of report jobs from a TOML file (resumable, shardable), or merge shards.
    Batch(batch::BatchArgs),
    /// Compare two finished report folders: throughput and TTFT deltas, run by run.
    Compare(compare::CompareArgs),
}

/// Parses the command line and runs the chosen subcommand.
pub fn run() -> anyhow::Result<u8> {
    let cli = Cli::parse();
    match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Ingest(args) => ingest::run(args),
        Command::Fetch(args) => fetch::run(args),
        Command::Report(args) => report::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Batch(args) => batch::run(args),
        Command::Compare(args) => compare::run(args),
    }
}
