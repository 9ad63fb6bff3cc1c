//! `chimera report` through the binary: the real default model over the
//! shared fixture (short `num_predict`), a small tree for warmup,
//! overrides, personas and `--overwrite`, and bad inputs that must fail in
//! one line before the model loads.
//!
//! The model runs need the default model in the cache (`chimera fetch`,
//! or fetched on first use); the fixture test prints a line and returns
//! when `../shared/fixtures/chimeraforge` is absent.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn chimera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chimera"))
        .args(args)
        .output()
        .expect("running chimera")
}

fn fixture() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/chimeraforge");
    if p.is_dir() {
        Some(p)
    } else {
        println!("skipped: ../shared/fixtures/chimeraforge not found");
        None
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

/// Asserts `needles` occur in `hay` in this order; returns the position
/// after the last.
fn in_order(hay: &str, needles: &[&str]) -> usize {
    let mut at = 0;
    for n in needles {
        match hay[at..].find(n) {
            Some(p) => at += p + n.len(),
            None => panic!("missing or out of order: {n:?}\n--- in ---\n{hay}"),
        }
    }
    at
}

fn stderr_one_line(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "one line expected, got:\n{err}");
    err
}

/// The body of a report: between the header's `---` and the one before
/// Workflow Summary.
fn body(report: &str) -> &str {
    let start = report.find("\n---\n\n").unwrap() + "\n---\n\n".len();
    let end = report.rfind("\n---\n\n## Workflow Summary").unwrap();
    &report[start..end]
}

/// Checks one call's metrics for internal consistency.
fn check_call(c: &Value, num_predict: u64) {
    let m = &c["metrics"];
    let generated = m["generated_tokens"].as_u64().unwrap();
    assert_eq!(generated, c["token_ids"].as_array().unwrap().len() as u64);
    assert!(generated <= num_predict);
    assert_eq!(c["options"]["num_predict"].as_u64(), Some(num_predict));
    assert_eq!(
        m["eval_tokens"].as_u64().unwrap(),
        generated.saturating_sub(1)
    );
    let (eval_tokens, eval_ms) = (f(&m["eval_tokens"]), f(&m["eval_ms"]));
    if eval_tokens > 0.0 {
        assert!(eval_ms > 0.0);
        assert!(
            close(eval_tokens / eval_ms * 1000.0, f(&m["eval_tokens_per_s"])),
            "{m}"
        );
    }
    let (prompt_tokens, prompt_ms) = (f(&m["prompt_tokens"]), f(&m["prompt_eval_ms"]));
    assert!(prompt_tokens > 100.0 && prompt_ms > 0.0, "{m}");
    assert!(
        close(
            prompt_tokens / prompt_ms * 1000.0,
            f(&m["prompt_tokens_per_s"])
        ),
        "{m}"
    );
    assert!(f(&m["prompt_eval_ms"]) <= f(&m["ttft_ms"]), "{m}");
    assert!(f(&m["ttft_ms"]) <= f(&m["total_ms"]), "{m}");
    assert!(f(&m["eval_ms"]) <= f(&m["total_ms"]), "{m}");
    assert!(f(&m["load_ms"]) > 0.0);
    assert_eq!(
        m["truncated_prompt_tokens"].as_u64(),
        Some(0),
        "prompts fit num_ctx"
    );
    let stop = m["stop_reason"].as_str().unwrap();
    assert!(
        ["eos", "end_of_turn", "stop", "num_predict"].contains(&stop),
        "{stop}"
    );
    assert!(c["text"].is_string());
}

/// Mean, sample stddev and CV of `values`, recomputed here.
fn stats(values: &[f64]) -> (f64, f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = if values.len() < 2 {
        0.0
    } else {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    };
    (mean, sd, if mean != 0.0 { sd / mean } else { 0.0 })
}

fn check_stat(stat: &Value, want_values: &[f64]) {
    let values: Vec<f64> = stat["values"].as_array().unwrap().iter().map(f).collect();
    assert_eq!(values, want_values);
    let (mean, sd, cv) = stats(want_values);
    assert!(close(f(&stat["mean"]), mean), "{stat}");
    assert!(close(f(&stat["stddev"]), sd), "{stat}");
    assert!(close(f(&stat["cv"]), cv), "{stat}");
    assert_eq!(stat["n"].as_u64(), Some(want_values.len() as u64));
}

/// Every section of one agent report, checked against metrics.json and
/// the ingestion of the same tree.
fn check_report(
    report: &str,
    agent: &Value,
    persona_start: &str,
    label: &str,
    config: &str,
    ing: &chimera::ingest::Ingest,
) {
    let header = format!("# {label}\n\n# Technical Report: {label} Analysis\n\n**Date:** ");
    assert!(report.starts_with(&header), "{report}");
    let date = &report[header.len()..header.len() + 10];
    assert!(
        date.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 {
            b == b'-'
        } else {
            b.is_ascii_digit()
        }),
        "date {date}"
    );
    let m = &agent["metrics"];
    let w = &agent["workflow"];
    let summary_block = format!(
        "- Data summary:\n```\n{}\n```\n",
        ing.summary_text().trim_end()
    );
    let files_line = format!("- Files analyzed: {}\n", ing.files.len());
    let exec_line = format!(
        "- Execution time: {:.2}s (ingest {:.2}s | analysis {:.2}s | report {:.2}s)\n",
        f(&w["total_s"]),
        f(&w["ingest_s"]),
        f(&w["analysis_s"]),
        f(&w["report_s"])
    );
    let metrics_block = format!(
        "## Metrics\n- Throughput: {:.2} tok/s\n- TTFT: {:.2} ms\n- Total Duration: {:.2} ms\n\
         - Tokens Generated: {}\n- Prompt Eval: {:.2} ms\n- Eval Duration: {:.2} ms\n\
         - Load Duration: {:.2} ms\n\n",
        f(&m["eval_tokens_per_s"]),
        f(&m["ttft_ms"]),
        f(&m["total_ms"]),
        m["generated_tokens"],
        f(&m["prompt_eval_ms"]),
        f(&m["eval_ms"]),
        f(&m["load_ms"])
    );
    let facts = format!(
        "## Data facts\n_Computed by chimera from the ingested files, not by the model._\n\n{}\n",
        ing.facts().to_markdown().trim_end()
    );
    let check = &agent["number_check"];
    let unmatched = check["unmatched"].as_array().unwrap().len();
    let check_line = if check["figures"].as_u64() == Some(0) {
        "The model's text holds no figures to check.\n".to_string()
    } else {
        format!(
            "- Figures checked: {} (against {} known numbers)\n- Not found: {unmatched}\n",
            check["figures"], check["known_numbers"]
        )
    };
    in_order(
        report,
        &[
            &format!("**Agent Type:** {label}\n"),
            "**Model:** gemma3-270m-q4_k_m\n",
            &format!("**Configuration:** {config}\n\n---\n\n"),
            "\n---\n\n## Workflow Summary\n",
            &files_line,
            &exec_line,
            &summary_block,
            &metrics_block,
            "## Key Findings\n",
            "## Recommendations\n",
            &format!("## Persona Prompt\n```\n{persona_start}"),
            &facts,
            "## Number check\n",
            &check_line,
        ],
    );
    // Findings and recommendations are the parsed ones, as bullets.
    for key in ["key_findings", "recommendations"] {
        for item in agent["analysis"][key].as_array().unwrap() {
            assert!(report.contains(&format!("\n- {}\n", item.as_str().unwrap())));
        }
    }
    for u in check["unmatched"].as_array().unwrap() {
        assert!(report.contains(&format!("\n| {} | ", u["figure"].as_str().unwrap())));
    }
    // The model's report text is the body, as written.
    let text = agent["calls"][1]["text"].as_str().unwrap().trim();
    if text.is_empty() {
        assert_eq!(body(report), "_The model returned no text._");
    } else {
        assert!(
            body(report).starts_with(text),
            "body differs from the report call's text"
        );
    }
}

#[test]
fn report_on_the_fixture_with_the_real_model() {
    let Some(input) = fixture() else { return };
    let ing = chimera::ingest::scan(&input, &Default::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let (input_s, out_s) = (input.to_str().unwrap(), out.to_str().unwrap());
    let args = [
        "report",
        "--input",
        input_s,
        "--output-dir",
        out_s,
        "-n",
        "24",
        "--runs",
        "2",
        "--seed",
        "11",
    ];
    let o = chimera(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // stderr is not a terminal here: no progress display, only the warning
    // about the fixture's unreadable file.
    for line in stderr.lines() {
        assert!(line.starts_with("warning: skipped "), "{line}");
    }
    in_order(
        &stdout,
        &[
            "/run_1 (collector_report.md, insight_report.md, metrics.json)\n",
            "/run_2 (collector_report.md, insight_report.md, metrics.json)\n",
            "summary.json and ",
        ],
    );

    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["run_1", "run_2", "summary.json", "summary.md"],
        "no temporary files left"
    );

    let mut per_run = Vec::new();
    for n in 1..=2 {
        let dir = out.join(format!("run_{n}"));
        let mut files: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(
            files,
            ["collector_report.md", "insight_report.md", "metrics.json"]
        );
        let metrics = read_json(&dir.join("metrics.json"));
        assert_eq!(metrics["run"].as_u64(), Some(n));
        assert_eq!(metrics["model"], "gemma3-270m-q4_k_m");
        let agents = metrics["agents"].as_array().unwrap();
        assert_eq!(agents.len(), 2);
        for (agent, (key, label, name, temp)) in agents.iter().zip([
            ("collector", "Chimera Agent A", "DataCollector-9000", "0.6"),
            ("insight", "Chimera Insight", "InsightAgent", "0.8"),
        ]) {
            assert_eq!(agent["agent"], key);
            assert_eq!(
                agent["files_analyzed"].as_u64(),
                Some(ing.files.len() as u64)
            );
            let calls = agent["calls"].as_array().unwrap();
            assert_eq!(calls.len(), 2);
            assert_eq!(calls[0]["stage"], "analysis");
            assert_eq!(calls[1]["stage"], "report");
            for c in calls {
                check_call(c, 24);
                assert_eq!(c["options"]["seed"].as_u64(), Some(11));
                assert_eq!(c["options"]["num_ctx"].as_u64(), Some(4096));
            }
            // The agent's block combines its two calls.
            let m = &agent["metrics"];
            let sum = |k: &str| calls.iter().map(|c| f(&c["metrics"][k])).sum::<f64>();
            assert_eq!(f(&m["generated_tokens"]), sum("generated_tokens"));
            assert!(close(f(&m["eval_ms"]), sum("eval_ms")));
            assert!(close(
                f(&m["eval_tokens_per_s"]),
                sum("eval_tokens") / sum("eval_ms") * 1000.0
            ));
            assert!(close(f(&m["ttft_ms"]), sum("ttft_ms") / 2.0));
            assert!(close(f(&m["total_ms"]), sum("total_ms")));
            assert_eq!(f(&m["load_ms"]), f(&calls[0]["metrics"]["load_ms"]));
            // Stage times hold their calls.
            let w = &agent["workflow"];
            assert!(f(&w["analysis_s"]) * 1000.0 >= f(&calls[0]["metrics"]["total_ms"]));
            assert!(f(&w["report_s"]) * 1000.0 >= f(&calls[1]["metrics"]["total_ms"]));
            assert!(
                f(&w["total_s"])
                    >= f(&w["ingest_s"]) + f(&w["analysis_s"]) + f(&w["report_s"]) - 1e-6
            );

            let report = fs::read_to_string(dir.join(format!("{key}_report.md"))).unwrap();
            let config = format!(
                "num_gpu=0, num_ctx=4096, temp={temp}, top_p=0.9, top_k=40, repeat_penalty=1.1"
            );
            check_report(
                &report,
                agent,
                &format!("You are {name}"),
                label,
                &config,
                &ing,
            );
        }
        per_run.push(metrics);
    }

    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["runs_requested"].as_u64(), Some(2));
    assert_eq!(summary["runs_completed"].as_u64(), Some(2));
    assert_eq!(summary["warmup_runs"].as_u64(), Some(0));
    assert_eq!(summary["run_dirs"], serde_json::json!(["run_1", "run_2"]));
    let md = fs::read_to_string(out.join("summary.md")).unwrap();
    for (i, a) in summary["agents"].as_array().unwrap().iter().enumerate() {
        let of = |k: &str| -> Vec<f64> {
            per_run
                .iter()
                .map(|r| f(&r["agents"][i]["metrics"][k]))
                .collect()
        };
        check_stat(&a["eval_tokens_per_s"], &of("eval_tokens_per_s"));
        check_stat(&a["ttft_ms"], &of("ttft_ms"));
        check_stat(&a["total_ms"], &of("total_ms"));
        check_stat(&a["generated_tokens"], &of("generated_tokens"));
        let stage_of = |s: usize, k: &str| -> Vec<f64> {
            per_run
                .iter()
                .map(|r| f(&r["agents"][i]["calls"][s]["metrics"][k]))
                .collect()
        };
        for (s, call) in a["calls"].as_array().unwrap().iter().enumerate() {
            check_stat(
                &call["eval_tokens_per_s"],
                &stage_of(s, "eval_tokens_per_s"),
            );
            check_stat(&call["ttft_ms"], &stage_of(s, "ttft_ms"));
        }
        let (mean, sd, cv) = stats(&of("eval_tokens_per_s"));
        in_order(
            &md,
            &[
                &format!(
                    "## {} ({})\n",
                    a["label"].as_str().unwrap(),
                    a["name"].as_str().unwrap()
                ),
                &format!(
                    "| Throughput (tok/s) | {mean:.2} | {sd:.2} | {:.2}% |",
                    cv * 100.0
                ),
            ],
        );
    }

    // A second report into the same folder is refused, and nothing changes.
    let before = fs::read(out.join("summary.json")).unwrap();
    let o = chimera(&args);
    assert!(!o.status.success());
    let err = stderr_one_line(&o);
    assert!(
        err.contains("already holds a report (run_1, run_2, summary.json, summary.md)"),
        "{err}"
    );
    assert!(err.contains("--overwrite"), "{err}");
    assert_eq!(fs::read(out.join("summary.json")).unwrap(), before);
}

/// A tree small enough that a run takes seconds.
fn small_tree() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let reports = tmp.path().join("reports");
    fs::create_dir(&reports).unwrap();
    fs::write(
        reports.join("runs.csv"),
        "model,tokens_s,ttft_ms\ngemma3-270m,41.5,120.25\ngemma3-270m,43.0,118.5\n",
    )
    .unwrap();
    fs::write(
        reports.join("notes.md"),
        "# Notes\n\nTwo runs on 2 cores.\n",
    )
    .unwrap();
    tmp
}

#[test]
fn warmup_overrides_personas_and_overwrite() {
    let input = small_tree();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // An earlier report, and a file of the user's that must survive.
    fs::create_dir_all(out.join("run_7")).unwrap();
    fs::write(out.join("run_7/collector_report.md"), "old").unwrap();
    fs::write(out.join("summary.json"), "{}").unwrap();
    fs::write(out.join("notes.txt"), "mine").unwrap();
    let personas = tmp.path().join("personas.toml");
    fs::write(
        &personas,
        "[collector]\nlabel = \"Inventory Bot\"\nsystem = \"You are Inventory Bot. List the files.\"\n\
         [collector.options]\ntop_k = 7\n",
    )
    .unwrap();
    let o = chimera(&[
        "report",
        "-i",
        input.path().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--agent",
        "collector",
        "--warmup",
        "1",
        "--runs",
        "1",
        "-n",
        "4",
        "--temperature",
        "0.9",
        "--collector",
        "temperature=0.25",
        "--collector",
        "num_ctx=2048",
        "--personas",
        personas.to_str().unwrap(),
        "--overwrite",
        "--quiet",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.is_empty(),
        "--quiet and no terminal: nothing on stderr, got {stderr}"
    );

    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["notes.txt", "run_1", "summary.json", "summary.md"]);
    assert_eq!(fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
    let run_files: Vec<String> = fs::read_dir(out.join("run_1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!run_files.contains(&"insight_report.md".to_string()));

    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["warmup_runs"].as_u64(), Some(1));
    assert_eq!(summary["runs_completed"].as_u64(), Some(1));
    assert_eq!(summary["agents"].as_array().unwrap().len(), 1);
    assert_eq!(
        summary["agents"][0]["eval_tokens_per_s"]["n"].as_u64(),
        Some(1)
    );

    let metrics = read_json(&out.join("run_1/metrics.json"));
    let agent = &metrics["agents"][0];
    assert_eq!(agent["label"], "Inventory Bot");
    assert_eq!(agent["name"], "DataCollector-9000");
    for c in agent["calls"].as_array().unwrap() {
        check_call(c, 4);
        let o = &c["options"];
        // Persona, then the shared flag, then the agent's own flag.
        assert_eq!(f(&o["temperature"]), 0.25);
        assert_eq!(o["top_k"].as_u64(), Some(7));
        assert_eq!(o["num_ctx"].as_u64(), Some(2048));
    }
    let report = fs::read_to_string(out.join("run_1/collector_report.md")).unwrap();
    assert!(report.starts_with("# Inventory Bot\n\n# Technical Report: Inventory Bot Analysis\n"));
    assert!(report.contains(
        "**Configuration:** num_gpu=0, num_ctx=2048, temp=0.25, top_p=0.9, top_k=7, repeat_penalty=1.1\n"
    ));
    assert!(
        report.contains("## Persona Prompt\n```\nYou are Inventory Bot. List the files.\n```\n")
    );
    assert!(report.contains("- Files ingested: 2 (CSV 1, JSON 0, Markdown 1)"));
}

#[test]
fn bad_inputs_fail_in_one_line_before_the_model_loads() {
    let input = small_tree();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let inp = input.path().to_str().unwrap();
    let outs = out.to_str().unwrap();
    let bad_personas = tmp.path().join("p.toml");
    fs::write(&bad_personas, "[collector]\nnmae = \"x\"\n").unwrap();
    let missing = tmp.path().join("missing");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["-i", missing.to_str().unwrap()],
            "does not exist",
        ),
        (
            vec!["-i", inp, "--collector", "foo=1"],
            "error: invalid --collector `foo=1`: unknown option `foo` (expected one of temperature,",
        ),
        (
            vec!["-i", inp, "--insight", "top_k=abc"],
            "error: invalid --insight `top_k=abc`: `top_k` takes a whole number, not `abc`",
        ),
        (
            vec!["-i", inp, "--collector", "temperature"],
            "expected KEY=VALUE",
        ),
        (
            vec!["-i", inp, "--temperature=-1"],
            "error: options of DataCollector-9000 (collector): invalid temperature -1: must be 0 or more",
        ),
        (
            vec!["-i", inp, "--agent", "insight", "--top-p", "1.5"],
            "error: options of InsightAgent (insight): invalid top_p 1.5: must be in (0, 1]",
        ),
        (
            vec!["-i", inp, "--insight", "num_predict=0"],
            "invalid num_predict 0",
        ),
        (vec!["-i", inp, "--runs", "0"], "error: invalid --runs 0: must be at least 1"),
        (
            vec!["-i", inp, "--personas", bad_personas.to_str().unwrap()],
            "line 2: unknown field `nmae`",
        ),
    ];
    let inside = input.path().join("reports/chimera");
    let o = chimera(&["report", "-i", inp, "-o", inside.to_str().unwrap(), "-q"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr_one_line(&o);
    assert!(
        err.contains("is inside") && err.contains("choose an --output-dir outside it"),
        "{err}"
    );
    assert!(!inside.exists());
    for (extra, want) in cases {
        let mut args = vec!["report", "-o", outs, "-q"];
        args.extend(extra.iter().copied());
        let o = chimera(&args);
        assert!(!o.status.success(), "{args:?} should fail");
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr_one_line(&o);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?}: nothing may be written");
    }
}
