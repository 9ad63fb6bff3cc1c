//! `chimera fetch`: puts a registry model and its tokenizer in the cache.

use crate::models::{self, Registry};
use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Model names from models.toml (default: the default model).
    pub names: Vec<String>,

    /// List the registry and what is cached instead of fetching.
    #[arg(long)]
    pub list: bool,
}

pub fn run(args: FetchArgs) -> Result<u8> {
    let reg = Registry::builtin()?;
    if args.list {
        println!("{:<24} {:>6} {:<8} cached", "name", "params", "quant");
        for m in &reg.models {
            let cached = models::cached_model(m)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "-".into());
            println!("{:<24} {:>6} {:<8} {cached}", m.name, m.params, m.quant);
        }
        return Ok(0);
    }
    let names = if args.names.is_empty() {
        vec![reg.default.clone()]
    } else {
        args.names
    };
    for name in names {
        let files = models::fetch(&name)?;
        println!(
            "{}: {} (tokenizer {})",
            files.name,
            files.weights.display(),
            files.tokenizer.display()
        );
    }
    Ok(0)
}
