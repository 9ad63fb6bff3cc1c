//! `chimera report --scenario` through the binary, on a tiny random Gemma 3
//! written by the test (no download, a few seconds in all): every scenario,
//! every concurrency mode, the files and sections each run writes, the
//! scenario's arithmetic as recorded, the option layers, and greedy token
//! ids that do not depend on how the agents share the engine.
//!
//! Nothing here asserts a timing: only that the recorded figures agree with
//! each other.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::quantized::GgmlDType;
use chimera::model::Config;
use common::tiny::{tokenizer_json, Tiny};
use serde_json::Value;

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    model: String,
    tokenizer: String,
    input: String,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let cfg = Config::tiny();
    let model = root.join("tiny.gguf");
    Tiny::random(cfg.clone(), 31).write_gguf(&model, GgmlDType::F32);
    let tokenizer = root.join("tokenizer.json");
    fs::write(&tokenizer, tokenizer_json(cfg.vocab_size, &[])).unwrap();
    let input = root.join("artifacts");
    fs::create_dir_all(input.join("reports")).unwrap();
    fs::write(
        input.join("reports/runs.csv"),
        "model,tokens_s,ttft_ms\ngemma3,42.5,120\ngemma3,40.1,131\n",
    )
    .unwrap();
    fs::write(
        input.join("reports/bench.json"),
        r#"{"model": "gemma3", "throughput_tok_s": 41.7, "ttft_ms": 125.0}"#,
    )
    .unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    Setup {
        model: s(&model),
        tokenizer: s(&tokenizer),
        input: s(&input),
        root,
        _tmp: tmp,
    }
}

impl Setup {
    /// `chimera report` on the tiny model into `out`, greedy and short.
    fn report(&self, out: &str, extra: &[&str]) -> (PathBuf, Output) {
        let dir = self.root.join(out);
        let mut args = vec![
            "report",
            "--model",
            &self.model,
            "--tokenizer",
            &self.tokenizer,
            "--input",
            &self.input,
            "--threads",
            "2",
            "--temperature",
            "0",
            "-n",
            "6",
            "--quiet",
            "--output-dir",
        ];
        let dir_s = dir.to_str().unwrap().to_string();
        args.push(&dir_s);
        args.extend_from_slice(extra);
        let o = Command::new(env!("CARGO_BIN_EXE_chimera"))
            .args(&args)
            .output()
            .expect("running chimera");
        (dir, o)
    }

    fn ok(&self, out: &str, extra: &[&str]) -> PathBuf {
        let (dir, o) = self.report(out, extra);
        assert!(
            o.status.success(),
            "chimera report {extra:?} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        dir
    }

    /// Fails before the model loads, in one line containing `want`.
    fn refused(&self, extra: &[&str], want: &str) {
        let (dir, o) = self.report("refused", extra);
        assert_eq!(o.status.code(), Some(1), "{extra:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!dir.exists(), "nothing written");
    }
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn in_order(hay: &str, needles: &[&str]) {
    let mut at = 0;
    for n in needles {
        match hay[at..].find(n) {
            Some(p) => at += p + n.len(),
            None => panic!("missing or out of order: {n:?}\n--- in ---\n{hay}"),
        }
    }
}

/// The generated token ids of each agent's calls, A then B.
fn token_ids(metrics: &Value) -> Vec<Vec<Vec<u64>>> {
    metrics["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a["calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    c["token_ids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t.as_u64().unwrap())
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// Checks one scenario run folder and returns its metrics.json.
fn check_run(run: &Path, scenario: &str, mode: &str, labels: [&str; 2]) -> Value {
    for file in [
        "collector_report.md",
        "insight_report.md",
        "combined_report.md",
        "metrics.json",
    ] {
        assert!(run.join(file).is_file(), "{}", run.join(file).display());
    }
    let m = read_json(&run.join("metrics.json"));
    let sc = &m["scenario"];
    assert_eq!(sc["scenario"], scenario);
    assert_eq!(sc["concurrency"], mode);
    assert_eq!(sc["combined_report"], "combined_report.md");

    // Each agent's report is the plain report, under its scenario label.
    for (i, (file, label)) in ["collector_report.md", "insight_report.md"]
        .iter()
        .zip(labels)
        .enumerate()
    {
        let md = fs::read_to_string(run.join(file)).unwrap();
        assert!(
            md.starts_with(&format!(
                "# {label}\n\n# Technical Report: {label} Analysis\n"
            )),
            "{md}"
        );
        in_order(
            &md,
            &[
                "## Workflow Summary\n",
                "## Metrics\n",
                "## Key Findings\n",
                "## Recommendations\n",
                "## Persona Prompt\n",
                "## Data facts\n",
                "## Number check\n",
            ],
        );
        let (agent, view) = (&m["agents"][i], &sc["agents"][i]);
        assert_eq!(agent["label"], label);
        assert_eq!(view["label"], label);
        assert_eq!(view["role"], ["A", "B"][i]);
        assert_eq!(view["agent"], ["collector", "insight"][i]);
        assert_eq!(view["report_file"], *file);
        // The scenario's figures are the agent's own.
        assert_eq!(view["duration_s"], agent["workflow"]["total_s"]);
        assert_eq!(
            view["eval_tokens_per_s"],
            agent["metrics"]["eval_tokens_per_s"]
        );
        assert_eq!(view["ttft_ms"], agent["metrics"]["ttft_ms"]);
        assert_eq!(
            view["generated_tokens"],
            agent["metrics"]["generated_tokens"]
        );
    }

    // The arithmetic, as recorded.
    let t = &sc["timing"];
    let (da, db) = (
        f(&sc["agents"][0]["duration_s"]),
        f(&sc["agents"][1]["duration_s"]),
    );
    let wall = f(&t["concurrent_wall_s"]);
    assert!(wall > 0.0);
    assert!(close(f(&t["sequential_estimate_s"]), da + db), "{t}");
    assert!(close(f(&t["speedup"]), (da + db) / wall), "{t}");
    assert!(close(f(&t["efficiency"]), f(&t["speedup"]) / 2.0), "{t}");
    // Both agents ran within the wall time.
    assert!(da <= wall && db <= wall, "{t}");
    if mode == "sequential" {
        assert_eq!(t["contention_detected"], Value::Null);
        assert!(da + db <= wall, "one after the other: {t}");
    } else {
        assert_eq!(t["contention_detected"], f(&t["speedup"]) < 1.5);
    }
    let d = &sc["deltas"]["duration_s"];
    assert!(close(f(&d["abs"]), db - da));

    // Engines and the batch's own figures.
    let batch = &sc["batch"];
    match mode {
        "batched" => {
            assert_eq!(
                (sc["engines"].as_u64(), sc["threads_per_engine"].as_u64()),
                (Some(1), Some(2))
            );
            let generated: u64 = m["agents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["metrics"]["generated_tokens"].as_u64().unwrap())
                .sum();
            // Every call's first token comes from its prefill, the rest
            // from decode steps (one more when a stop token ends a call).
            let decoded = batch["decode_tokens"].as_u64().unwrap();
            assert!((generated - 4..=generated).contains(&decoded), "{batch}");
            let mean = f(&batch["mean_batch_size"]);
            assert!((1.0..=2.0).contains(&mean), "{batch}");
            assert!(close(mean, f(&batch["decode_tokens"]) / f(&batch["steps"])));
        }
        "threads" => {
            assert_eq!(
                (sc["engines"].as_u64(), sc["threads_per_engine"].as_u64()),
                (Some(2), Some(1))
            );
            assert_eq!(*batch, Value::Null);
        }
        _ => {
            assert_eq!(
                (sc["engines"].as_u64(), sc["threads_per_engine"].as_u64()),
                (Some(1), Some(2))
            );
            assert_eq!(*batch, Value::Null);
        }
    }

    // The combined report.
    let md = fs::read_to_string(run.join("combined_report.md")).unwrap();
    let mut sections = vec![
        format!("# Multi-Agent Report: {scenario}\n\n**Date:** "),
        format!("**Scenario:** {scenario} ("),
        format!("A = {}, B = {}\n", labels[0], labels[1]),
        format!("**Concurrency:** {mode} ("),
        "## Concurrency\n".into(),
        format!("| Concurrent wall time | {wall:.2} s |\n"),
        format!(
            "| Sequential estimate (sum of the agents' durations) | {:.2} s |\n",
            da + db
        ),
        format!(
            "| Speedup (sequential estimate / wall time) | {:.2}x |\n",
            f(&t["speedup"])
        ),
        format!(
            "| Efficiency (speedup / 2) | {:.1}% |\n",
            f(&t["efficiency"]) * 100.0
        ),
        "| Contention detected (speedup < 1.5) | ".into(),
    ];
    if mode == "batched" {
        sections.push("## Batch\n".into());
        sections.push(format!(
            "| Mean batch size | {:.2} |\n",
            f(&batch["mean_batch_size"])
        ));
    }
    sections.extend([
        format!(
            "## Agents\n\n| | A: {} | B: {} | Δ (B − A) |\n",
            labels[0], labels[1]
        ),
        "| Throughput (tok/s) | ".into(),
        "| TTFT (ms) | ".into(),
        format!("| Duration (s) | {da:.2} | {db:.2} | "),
        "| Tokens generated | ".into(),
        "| Report | [collector_report.md](collector_report.md) | [insight_report.md](insight_report.md) | |\n".into(),
        "## Configurations\n".into(),
        format!("- **A: {}** (", labels[0]),
        format!("- **B: {}** (", labels[1]),
    ]);
    let refs: Vec<&str> = sections.iter().map(String::as_str).collect();
    in_order(&md, &refs);
    if mode == "batched" {
        assert!(!md.contains("not applicable"));
    } else if mode == "sequential" {
        assert!(md.contains("| not applicable (the agents ran one after the other) |"));
        assert!(!md.contains("## Batch"));
    }
    m
}

/// The summary files over `runs` runs of a scenario.
fn check_summary(dir: &Path, scenario: &str, mode: &str, runs: usize) -> Value {
    let s = read_json(&dir.join("summary.json"));
    assert_eq!(s["runs_completed"].as_u64(), Some(runs as u64));
    assert_eq!(s["agents"].as_array().unwrap().len(), 2);
    let sc = &s["scenario"];
    assert_eq!(sc["scenario"], scenario);
    assert_eq!(sc["concurrency"], mode);
    let walls: Vec<f64> = (1..=runs)
        .map(|n| {
            f(
                &read_json(&dir.join(format!("run_{n}/metrics.json")))["scenario"]["timing"]
                    ["concurrent_wall_s"],
            )
        })
        .collect();
    let got: Vec<f64> = sc["concurrent_wall_s"]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(f)
        .collect();
    assert_eq!(got, walls);
    assert_eq!(sc["speedup"]["n"].as_u64(), Some(runs as u64));
    assert_eq!(sc["mean_batch_size"].is_object(), mode == "batched");
    let md = fs::read_to_string(dir.join("summary.md")).unwrap();
    in_order(
        &md,
        &[
            "# chimera report: summary\n",
            "\n## ",
            &format!("\n## Scenario: {scenario} ({mode})\n"),
            "| Concurrent wall time (s) | ",
            "| Speedup (x) | ",
            "| Efficiency (speedup / 2) | ",
            "[run_1/combined_report.md](run_1/combined_report.md)",
        ],
    );
    s
}

#[test]
fn scenarios_and_concurrency_modes_on_a_tiny_model() {
    let s = setup();
    let labels = ["Baseline Collector", "Chimera Insight"];

    // baseline_vs_chimera in the three modes: same greedy tokens in each.
    let mut ids = Vec::new();
    for mode in ["sequential", "threads", "batched"] {
        let dir = s.ok(
            &format!("bvc_{mode}"),
            &[
                "--scenario",
                "baseline_vs_chimera",
                "--concurrency",
                mode,
                "--b",
                "num_ctx=1024",
            ],
        );
        let m = check_run(&dir.join("run_1"), "baseline_vs_chimera", mode, labels);
        check_summary(&dir, "baseline_vs_chimera", mode, 1);
        let sc = &m["scenario"];
        // The baseline has the engine defaults (num_ctx 2048) under the
        // shared flags; the Chimera agent its persona and --b.
        assert_eq!(sc["agents"][0]["baseline"], true);
        assert_eq!(sc["agents"][0]["options"]["num_ctx"], 2048);
        assert_eq!(sc["agents"][0]["options"]["temperature"], 0.0);
        assert_eq!(sc["agents"][1]["baseline"], false);
        assert_eq!(sc["agents"][1]["options"]["num_ctx"], 1024);
        assert_eq!(
            sc["agents"][1]["overrides"],
            serde_json::json!({"num_ctx": 1024})
        );
        let diff: Vec<&str> = sc["option_differences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["option"].as_str().unwrap())
            .collect();
        assert_eq!(diff, ["num_ctx"]);
        let t = token_ids(&m);
        assert!(t.iter().flatten().all(|c| !c.is_empty() && c.len() <= 6));
        ids.push(t);
    }
    assert_eq!(ids[0], ids[1], "threads gave other tokens than sequential");
    assert_eq!(ids[0], ids[2], "batched gave other tokens than sequential");

    // chimera_hetero (batched by default): [a] and [b] from a file, --b
    // over [b], two runs.
    let conf = s.root.join("scenario.toml");
    fs::write(
        &conf,
        "[a]\nnum_ctx = 512\ntop_k = 5\n\n[b]\nnum_predict = 9\nrepeat_penalty = 1.3\n",
    )
    .unwrap();
    let dir = s.ok(
        "hetero",
        &[
            "--scenario",
            "chimera_hetero",
            "--scenario-config",
            conf.to_str().unwrap(),
            "--b",
            "num_predict=4",
            "--runs",
            "2",
        ],
    );
    let labels = ["Chimera Agent A", "Chimera Agent B"];
    let m = check_run(&dir.join("run_2"), "chimera_hetero", "batched", labels);
    check_run(&dir.join("run_1"), "chimera_hetero", "batched", labels);
    check_summary(&dir, "chimera_hetero", "batched", 2);
    let (a, b) = (&m["scenario"]["agents"][0], &m["scenario"]["agents"][1]);
    assert_eq!(
        (
            a["options"]["num_ctx"].as_u64(),
            a["options"]["top_k"].as_u64()
        ),
        (Some(512), Some(5))
    );
    assert_eq!(a["options"]["num_predict"].as_u64(), Some(6), "shared -n");
    assert_eq!(
        b["options"]["num_predict"].as_u64(),
        Some(4),
        "--b over [b]"
    );
    assert_eq!(b["options"]["repeat_penalty"].as_f64(), Some(1.3));
    assert_eq!(
        b["options"]["num_ctx"].as_u64(),
        Some(4096),
        "the persona's"
    );
    for c in m["agents"][1]["calls"].as_array().unwrap() {
        assert!(c["token_ids"].as_array().unwrap().len() <= 4);
    }

    // chimera_homo with threads: --a on both agents.
    let dir = s.ok(
        "homo",
        &[
            "--scenario",
            "chimera_homo",
            "--concurrency",
            "threads",
            "--a",
            "top_k=3",
        ],
    );
    let m = check_run(&dir.join("run_1"), "chimera_homo", "threads", labels);
    for v in m["scenario"]["agents"].as_array().unwrap() {
        assert_eq!(v["options"]["top_k"].as_u64(), Some(3));
        assert_eq!(v["overrides"], serde_json::json!({"top_k": 3}));
    }
}

#[test]
fn scenario_flags_are_checked_before_the_model_loads() {
    let s = setup();
    s.refused(&["--a", "top_k=3"], "--a needs --scenario");
    s.refused(
        &["--concurrency", "threads"],
        "--concurrency needs --scenario",
    );
    s.refused(
        &["--scenario", "baseline_vs_chimera", "--a", "top_k=3"],
        "the Baseline Collector runs with default options",
    );
    s.refused(
        &["--scenario", "chimera_homo", "--b", "top_k=3"],
        "both agents take the same overrides",
    );
    s.refused(
        &["--scenario", "chimera_hetero", "--collector", "top_k=3"],
        "--collector and --insight do not apply with --scenario",
    );
    s.refused(
        &["--scenario", "chimera_hetero", "--agent", "insight"],
        "--agent does not apply",
    );
    s.refused(
        &["--scenario", "chimera_hetero", "--b", "top_k=x"],
        "invalid --b `top_k=x`",
    );
    let conf = s.root.join("bad.toml");
    fs::write(&conf, "[a]\ntemprature = 0.2\n").unwrap();
    s.refused(
        &[
            "--scenario",
            "chimera_hetero",
            "--scenario-config",
            conf.to_str().unwrap(),
        ],
        "unknown field `temprature`",
    );
    s.refused(
        &["--scenario", "chimera_hetero", "--a", "num_ctx=0"],
        "options of agent A (Chimera Agent A): invalid num_ctx 0",
    );
}
