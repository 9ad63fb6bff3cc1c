//! The real model against llama.cpp's greedy outputs for the same GGUF.
//!
//! Golden files: every `tests/data/golden-*.json` (copied from
//! `../shared/golden`, see `tests/data/golden-README.md` for how llama.cpp
//! made them), plus any file named by `CHIMERA_GOLDEN` (so unseen prompts
//! made the same way are checked the same way).
//!
//! Our CPU kernels follow llama.cpp's AVX2 numerics operation for
//! operation (activation quantization, each kernel's float accumulation
//! order, its flash attention, its GELU table), so on an AVX2 machine the
//! logits agree to the last bits and every greedy token must be
//! identical. Elsewhere (the portable scalar kernels) sums are ordered
//! differently, and the fair comparison the golden README describes
//! applies: prompt ids exact; greedy ids equal for 32 tokens or up to the
//! first step where they part at a near tie (llama.cpp's top-1/top-2
//! margin under 0.05).

mod common;

use chimera::cpu::Isa;
use chimera::engine::{Options, Prompt, Request};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Golden {
    prompt: String,
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
    top5_per_step: Vec<Vec<(u32, f64)>>,
    top1_top2_logprob_margin_per_step: Vec<f64>,
}

const NEAR_TIE: f64 = 0.05;

/// Largest |ours - llama.cpp| log-probability allowed for llama.cpp's top-5
/// tokens at a matched step.
///
/// With the AVX2 kernels the logits are bit-identical to llama.cpp's; what
/// is left is how the golden file was written: log-probabilities rounded to
/// 5 decimals and normalized by its generator (we normalize in f64). Measured
/// worst case: 0.0008. Scalar kernels add float re-association, which this
/// small model amplifies to a few tenths of a log-prob on unlikely tokens.
fn logprob_tol(isa: Isa) -> f64 {
    match isa {
        Isa::Avx2 => 0.005,
        Isa::Scalar => 1.0,
    }
}

fn golden_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("golden-") && name.ends_with(".json")
        })
        .collect();
    if let Some(extra) = std::env::var_os("CHIMERA_GOLDEN") {
        files.push(PathBuf::from(extra));
    }
    files.sort();
    assert!(!files.is_empty(), "no golden files in {}", dir.display());
    files
}

#[test]
fn greedy_tokens_and_logprobs_match_llama_cpp() {
    let mut engine = common::engine();
    let isa = engine.isa();
    let tol = logprob_tol(isa);
    let mut worst = 0f64;
    for file in golden_files() {
        let goldens: Vec<Golden> = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
            .expect("golden file parses");
        for g in goldens {
            let steps = g.greedy_ids.len();
            let req = Request {
                prompt: Prompt::Raw(g.prompt.clone()),
                options: Options {
                    temperature: 0.0,
                    num_predict: Some(steps),
                    num_ctx: 2048,
                    seed: Some(0),
                    ..Default::default()
                },
            };
            let mut lp = common::LogProbs::default();
            let out = engine.generate(&req, &mut lp).unwrap();
            assert_eq!(
                out.prompt_token_ids, g.prompt_ids,
                "prompt ids for {:?}",
                g.prompt
            );
            let mut matched = 0;
            for i in 0..steps {
                for &(id, want) in &g.top5_per_step[i] {
                    let got = lp.steps[i][id as usize];
                    worst = worst.max((got - want).abs());
                    assert!(
                        (got - want).abs() <= tol,
                        "{:?} step {i}: token {id} log-prob {got:.5} vs llama.cpp {want:.5}",
                        g.prompt
                    );
                }
                let (ours, theirs) = (out.token_ids[i], g.greedy_ids[i]);
                if ours != theirs {
                    let margin = g.top1_top2_logprob_margin_per_step[i];
                    assert!(
                        isa != Isa::Avx2 && margin < NEAR_TIE,
                        "{:?}: greedy token {i} is {ours}, llama.cpp chose {theirs} (margin {margin:.4}, {:?} kernels)",
                        g.prompt,
                        isa
                    );
                    break;
                }
                matched += 1;
            }
            if isa != Isa::Avx2 {
                assert!(
                    matched >= 32.min(steps)
                        || g.top1_top2_logprob_margin_per_step[matched] < NEAR_TIE,
                    "{:?}: only {matched} tokens matched",
                    g.prompt
                );
            }
            eprintln!(
                "{:?}: {matched} of {steps} greedy tokens identical",
                g.prompt
            );
        }
    }
    eprintln!("largest top-5 log-prob difference: {worst:.4} (tolerance {tol}, {isa:?} kernels)");
}
