//! `chimera batch`: run a grid of report jobs, resumably and in shards;
//! `chimera batch merge`: join shard folders into one index.
//!
//! ```text
//! chimera batch JOBS.toml [--resume] [--shard I/N] [--output-dir DIR] [--list]
//! chimera batch merge DIR... [--output-dir OUT]
//! ```
//!
//! The job file format and job ids are described in [`crate::batch`].
//! Output: `DIR/jobs/<id>/` (a `chimera report` folder per job),
//! `DIR/manifest.json` (rewritten atomically after every job),
//! `DIR/index.md` and `DIR/index.csv`. The output folder is `--output-dir`,
//! else the job file's `output_dir`, else `reports/batch`. A folder that
//! already holds a manifest is refused unless `--resume`, which skips the
//! jobs recorded as finished and runs the rest (a job cut short by a crash
//! or Ctrl-C has its folder removed and runs again). Every job is checked
//! against `chimera report`'s options before the first one runs.
//!
//! `--shard I/N` runs the jobs whose 0-based index k has k % N == I − 1;
//! give each shard its own `--output-dir`, then `chimera batch merge
//! DIR...` writes `index.md`, `index.csv` and `merged.json` into
//! `--output-dir` (default: the folders' common parent), listing the jobs
//! no shard finished. On a terminal, stderr shows a progress line before
//! each job (a bar over jobs, ETA at the mean job time so far, tokens
//! generated and their rate) and the report's own live display within it.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::batch::index::{self, INDEX_CSV, INDEX_MD};
use crate::batch::run::{
    self, BatchOptions, Events, JobRecord, Live, Progress, ReportRunner, Status,
};
use crate::batch::Job;
use crate::batch::{slice, JobFile, Shard};

/// Where batch output goes without --output-dir or output_dir.
pub const DEFAULT_OUTPUT: &str = "reports/batch";

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BatchArgs {
    #[command(subcommand)]
    pub cmd: Option<BatchCmd>,

    /// The job file (TOML: [defaults], [grid] or [[grid]], optional output_dir).
    #[arg(value_name = "JOBS.toml", required = true)]
    pub jobs: Option<PathBuf>,

    /// Continue the batch in the output folder: skip the jobs its manifest
    /// records as finished.
    #[arg(long)]
    pub resume: bool,

    /// Run only shard I of N (jobs whose 0-based index k has k % N == I - 1).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,

    /// Output folder [default: the job file's output_dir, else reports/batch].
    #[arg(short = 'o', long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    /// Print the jobs (this shard's) with their ids and exit.
    #[arg(long)]
    pub list: bool,
}

#[derive(Debug, Subcommand)]
pub enum BatchCmd {
    /// Join the indexes of shard folders into one.
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Batch folders to merge (each with a manifest.json).
    #[arg(value_name = "DIR", required = true)]
    pub dirs: Vec<PathBuf>,

    /// Where index.md, index.csv and merged.json go [default: the folders'
    /// common parent].
    #[arg(short = 'o', long, value_name = "OUT")]
    pub output_dir: Option<PathBuf>,
}

/// Prints a job's start and end.
struct Printer {
    show: bool,
    total: usize,
}

impl Events for Printer {
    fn starting(&mut self, p: &Progress, job: &Job) {
        if self.show {
            eprintln!(
                "{} · job {}/{}: {}",
                p.line(),
                job.index + 1,
                self.total,
                job.id
            );
        }
    }

    fn finished(&mut self, _p: &Progress, r: &JobRecord) {
        let wall = r.wall_s.unwrap_or(0.0);
        match r.status {
            Status::Finished => {
                let figures: Vec<String> = r
                    .headline
                    .iter()
                    .map(|h| {
                        format!(
                            "{} {:.2} tok/s, TTFT {:.2} ms",
                            h.agent, h.eval_tokens_per_s_mean, h.ttft_ms_mean
                        )
                    })
                    .collect();
                println!(
                    "job {}/{} {}: finished in {wall:.1} s{}{}",
                    r.index + 1,
                    self.total,
                    r.id,
                    if figures.is_empty() { "" } else { " · " },
                    figures.join(" · ")
                );
            }
            _ => eprintln!(
                "job {}/{} {} failed after {wall:.1} s: {}",
                r.index + 1,
                self.total,
                r.id,
                r.error.as_deref().unwrap_or("unknown error")
            ),
        }
    }
}

pub fn run(args: BatchArgs) -> Result<u8> {
    if let Some(BatchCmd::Merge(m)) = args.cmd {
        return merge(m);
    }
    let Some(path) = args.jobs else {
        anyhow::bail!("name a job file: chimera batch JOBS.toml");
    };
    let shard = args
        .shard
        .as_deref()
        .map(|s| s.parse::<Shard>())
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let file = JobFile::load(&path)?;
    let out = args
        .output_dir
        .or_else(|| file.output_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_OUTPUT));
    let jobs = slice(&file.jobs, shard);
    run::validate(&jobs, &out)?;
    if args.list {
        for j in &jobs {
            println!("{}\t{}", j.index + 1, j.id);
        }
        return Ok(0);
    }

    let live = Arc::new(Mutex::new(Live::default()));
    {
        let live = Arc::clone(&live);
        // The first handler of the process wins: the reports this batch runs
        // keep this one, so Ctrl-C says where the batch stands.
        let _ = ctrlc::set_handler(move || {
            let l = live.lock().unwrap_or_else(|p| p.into_inner());
            eprintln!("\n{}", l.interrupted_message());
            std::process::exit(130);
        });
    }
    let scope = shard
        .map(|s| format!(" (shard {s} of {} jobs)", file.jobs.len()))
        .unwrap_or_default();
    println!("batch: {} jobs{scope} into {}", jobs.len(), out.display());
    let opts = BatchOptions {
        out: out.clone(),
        resume: args.resume,
        shard,
    };
    let mut printer = Printer {
        show: std::io::stderr().is_terminal(),
        total: file.jobs.len(),
    };
    let outcome = run::run(
        &file,
        &opts,
        &mut ReportRunner { quiet: false },
        &live,
        &mut printer,
    )?;
    if outcome.dropped > 0 {
        eprintln!(
            "warning: {} finished job(s) of the earlier manifest are no longer in {}; their folders stay in {}/jobs but leave the index",
            outcome.dropped,
            path.display(),
            out.display()
        );
    }
    println!(
        "wrote {} and {}: {} job(s) run, {} skipped as finished earlier, {} failed",
        out.join(INDEX_MD).display(),
        out.join(INDEX_CSV).display(),
        outcome.ran,
        outcome.skipped,
        outcome.failed.len()
    );
    if let Some((id, err)) = outcome.failed.first() {
        anyhow::bail!(
            "{} of {} job(s) failed (first: {id}: {err}); --resume runs them again",
            outcome.failed.len(),
            outcome.jobs
        );
    }
    Ok(0)
}

fn merge(m: MergeArgs) -> Result<u8> {
    let out = match m.output_dir {
        Some(o) => o,
        None => index::common_parent(&m.dirs).ok_or_else(|| {
            anyhow::anyhow!("the folders have no common parent folder; pass --output-dir")
        })?,
    };
    let r = index::merge(&m.dirs, &out)?;
    println!(
        "merged {} folder(s) into {}: {} of {} jobs finished",
        r.folders,
        out.join(INDEX_MD).display(),
        r.finished,
        r.total_jobs
    );
    if !r.duplicates.is_empty() {
        eprintln!(
            "warning: {} job(s) finished in more than one folder (kept the later): {}",
            r.duplicates.len(),
            r.duplicates.join(", ")
        );
    }
    if !r.missing.is_empty() {
        eprintln!(
            "warning: {} job(s) finished in no folder: {}",
            r.missing.len(),
            r.missing.join(", ")
        );
    }
    Ok(0)
}
