//! Side by side with llama.cpp: runs a `llama-bench` binary on the same
//! GGUF file with the same sizes, repetitions, threads and ubatch
//! (`-o json`), and pairs its tests with ours by name (`pp512`, `tg128`).

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{Kind, Settings, Sizes, TestResult};
use crate::engine::Device;

/// One test as llama-bench reported it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlamaTest {
    pub test: String,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub avg_ts: f64,
    pub stddev_ts: f64,
    pub samples_ts: Vec<f64>,
    /// Milliseconds per sample (llama-bench's `samples_ns` / 1e6).
    pub samples_ms: Vec<f64>,
}

/// chimera / llama.cpp for one test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    pub test: String,
    pub chimera_ts: f64,
    pub llama_ts: f64,
    /// `chimera_ts / llama_ts`: above 1 means chimera is faster.
    pub ratio: f64,
}

/// One llama-bench run: its command, what it reported, the ratios, or why
/// there is nothing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LlamaRun {
    pub command: String,
    pub build_commit: String,
    pub model_type: String,
    pub threads: usize,
    pub tests: Vec<LlamaTest>,
    pub ratios: Vec<Ratio>,
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct Row {
    #[serde(default)]
    build_commit: String,
    #[serde(default)]
    model_type: String,
    #[serde(default)]
    n_threads: usize,
    n_prompt: usize,
    n_gen: usize,
    #[serde(default)]
    n_depth: usize,
    avg_ts: f64,
    #[serde(default)]
    stddev_ts: f64,
    #[serde(default)]
    samples_ts: Vec<f64>,
    #[serde(default)]
    samples_ns: Vec<f64>,
}

/// The tests of llama-bench's `-o json` output (build, model type and
/// thread count of the first row alongside).
pub fn parse(json: &str) -> Result<(Vec<LlamaTest>, String, String, usize)> {
    let rows: Vec<Row> =
        serde_json::from_str(json).context("llama-bench printed no JSON array of tests")?;
    let meta = rows
        .first()
        .map(|r| (r.build_commit.clone(), r.model_type.clone(), r.n_threads))
        .unwrap_or_default();
    let tests = rows
        .into_iter()
        .map(|r| {
            let name = match (r.n_prompt, r.n_gen) {
                (p, 0) => format!("pp{p}"),
                (0, g) => format!("tg{g}"),
                (p, g) => format!("pp{p}+tg{g}"),
            };
            let name = if r.n_depth > 0 {
                format!("{name} @ d{}", r.n_depth)
            } else {
                name
            };
            LlamaTest {
                test: name,
                n_prompt: r.n_prompt,
                n_gen: r.n_gen,
                avg_ts: r.avg_ts,
                stddev_ts: r.stddev_ts,
                samples_ts: r.samples_ts,
                samples_ms: r.samples_ns.iter().map(|ns| ns / 1e6).collect(),
            }
        })
        .collect();
    Ok((tests, meta.0, meta.1, meta.2))
}

/// chimera / llama.cpp mean t/s for every test both ran.
pub fn ratios(ours: &[TestResult], theirs: &[LlamaTest]) -> Vec<Ratio> {
    ours.iter()
        .filter(|t| matches!(t.kind, Kind::Pp | Kind::Tg))
        .filter_map(|t| {
            let l = theirs.iter().find(|l| l.test == t.test)?;
            let c = t.ts.as_ref()?.mean;
            Some(Ratio {
                test: t.test.clone(),
                chimera_ts: c,
                llama_ts: l.avg_ts,
                ratio: if l.avg_ts > 0.0 { c / l.avg_ts } else { 0.0 },
            })
        })
        .collect()
}

fn list(v: &[usize]) -> String {
    v.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// llama-bench's arguments for the same measurement.
pub fn args(file: &Path, sizes: &Sizes, threads: usize, s: &Settings) -> Vec<String> {
    let mut a = vec![
        "-m".to_string(),
        file.display().to_string(),
        "-p".into(),
        list(&sizes.n_prompt),
        "-n".into(),
        list(&sizes.n_gen),
        "-r".into(),
        sizes.repetitions.to_string(),
        "-t".into(),
        threads.to_string(),
        "-ub".into(),
        s.engine.ubatch.to_string(),
    ];
    match s.engine.device {
        Device::Cpu => a.extend(["-ngl".into(), "0".into()]),
        Device::Cuda(_) => a.extend([
            "-ngl".into(),
            s.engine.num_gpu.map_or("99".into(), |n| n.to_string()),
        ]),
        Device::Auto => {}
    }
    if !sizes.warmup {
        a.push("--no-warmup".into());
    }
    a.extend(["-o".into(), "json".into()]);
    a
}

/// Runs llama-bench and pairs its tests with ours (filled in by
/// [`LlamaRun::pair`]); a failure is recorded, never raised.
pub fn run(bin: &Path, file: &Path, sizes: &Sizes, threads: usize, s: &Settings) -> LlamaRun {
    let a = args(file, sizes, threads, s);
    let mut r = LlamaRun {
        command: std::iter::once(bin.display().to_string())
            .chain(a.iter().cloned())
            .collect::<Vec<_>>()
            .join(" "),
        threads,
        ..Default::default()
    };
    if !file.is_file() || file.extension().is_none_or(|e| e != "gguf") {
        r.error = Some(format!(
            "llama-bench reads GGUF files only; {} is not one",
            file.display()
        ));
        return r;
    }
    match Command::new(bin).args(&a).output() {
        Err(e) => r.error = Some(format!("cannot run {}: {e}", bin.display())),
        Ok(out) if !out.status.success() => {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            r.error = Some(format!(
                "llama-bench failed ({}): {}",
                out.status,
                last.trim()
            ));
        }
        Ok(out) => match parse(&String::from_utf8_lossy(&out.stdout)) {
            Ok((tests, build, model_type, n_threads)) => {
                r.tests = tests;
                r.build_commit = build;
                r.model_type = model_type;
                if n_threads > 0 {
                    r.threads = n_threads;
                }
            }
            Err(e) => r.error = Some(format!("{e:#}")),
        },
    }
    r
}

impl LlamaRun {
    /// Fills [`LlamaRun::ratios`] against our tests.
    pub fn pair(&mut self, ours: &[TestResult]) {
        self.ratios = ratios(ours, &self.tests);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::stats::Stat;

    const SAMPLE: &str = r#"[
      {"build_commit": "0c1e570", "model_type": "gemma3 270M Q4_K - Medium", "n_threads": 2,
       "n_prompt": 512, "n_gen": 0, "n_depth": 0, "avg_ns": 1, "avg_ts": 400.0, "stddev_ts": 4.0,
       "samples_ns": [1250000000, 1310000000], "samples_ts": [409.6, 390.8]},
      {"build_commit": "0c1e570", "model_type": "gemma3 270M Q4_K - Medium", "n_threads": 2,
       "n_prompt": 0, "n_gen": 128, "n_depth": 0, "avg_ts": 50.0, "stddev_ts": 0.5,
       "samples_ns": [2560000000], "samples_ts": [50.0]}
    ]"#;

    #[test]
    fn parses_llama_bench_json() {
        let (t, build, ty, threads) = parse(SAMPLE).unwrap();
        assert_eq!((build.as_str(), threads), ("0c1e570", 2));
        assert_eq!(ty, "gemma3 270M Q4_K - Medium");
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].test, "pp512");
        assert_eq!(t[0].samples_ms, [1250.0, 1310.0]);
        assert_eq!(t[1].test, "tg128");
        assert_eq!(t[1].avg_ts, 50.0);
        assert!(parse("not json").is_err());
    }

    #[test]
    fn ratios_pair_tests_by_name() {
        let (theirs, ..) = parse(SAMPLE).unwrap();
        let ours = vec![
            TestResult {
                test: "pp512".into(),
                kind: Kind::Pp,
                n_prompt: 512,
                n_gen: 0,
                prompt_tokens: 512,
                ms: Stat::of(&[1000.0]),
                ts: Some(Stat::of(&[500.0])),
            },
            TestResult {
                test: "ttft512".into(),
                kind: Kind::Ttft,
                n_prompt: 512,
                n_gen: 1,
                prompt_tokens: 512,
                ms: Stat::of(&[1000.0]),
                ts: None,
            },
        ];
        let r = ratios(&ours, &theirs);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].test.as_str(), r[0].ratio), ("pp512", 1.25));
    }

    #[test]
    fn arguments_mirror_the_settings() {
        let s = Settings {
            sizes: Sizes {
                n_prompt: vec![128, 512],
                n_gen: vec![0],
                repetitions: 3,
                warmup: false,
            },
            engine: crate::engine::EngineConfig {
                threads: Some(2),
                ubatch: 256,
                device: Device::Cpu,
                num_gpu: None,
            },
        };
        let a = args(Path::new("m.gguf"), &s.sizes, 2, &s).join(" ");
        assert_eq!(
            a,
            "-m m.gguf -p 128,512 -n 0 -r 3 -t 2 -ub 256 -ngl 0 --no-warmup -o json"
        );
    }
}
