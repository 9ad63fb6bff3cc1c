//! Aggregate decode throughput with several sequences decoded together
//! (one forward pass per step over one token of each), on the default
//! model: batch 1, 2 and 4, and the speedup over batch 1.
//!
//! `cargo bench --bench batch` (`CHIMERA_THREADS` threads, default all
//! cores; `CHIMERA_BENCH_QUICK=1` for a short run). Times forward passes
//! with logits; no sampling, no tokenization.

use chimera::engine::{Engine, EngineConfig};
use chimera::models::{resolve, Fetch};

fn main() -> anyhow::Result<()> {
    let quick = std::env::var("CHIMERA_BENCH_QUICK").is_ok_and(|v| v == "1");
    let threads = std::env::var("CHIMERA_THREADS")
        .ok()
        .and_then(|v| v.parse().ok());
    let files = match resolve("gemma3-270m-q4_k_m", None, Fetch::Never) {
        Ok(f) => f,
        Err(e) => {
            println!("skipped: {e}");
            return Ok(());
        }
    };
    let mut engine = Engine::load(
        &files,
        &EngineConfig {
            threads,
            ..Default::default()
        },
    )?;
    let n = if quick { 16 } else { 128 };
    let reps = if quick { 1 } else { 3 };
    println!(
        "batched decode, {} ({} threads, {} kernels): {n} steps per sequence, best of {reps}",
        files.name,
        engine.threads(),
        engine.isa().name()
    );
    println!();
    println!("| batch | ms per step | aggregate tok/s | per-sequence tok/s | vs batch 1 |");
    println!("|---:|---:|---:|---:|---:|");
    let mut base = 0.0;
    for batch in [1usize, 2, 4] {
        engine.time_decode_batch(batch, 4)?; // warm-up
        let mut best = f64::MAX;
        for _ in 0..reps {
            best = best.min(engine.time_decode_batch(batch, n)?);
        }
        let agg = (batch * n) as f64 * 1000.0 / best;
        if batch == 1 {
            base = agg;
        }
        println!(
            "| {batch} | {:.2} | {agg:.1} | {:.1} | {:.2}x |",
            best / n as f64,
            agg / batch as f64,
            agg / base
        );
    }
    Ok(())
}
