//! `chimera compare RUN_A RUN_B`: the baseline (A) versus chimera (B)
//! comparison of two finished `chimera report` folders, written as
//! `comparison.md` and `comparison.json` (see [`crate::batch::compare`]).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::batch::compare::{self, Side};
use crate::report::output::write_atomic;

pub const COMPARISON_MD: &str = "comparison.md";
pub const COMPARISON_JSON: &str = "comparison.json";

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The baseline report folder (with summary.json).
    #[arg(value_name = "RUN_A")]
    pub run_a: PathBuf,

    /// The report folder compared with it.
    #[arg(value_name = "RUN_B")]
    pub run_b: PathBuf,

    /// Folder for comparison.md and comparison.json.
    #[arg(
        short = 'o',
        long,
        value_name = "DIR",
        default_value = "reports/compare"
    )]
    pub output_dir: PathBuf,

    /// Replace a comparison already in the output folder.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(args: CompareArgs) -> Result<u8> {
    let a = Side::load(&args.run_a)?;
    let b = Side::load(&args.run_b)?;
    let md_path = args.output_dir.join(COMPARISON_MD);
    let json_path = args.output_dir.join(COMPARISON_JSON);
    anyhow::ensure!(
        args.overwrite || !(md_path.exists() || json_path.exists()),
        "{} already holds a comparison; choose another --output-dir or pass --overwrite",
        args.output_dir.display()
    );
    let c = compare::compare(&a, &b);
    anyhow::ensure!(
        !c.agents.is_empty(),
        "{} and {} have no agent in common",
        args.run_a.display(),
        args.run_b.display()
    );
    std::fs::create_dir_all(&args.output_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create output folder {}: {e}",
            args.output_dir.display()
        )
    })?;
    write_atomic(&md_path, compare::render_markdown(&c).as_bytes())?;
    let mut json = serde_json::to_vec_pretty(&c)?;
    json.push(b'\n');
    write_atomic(&json_path, &json)?;
    println!("wrote {} and {}", md_path.display(), json_path.display());
    for ag in &c.agents {
        let d = |i: usize| &ag.deltas[i];
        println!(
            "{}: throughput {:.2} -> {:.2} tok/s ({:+.1}%), TTFT {:.2} -> {:.2} ms ({:+.1}%)",
            ag.label,
            d(0).a.mean,
            d(0).b.mean,
            d(0).delta_rel * 100.0,
            d(1).a.mean,
            d(1).b.mean,
            d(1).delta_rel * 100.0
        );
    }
    if !c.unmatched.is_empty() {
        eprintln!(
            "warning: agents on one side only: {}",
            c.unmatched.join(", ")
        );
    }
    Ok(0)
}
