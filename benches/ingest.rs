//! Ingestion benchmark: generate a tree of realistic small benchmark files
//! (CSV runs, JSON results, Markdown reports) and time `scan` (walk, read,
//! parse, metrics extraction) plus the summary text and the facts.
//!
//! `cargo bench --bench ingest`; `CHIMERA_BENCH_FILES=N` changes the file
//! count (default 10,000), `CHIMERA_BENCH_REPS=N` the timed repetitions (5).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use chimera::ingest::{self, IngestOptions};

/// A tiny deterministic generator, so every run sees the same tree.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }
}

const PROMPTS: [&str; 5] = [
    "banter prompt: Player failed a mission but needs encouragement.",
    "Give a battle quote for a co-op shooter win.",
    "Prompt for rare loot find celebration banter.",
    "Craft a witty remark after a close racing finish.",
    "Motivate a teammate before a final boss fight.",
];

fn csv_file(rng: &mut Lcg, model: &str) -> String {
    let mut s = String::from(
        "timestamp,model,prompt_index,prompt_text,ttft_s,tokens_s,load_s,prompt_eval_s,eval_s,eval_count,error\n",
    );
    for i in 0..20 {
        let _ = writeln!(
            s,
            "2025-10-08T16:29:{:02}.043983+00:00,{model},{},\"{}\",{:.6},{:.2},{:.6},{:.6},{:.6},{},",
            i % 60,
            i % 5 + 1,
            PROMPTS[i % 5],
            rng.range(0.05, 3.0),
            rng.range(30.0, 300.0),
            rng.range(0.04, 2.5),
            rng.range(0.005, 0.5),
            rng.range(0.1, 10.0),
            rng.range(10.0, 900.0) as u32,
        );
    }
    s
}

fn json_file(rng: &mut Lcg, model: &str) -> String {
    let mut results = Vec::new();
    for p in PROMPTS {
        results.push(serde_json::json!({
            "prompt": p,
            "ttft_s": rng.range(0.05, 3.0),
            "tokens_s": rng.range(30.0, 300.0),
            "load_s": rng.range(0.04, 2.5),
            "prompt_eval_s": rng.range(0.005, 0.5),
            "eval_s": rng.range(0.1, 10.0),
            "eval_count": rng.range(10.0, 900.0) as u32,
            "response_chars": rng.range(40.0, 4000.0) as u32,
        }));
    }
    let doc = serde_json::json!({
        "generated_at": "2025-10-08T16:29:11.044799+00:00",
        "model": model,
        "options": {"temperature": 0.3, "top_p": 0.9, "num_ctx": 2048},
        "results": results,
        "system": {"gpu": [{"name": "NVIDIA GeForce RTX 4080 Laptop GPU",
                            "utilization_gpu": rng.range(0.0, 100.0).round(),
                            "memory_used_mb": rng.range(200.0, 12000.0).round()}]},
        "summary": {"mean_ttft_s": rng.range(0.05, 3.0), "mean_tokens_s": rng.range(30.0, 300.0)}
    });
    serde_json::to_string_pretty(&doc).unwrap()
}

fn md_file(rng: &mut Lcg, model: &str, i: usize) -> String {
    let mut s = format!("# {model} Benchmark Report {i}\n\n## Overview\n");
    s.push_str("- Goal: establish a baseline for gaming banter generation.\n");
    let _ = writeln!(
        s,
        "- Mean TTFT: {:.3} s; mean throughput: {:.2} tokens/s\n",
        rng.range(0.05, 3.0),
        rng.range(30.0, 300.0)
    );
    s.push_str("## Per-Prompt Performance\n\n| Prompt | TTFT (s) | Tokens/s | Eval Count |\n| --- | --- | --- | --- |\n");
    for p in PROMPTS {
        let _ = writeln!(
            s,
            "| {p} | {:.3} | {:.2} | {} |",
            rng.range(0.05, 3.0),
            rng.range(30.0, 300.0),
            rng.range(10.0, 900.0) as u32
        );
    }
    s.push_str("\n## Observations\n\n");
    for k in 0..10 {
        let _ = writeln!(
            s,
            "- Observation {k}: throughput stayed within {:.1}% of the mean across {} runs.",
            rng.range(0.5, 5.0),
            rng.range(3.0, 40.0) as u32
        );
    }
    s.push_str("\n```text\n# not a heading\n```\n");
    s
}

/// 40% CSV, 40% JSON, 20% Markdown, 100 files per run folder.
fn generate(root: &Path, n: usize) -> u64 {
    let mut rng = Lcg(42);
    let models = ["gemma3:latest", "gemma3:270m", "llama3.1:8b-instruct-q4_0"];
    let mut bytes = 0u64;
    for i in 0..n {
        let dir = root.join(format!("reports/run_{:03}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&dir).unwrap();
        }
        let model = models[i % models.len()];
        let (name, text) = match i % 5 {
            0 | 1 => (format!("bench_{i:05}_runs.csv"), csv_file(&mut rng, model)),
            2 | 3 => (
                format!("bench_{i:05}_summary.json"),
                json_file(&mut rng, model),
            ),
            _ => (
                format!("bench_{i:05}_report.md"),
                md_file(&mut rng, model, i),
            ),
        };
        bytes += text.len() as u64;
        fs::write(dir.join(name), text).unwrap();
    }
    bytes
}

fn main() {
    let n: usize = std::env::var("CHIMERA_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let reps: usize = std::env::var("CHIMERA_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let tmp = tempfile::tempdir().expect("temp dir");
    let t = Instant::now();
    let bytes = generate(tmp.path(), n);
    println!(
        "generated {n} files ({:.1} MB) in {:.2} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let opts = IngestOptions::default();
    let run = || {
        let t0 = Instant::now();
        let ing = ingest::scan(tmp.path(), &opts).expect("scan");
        let t1 = Instant::now();
        let summary = ing.summary_text();
        let ts = Instant::now();
        let facts = ing.facts();
        let t2 = Instant::now();
        if std::env::var_os("CHIMERA_BENCH_VERBOSE").is_some() {
            eprintln!("  summary {:?}, facts {:?}", ts - t1, t2 - ts);
        }
        assert_eq!(ing.files.len(), n, "every generated file is ingested");
        assert!(summary.starts_with(&format!("Total files analyzed: {n}\n")));
        (t1 - t0, t2 - t1, ing.metrics.len(), facts.metrics.len())
    };

    let (_, _, rows, groups) = run(); // warm-up (page cache, allocator)
    let mut scan = Vec::new();
    let mut post = Vec::new();
    for _ in 0..reps {
        let (s, p, _, _) = run();
        scan.push(s);
        post.push(p);
    }
    let mean = |v: &[Duration]| v.iter().sum::<Duration>().as_secs_f64() / v.len() as f64;
    let total: Vec<Duration> = scan.iter().zip(&post).map(|(a, b)| *a + *b).collect();
    let best = total.iter().min().unwrap().as_secs_f64();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{rows} metric rows in {groups} metric groups; {threads} threads");
    println!(
        "scan (walk + read + parse + metrics): mean {:.3} s; summary + facts: mean {:.3} s",
        mean(&scan),
        mean(&post)
    );
    println!(
        "ingest {n} files: mean {:.3} s, best {:.3} s over {reps} runs after a warm-up = {:.0} files/s",
        mean(&total),
        best,
        n as f64 / mean(&total)
    );
}
