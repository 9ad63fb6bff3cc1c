//! `chimera bench` through the binary on a tiny random Gemma 3 written by
//! the test: the three output formats with their columns and fields and
//! every sample, the side-by-side path against a stand-in llama-bench, and
//! bad inputs that fail in one line. No speed is asserted.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::quantized::GgmlDType;
use chimera::bench::render::CSV_COLUMNS;
use chimera::model::Config;
use common::tiny::{tokenizer_json, Tiny};
use serde_json::Value;

/// Vocabulary above the 1000 ids the pp/tg tests stay clear of.
const VOCAB: usize = 1536;

/// A tiny GGUF with its tokenizer.json beside it (which resolve picks up).
fn tiny_model(dir: &Path) -> PathBuf {
    let cfg = Config {
        vocab_size: VOCAB,
        ..Config::tiny()
    };
    let p = dir.join("tiny.gguf");
    Tiny::random(cfg, 7).write_gguf(&p, GgmlDType::Q8_0);
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json(VOCAB, &[])).unwrap();
    p
}

fn bench(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chimera"));
    c.arg("bench").args(args);
    for v in [
        "CHIMERA_BENCH_QUICK",
        "CHIMERA_BENCH_MODELS",
        "CHIMERA_LLAMA_BENCH",
    ] {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running chimera")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "chimera bench failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn one_error_line(o: &Output, needle: &str) {
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{needle:?} in {err}"
    );
}

const SIZES: [&str; 8] = ["-p", "32", "-n", "8", "-r", "2", "--threads", "1"];

#[test]
fn json_markdown_and_csv_carry_every_test_and_sample() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let m = model.to_str().unwrap();
    let args = |fmt: &'static str| {
        let mut a = vec!["-m", m, "-o", fmt];
        a.extend(SIZES);
        a
    };

    let v: Value = serde_json::from_str(&ok(&bench(&args("json"), &[]))).unwrap();
    assert_eq!(v["tool"], "chimera bench");
    assert!(v["definitions"]["pp"]
        .as_str()
        .unwrap()
        .contains("no tokenization, no sampling"));
    assert!(v["definitions"]["tg"]
        .as_str()
        .unwrap()
        .contains("no sampling"));
    assert!(v["definitions"]["ttft"]
        .as_str()
        .unwrap()
        .contains("tokenization included"));
    assert_eq!(v["sizes"]["repetitions"], 2);
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 1);
    let r = &models[0];
    assert_eq!(r["model"], "tiny");
    assert_eq!(r["threads"], 1);
    assert_eq!(
        r["file_bytes"].as_u64().unwrap(),
        std::fs::metadata(&model).unwrap().len()
    );
    let cfg = Config {
        vocab_size: VOCAB,
        ..Config::tiny()
    };
    assert_eq!(
        r["params"].as_u64().unwrap(),
        chimera::bench::param_count(&cfg)
    );
    let tests = r["tests"].as_array().unwrap();
    let names: Vec<&str> = tests.iter().map(|t| t["test"].as_str().unwrap()).collect();
    assert_eq!(names, ["pp32", "tg8", "ttft32"]);
    for t in tests {
        let ms = t["ms"]["values"].as_array().unwrap();
        assert_eq!(ms.len(), 2, "{t}");
        assert!(ms.iter().all(|x| x.as_f64().unwrap() > 0.0));
        match t["kind"].as_str().unwrap() {
            "pp" | "tg" => {
                let tokens =
                    (t["n_prompt"].as_u64().unwrap() + t["n_gen"].as_u64().unwrap()) as f64;
                let ts = t["ts"]["values"].as_array().unwrap();
                for (m, s) in ms.iter().zip(ts) {
                    let want = tokens * 1000.0 / m.as_f64().unwrap();
                    assert!((s.as_f64().unwrap() - want).abs() < 1e-6 * want);
                }
            }
            "ttft" => {
                assert!(t["ts"].is_null());
                let n = t["prompt_tokens"].as_u64().unwrap();
                assert!((29..=32).contains(&n), "ttft prompt of {n} tokens");
            }
            k => panic!("unknown kind {k}"),
        }
    }
    let load = &r["load"];
    let first = load["first_state"].as_str().unwrap();
    assert!(["cold", "warm", "unknown"].contains(&first));
    let counted = load["warm_ms"]["n"].as_u64().unwrap();
    assert_eq!(
        counted + u64::from(first != "warm"),
        2,
        "two loads in all: {load}"
    );
    assert!(r["memory"]["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert!(r["llama_bench"].is_null());

    let csv = ok(&bench(&args("csv"), &[]));
    let mut rd = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, CSV_COLUMNS);
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
    let count = |test: &str| rows.iter().filter(|r| &r[6] == test).count();
    assert_eq!(
        (count("pp32"), count("tg8"), count("ttft32"), count("load")),
        (2, 2, 2, 2)
    );
    assert!(rows.iter().all(|r| &r[0] == "chimera" && &r[1] == "tiny"));

    let md = ok(&bench(&args("md"), &[]));
    assert!(
        md.contains("| model | size | params | backend | threads | test | t/s | ms |\n"),
        "{md}"
    );
    assert!(md.contains("no tokenization, no sampling"));
    for test in ["| pp32 |", "| tg8 |", "| ttft32", "| load ("] {
        assert!(md.contains(test), "{test} in\n{md}");
    }
    assert!(md.contains("peak RSS"));
    assert!(!md.contains("llama.cpp t/s"));
}

/// A stand-in llama-bench: records its arguments and prints fixed results.
fn fake_llama_bench(dir: &Path) -> (PathBuf, PathBuf) {
    let args = dir.join("args.txt");
    let script = dir.join("llama-bench");
    let json = r#"[{"build_commit":"fake","model_type":"tiny","n_threads":1,"n_prompt":32,"n_gen":0,"avg_ts":100.0,"stddev_ts":1.0,"samples_ns":[320000000],"samples_ts":[100.0]},
{"build_commit":"fake","model_type":"tiny","n_threads":1,"n_prompt":0,"n_gen":8,"avg_ts":10.0,"stddev_ts":0.5,"samples_ns":[800000000],"samples_ts":[10.0]}]"#;
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" > '{}'\ncat <<'JSON'\n{json}\nJSON\n",
            args.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (script, args)
}

#[test]
fn side_by_side_with_llama_bench_gives_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (script, args_file) = fake_llama_bench(dir.path());
    let m = model.to_str().unwrap();
    let s = script.to_str().unwrap();
    let out = ok(&bench(
        &[
            "-m",
            m,
            "-p",
            "32",
            "-n",
            "8",
            "-r",
            "1",
            "-t",
            "1",
            "-o",
            "json",
            "--vs-llama-bench",
            s,
        ],
        &[],
    ));
    let called = std::fs::read_to_string(&args_file).unwrap();
    assert_eq!(
        called.trim(),
        format!("-m {m} -p 32 -n 8 -r 1 -t 1 -ub 512 -o json")
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let r = &v["models"][0];
    let l = &r["llama_bench"];
    assert!(l["error"].is_null(), "{l}");
    assert_eq!(l["build_commit"], "fake");
    let ratios = l["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 2);
    for (ratio, (test, theirs)) in ratios.iter().zip([("pp32", 100.0), ("tg8", 10.0)]) {
        assert_eq!(ratio["test"], test);
        let ours = r["tests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["test"] == test)
            .unwrap()["ts"]["mean"]
            .as_f64()
            .unwrap();
        assert!((ratio["ratio"].as_f64().unwrap() - ours / theirs).abs() < 1e-9);
    }

    // The environment variable does the same; the table gains two columns.
    let md = ok(&bench(
        &["-m", m, "-p", "32", "-n", "8", "-r", "1", "-t", "1"],
        &[("CHIMERA_LLAMA_BENCH", s)],
    ));
    assert!(
        md.contains("| llama.cpp t/s | chimera / llama.cpp |"),
        "{md}"
    );
    assert!(md.contains("| 100.00 ± 1.00 |"), "{md}");
    assert!(md.contains("build fake"), "{md}");
}

#[test]
fn bad_inputs_fail_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    one_error_line(
        &bench(&["-m", "no-such-model"], &[("CHIMERA_CACHE", cache)]),
        "unknown model `no-such-model`",
    );
    one_error_line(&bench(&["-r", "0"], &[]), "-r 0");
    one_error_line(
        &bench(&["--vs-llama-bench", "/no/such/llama-bench"], &[]),
        "llama-bench binary /no/such/llama-bench not found",
    );
    let model = tiny_model(dir.path());
    one_error_line(
        &bench(&["-m", model.to_str().unwrap(), "-p", "0", "-n", "0"], &[]),
        "nothing to measure",
    );
}
