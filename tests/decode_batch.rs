//! Several generations decoded together in shared forward passes
//! (`Engine::generate_batch`, `Engine::serve`) must give exactly what each
//! gives alone: batched decode steps use the same per-row kernels as a
//! single sequence, so tokens and logits are bit-identical, not just close.

mod common;

use candle_core::quantized::GgmlDType;
use chimera::engine::{channel, Engine, EngineConfig, Observer, Options, Prompt, Quiet, Request};
use chimera::model::{load_gguf, Config};
use common::tiny::{tokenizer, Tiny};
use serde::Deserialize;
use std::sync::{Arc, Mutex};

fn tiny_engine(seed: u64) -> Engine {
    let cfg = Config::tiny();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    Tiny::random(cfg.clone(), seed).write_gguf(&path, GgmlDType::Q8_0);
    let model = load_gguf(&path).unwrap();
    let cfg_e = EngineConfig {
        threads: Some(2),
        ..Default::default()
    };
    Engine::from_parts(model, tokenizer(cfg.vocab_size, &[]), &cfg_e)
}

fn raw(prompt: &str, options: Options) -> Request {
    Request {
        prompt: Prompt::Raw(prompt.to_string()),
        options,
    }
}

/// Requests that differ in prompt length, sampling and length, so the
/// sequences join and leave the batch at different steps.
fn mixed_requests() -> Vec<Request> {
    let sampled = |seed, n| Options {
        seed: Some(seed),
        num_predict: Some(n),
        temperature: 1.2,
        top_k: 0,
        top_p: 0.95,
        num_ctx: 256,
        ..Default::default()
    };
    vec![
        raw("w20 w21 w22 ", sampled(1, 30)),
        raw(
            &"w5 w9 w33 w41 ".repeat(12),
            Options {
                temperature: 0.0,
                num_predict: Some(17),
                num_ctx: 256,
                ..Default::default()
            },
        ),
        raw("w7 ", sampled(2, 45)),
        raw(&"w100 w3 ".repeat(5), sampled(3, 8)),
    ]
}

/// Records every logits vector a generation samples from.
#[derive(Clone, Default)]
struct Logits(Arc<Mutex<Vec<Vec<f32>>>>);

impl Observer for Logits {
    fn logits(&mut self, logits: &[f32]) {
        self.0.lock().unwrap().push(logits.to_vec());
    }
}

#[test]
fn batched_generations_equal_the_same_generations_alone() {
    let mut engine = tiny_engine(21);
    let requests = mixed_requests();
    let mut alone = Vec::new();
    for r in &requests {
        let rec = Logits::default();
        let g = engine.generate(r, &mut rec.clone()).unwrap();
        alone.push((g, rec));
    }
    let recs: Vec<Logits> = requests.iter().map(|_| Logits::default()).collect();
    let (batched, stats) = engine
        .generate_batch(
            requests
                .iter()
                .cloned()
                .zip(&recs)
                .map(|(r, rec)| (r, Box::new(rec.clone()) as Box<dyn Observer>))
                .collect(),
        )
        .unwrap();
    assert_eq!(batched.len(), requests.len());
    for (i, ((a, a_logits), b)) in alone.iter().zip(&batched).enumerate() {
        assert_eq!(a.prompt_token_ids, b.prompt_token_ids, "request {i}");
        assert_eq!(a.token_ids, b.token_ids, "request {i} tokens");
        assert_eq!(a.stop_reason, b.stop_reason, "request {i}");
        let (la, lb) = (a_logits.0.lock().unwrap(), recs[i].0.lock().unwrap());
        assert_eq!(la.len(), lb.len());
        for (s, (x, y)) in la.iter().zip(lb.iter()).enumerate() {
            assert!(
                x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
                "request {i} step {s}: logits differ between alone and batched"
            );
        }
    }
    // The sequences really shared forward passes.
    assert!(
        stats.mean_batch_size > 1.5,
        "mean decode batch {:.2}",
        stats.mean_batch_size
    );
}

#[test]
fn serving_clients_on_threads_gives_each_its_own_result() {
    let mut engine = tiny_engine(22);
    let requests = mixed_requests();
    let alone: Vec<Vec<u32>> = requests
        .iter()
        .map(|r| engine.generate(r, &mut Quiet).unwrap().token_ids)
        .collect();
    let (client, inbox) = channel();
    let handles: Vec<_> = requests
        .iter()
        .cloned()
        .map(|r| {
            let c = client.clone();
            std::thread::spawn(move || c.generate(r))
        })
        .collect();
    drop(client);
    let stats = engine.serve(inbox).unwrap();
    let mut generated = 0;
    for (i, h) in handles.into_iter().enumerate() {
        let g = h.join().unwrap().unwrap();
        assert_eq!(g.token_ids, alone[i], "client {i}");
        generated += g.token_ids.len();
    }
    // Each sequence's first token comes from its prompt pass; the rest from
    // decode steps.
    assert_eq!(stats.decode_tokens, generated - requests.len());
}

#[test]
fn a_bad_request_fails_alone_without_stopping_the_others() {
    let mut engine = tiny_engine(23);
    let good = mixed_requests().remove(0);
    let want = engine.generate(&good, &mut Quiet).unwrap().token_ids;
    let bad = raw(
        "w1 w2 ",
        Options {
            temperature: -1.0,
            ..Default::default()
        },
    );
    let too_long = raw(
        &"w3 ".repeat(300),
        Options {
            num_ctx: 64,
            num_predict: Some(4),
            ..Default::default()
        },
    );
    let (client, inbox) = channel();
    let jobs: Vec<_> = [good.clone(), bad, good, too_long]
        .into_iter()
        .map(|r| {
            let c = client.clone();
            std::thread::spawn(move || c.generate(r))
        })
        .collect();
    drop(client);
    engine.serve(inbox).unwrap();
    let results: Vec<_> = jobs.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results[0].as_ref().unwrap().token_ids, want);
    assert_eq!(results[2].as_ref().unwrap().token_ids, want);
    let err = results[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("temperature"), "{err}");
    // A prompt longer than the context is cut (with a warning), not refused.
    let cut = results[3].as_ref().unwrap();
    assert!(cut.prompt_token_ids.len() + cut.token_ids.len() <= 64);
}

#[derive(Deserialize)]
struct Golden {
    prompt: String,
    greedy_ids: Vec<u32>,
}

#[test]
fn golden_prompts_decoded_together_give_llama_cpp_tokens() {
    let mut engine = common::engine();
    if engine.isa() != chimera::cpu::Isa::Avx2 {
        eprintln!("skipped: exact agreement with llama.cpp needs the AVX2 kernels");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut goldens = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("golden-") && name.ends_with(".json") {
            let g: Vec<Golden> =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            goldens.extend(g);
        }
    }
    assert!(goldens.len() >= 2, "need several golden prompts");
    let requests = goldens
        .iter()
        .map(|g| {
            let r = raw(
                &g.prompt,
                Options {
                    temperature: 0.0,
                    num_predict: Some(g.greedy_ids.len()),
                    num_ctx: 2048,
                    ..Default::default()
                },
            );
            (r, Box::new(Quiet) as Box<dyn Observer>)
        })
        .collect();
    let (out, stats) = engine.generate_batch(requests).unwrap();
    for (g, o) in goldens.iter().zip(&out) {
        assert_eq!(o.token_ids, g.greedy_ids, "{:?}", g.prompt);
    }
    assert!(
        stats.mean_batch_size > 1.5,
        "mean batch {:.2}",
        stats.mean_batch_size
    );
}
