//! `cargo bench --bench gemma`: llama-bench's tests (pp512, tg128) plus
//! TTFT for a 512-token prompt, load time and peak memory, for every
//! models.toml model present in the cache; the others are listed as
//! skipped with the command that fetches them. What each number times is
//! printed above the table (and documented in `chimera::bench`).
//!
//! Environment: `CHIMERA_BENCH_MODELS=a,b` (names or paths) picks the
//! models, `CHIMERA_BENCH_QUICK=1` runs pp64/tg16 once, `CHIMERA_THREADS=N`
//! sets the kernel threads (default all cores), `CHIMERA_LLAMA_BENCH=PATH`
//! adds llama-bench's numbers and the ratios.

use chimera::bench::{self, render, BenchReport, Settings, Sizes};
use chimera::engine::EngineConfig;

fn main() {
    // cargo passes `--bench` (and any filter); this harness takes none.
    let settings = Settings {
        sizes: Sizes::from_env(),
        engine: EngineConfig {
            threads: std::env::var("CHIMERA_THREADS")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|&n: &usize| n > 0),
            ..EngineConfig::default()
        },
    };
    let selection = bench::models_from_env();
    let (models, skipped) = match bench::present_models(selection.as_deref(), None) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    };
    let mut report = BenchReport::new(&settings.sizes, &settings.engine);
    report.skipped = skipped;
    let llama = bench::llama_bench_from_env();
    let result = bench::run_all(
        &models,
        &settings,
        llama.as_deref(),
        &mut report,
        &mut |msg| eprintln!("bench: {msg}"),
    );
    print!("{}", render::markdown(&report));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
