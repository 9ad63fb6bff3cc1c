//! Bad model files, tokenizers, names and options: one clear error line and
//! a non-zero exit, never a panic.

mod common;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::GgmlDType;
use chimera::model::Config;
use common::tiny::Tiny;
use std::path::Path;
use std::process::Command;

/// Runs `chimera generate` and returns (exit code, stderr).
fn generate(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chimera"))
        .arg("generate")
        .args(args)
        .env(
            "CHIMERA_CACHE",
            std::env::temp_dir().join("chimera-bad-input-cache"),
        )
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_error_line(code: i32, stderr: &str, needle: &str) {
    assert_ne!(code, 0, "must fail: {stderr}");
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(needle), "{needle:?} in {stderr}");
}

fn tokenizer_file(dir: &Path) -> String {
    // Any valid tokenizer.json will do for the failures before generation.
    let p = dir.join("tokenizer.json");
    std::fs::write(&p, common::tiny::tokenizer_json(300, &[])).unwrap();
    p.display().to_string()
}

fn tiny_gguf(dir: &Path) -> String {
    let p = dir.join("tiny.gguf");
    Tiny::random(Config::tiny(), 1).write_gguf(&p, GgmlDType::F32);
    p.display().to_string()
}

#[test]
fn a_file_that_is_not_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.gguf");
    std::fs::write(&p, b"this is not a model at all, just text").unwrap();
    let tok = tokenizer_file(dir.path());
    let (code, err) = generate(&["-m", p.to_str().unwrap(), "--tokenizer", &tok, "-p", "hi"]);
    assert_one_error_line(code, &err, "is not a GGUF file");
}

#[test]
fn a_truncated_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let full = tiny_gguf(dir.path());
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let tok = tokenizer_file(dir.path());
    let (code, err) = generate(&["-m", cut.to_str().unwrap(), "--tokenizer", &tok, "-p", "hi"]);
    assert_one_error_line(code, &err, "truncated");
    // Cut inside the header: still one line.
    std::fs::write(&cut, &bytes[..100]).unwrap();
    let (code, err) = generate(&["-m", cut.to_str().unwrap(), "--tokenizer", &tok, "-p", "hi"]);
    assert_one_error_line(code, &err, "GGUF");
}

#[test]
fn a_gguf_of_another_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("llama.gguf");
    let mut f = std::fs::File::create(&p).unwrap();
    let arch = Value::String("llama".into());
    gguf_file::write(&mut f, &[("general.architecture", &arch)], &[]).unwrap();
    let tok = tokenizer_file(dir.path());
    let (code, err) = generate(&["-m", p.to_str().unwrap(), "--tokenizer", &tok, "-p", "hi"]);
    assert_one_error_line(code, &err, "`llama` model");
}

#[test]
fn a_missing_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_gguf(dir.path());
    let missing = dir.path().join("nope.json");
    let (code, err) = generate(&[
        "-m",
        &model,
        "--tokenizer",
        missing.to_str().unwrap(),
        "-p",
        "hi",
    ]);
    assert_one_error_line(code, &err, "tokenizer file");
}

#[test]
fn an_unknown_model_name_and_a_missing_file() {
    let (code, err) = generate(&["-m", "gemma9-1t", "-p", "hi"]);
    assert_one_error_line(code, &err, "unknown model `gemma9-1t`");
    let (code, err) = generate(&["-m", "/nonexistent/model.gguf", "-p", "hi"]);
    assert_one_error_line(code, &err, "not found");
}

#[test]
fn invalid_sampling_values() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_gguf(dir.path());
    let tok = tokenizer_file(dir.path());
    for (flag, value, needle) in [
        ("--temperature", "-1", "temperature"),
        ("--top-p", "1.5", "top_p"),
        ("--top-p", "0", "top_p"),
        ("--num-ctx", "0", "num_ctx"),
        ("--num-ctx", "999999", "num_ctx"),
        ("--min-p", "2", "min_p"),
        ("--repeat-penalty", "0", "repeat_penalty"),
    ] {
        let (code, err) = generate(&["-m", &model, "--tokenizer", &tok, "-p", "hi", flag, value]);
        assert_one_error_line(code, &err, needle);
    }
}

#[test]
fn a_prompt_longer_than_the_context_is_truncated_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_gguf(dir.path());
    let tok = tokenizer_file(dir.path());
    let long: String = (0..200).map(|i| format!("w{} ", 10 + i % 250)).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_chimera"))
        .args([
            "generate",
            "-m",
            &model,
            "--tokenizer",
            &tok,
            "--raw",
            "-p",
            &long,
        ])
        .args([
            "--num-ctx",
            "64",
            "-n",
            "4",
            "--format",
            "json",
            "--seed",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: prompt truncated"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metrics"]["prompt_tokens"], 60);
    assert!(v["metrics"]["truncated_prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(v["prompt_token_ids"][0], 2, "<bos> survives");
}
