//! Integration tests for artifact ingestion (`chimera::ingest` and `chimera ingest`).
//!
//! Fixture tests read `../shared/fixtures/chimeraforge` (relative to the
//! crate root) from a temporary copy, so file times can be set; when the
//! fixture is absent they print a line and return.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chimera::ingest::{self, Content, IngestOptions, Kind, Metric, SkipCode, Stat, Unit};

fn fixture() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/chimeraforge");
    if p.is_dir() {
        Some(p)
    } else {
        println!("skipped: ../shared/fixtures/chimeraforge not found");
        None
    }
}

fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            fs::copy(entry.path(), &to).unwrap();
            let mut perm = fs::metadata(&to).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            fs::set_permissions(&to, perm).unwrap();
        }
    }
}

fn set_mtime(path: &Path, t: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn set_all_mtimes(dir: &Path, t: SystemTime) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            set_all_mtimes(&entry.path(), t);
        } else {
            set_mtime(&entry.path(), t);
        }
    }
}

fn at(unix: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(unix, nanos)
}

/// A copy of the fixture with known times: everything at 2025-10-01 12:00:00
/// UTC except one file per type (and a skipped file that must not count).
fn fixture_copy() -> Option<(tempfile::TempDir, PathBuf)> {
    let src = fixture()?;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("chimeraforge");
    copy_tree(&src, &root);
    set_all_mtimes(&root, at(1_759_320_000, 0)); // 2025-10-01 12:00:00
                                                 // 2025-11-14 18:53:30.9: sub-seconds are truncated in the summary.
    set_mtime(
        &root.join("reports/gemma3/gemma3_baseline.csv"),
        at(1_763_146_410, 900_000_000),
    );
    // 2025-10-08 17:20:51
    set_mtime(
        &root.join("reports/ollama/20251008-122955/llama3_q4_benchmark_fixed_summary.json"),
        at(1_759_944_051, 0),
    );
    // 2025-11-14 18:54:07
    set_mtime(
        &root.join("reports/gemma3/Gemma3_Benchmark_Report.md"),
        at(1_763_146_447, 0),
    );
    // Newer than everything, but skipped: must not show up as "Latest modified".
    set_mtime(
        &root.join("reports/profiling/ncu_summary.csv"),
        at(1_800_000_000, 0),
    );
    set_mtime(
        &root.join("reports/profiling/ncu_ollama.ncu-rep"),
        at(1_800_000_000, 0),
    );
    Some((tmp, root))
}

const FIXTURE_SUMMARY: &str = "\
Total files analyzed: 85

CSV Files (24)
  - artifacts/rust_multiagent_summary.csv
  - reports/gemma3/gemma3_1b-it-qat_baseline.csv
  - reports/gemma3/gemma3_1b-it-qat_param_tuning.csv
  - reports/gemma3/gemma3_1b-it-qat_param_tuning_summary.csv
  - reports/gemma3/gemma3_270m_baseline.csv
  ... and 19 more
  Latest modified: 2025-11-14 18:53:30 UTC

JSON Files (30)
  - reports/compilation/conv_bench_20251002-170837.json
  - reports/compilation/conv_cuda_bench_20251002-172037.json
  - reports/compilation/mlp_bench_20251002-165750.json
  - reports/compilation/mlp_cuda_bench_20251002-171845.json
  - reports/compilation/transformer_bench_20251002-170914.json
  ... and 25 more
  Latest modified: 2025-10-08 17:20:51 UTC

MARKDOWN Files (31)
  - artifacts/rust_multiagent_summary.md
  - artifacts/rust_vs_python_sweep_analysis.md
  - reports/README.md
  - reports/compilation/compilation_benchmark_lessons_20251002.md
  - reports/compilation/conv_bench_20251002-170837.md
  ... and 26 more
  Latest modified: 2025-11-14 18:54:07 UTC

";

#[test]
fn fixture_counts_skips_and_summary() {
    let Some((_tmp, root)) = fixture_copy() else {
        return;
    };
    let ing = ingest::scan(&root, &IngestOptions::default()).unwrap();

    assert_eq!(ing.scanned_dirs, vec!["reports", "artifacts"]);
    assert_eq!(ing.files_of(Kind::Csv).count(), 24);
    assert_eq!(ing.files_of(Kind::Json).count(), 30);
    assert_eq!(ing.files_of(Kind::Markdown).count(), 31);
    // PROVENANCE.md sits at ROOT, outside the scanned folders.
    assert!(ing.files.iter().all(|f| !f.path.contains("PROVENANCE")));
    assert!(ing.skipped.iter().all(|s| !s.path.contains("PROVENANCE")));
    // Sorted, forward slashes, relative.
    let paths: Vec<&str> = ing.files.iter().map(|f| f.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    assert!(paths
        .iter()
        .all(|p| !p.starts_with('/') && !p.contains('\\')));

    let skipped: Vec<(&str, SkipCode)> = ing
        .skipped
        .iter()
        .map(|s| (s.path.as_str(), s.code))
        .collect();
    assert_eq!(
        skipped,
        vec![
            (
                "reports/integration/baseline_performance_report.txt",
                SkipCode::Unsupported
            ),
            (
                "reports/integration/mcp_integration_diagram.py",
                SkipCode::Unsupported
            ),
            (
                "reports/llama3/baseline_ml_report.txt",
                SkipCode::Unsupported
            ),
            (
                "reports/llama3/baseline_system_report.txt",
                SkipCode::Unsupported
            ),
            (
                "reports/profiling/ncu_ollama.ncu-rep",
                SkipCode::Unsupported
            ),
            (
                "reports/profiling/ncu_ollama.sqlite.ncu-rep",
                SkipCode::Unsupported
            ),
            // UTF-16 with a mangled byte-order mark: an Nsight error message.
            ("reports/profiling/ncu_summary.csv", SkipCode::NotUtf8),
        ]
    );
    assert_eq!(ing.skipped[4].reason, "unsupported file type .ncu-rep");
    assert_eq!(ing.skipped[1].reason, "unsupported file type .py");
    assert_eq!(ing.bad_files().count(), 1);

    assert_eq!(ing.summary_text(), FIXTURE_SUMMARY);

    // Content was parsed.
    let gemma = ing
        .files
        .iter()
        .find(|f| f.path == "reports/gemma3/gemma3_baseline.csv")
        .unwrap();
    match &gemma.content {
        Content::Csv(t) => {
            assert_eq!(t.headers[0], "prompt");
            assert_eq!(t.rows.len(), 5);
            assert_eq!(t.rows[0][t.column("eval_count").unwrap()], "805");
        }
        other => panic!("not CSV: {other:?}"),
    }
    let report = ing
        .files
        .iter()
        .find(|f| f.path == "reports/gemma3/Gemma3_Benchmark_Report.md")
        .unwrap();
    match &report.content {
        Content::Markdown(m) => {
            assert_eq!(m.title(), Some("Gemma3 Benchmark Deep Dive"));
            assert_eq!(m.headings[1].text, "Overview");
            assert!(m.heading_count() > 10);
        }
        other => panic!("not Markdown: {other:?}"),
    }
}

fn find<'a>(ing: &'a ingest::Ingest, file: &str, locator: &str) -> &'a ingest::MetricRow {
    ing.metrics
        .iter()
        .find(|m| m.file == file && m.locator == locator)
        .unwrap_or_else(|| panic!("no metric at {file} {locator}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Values checked by hand against the fixture files.
#[test]
fn fixture_metrics_checked_by_hand() {
    let Some((_tmp, root)) = fixture_copy() else {
        return;
    };
    let ing = ingest::scan(&root, &IngestOptions::default()).unwrap();

    // gemma3_1b-it-qat_baseline.csv, first data row: ttft_s = 2.3189992000000004.
    let m = find(
        &ing,
        "reports/gemma3/gemma3_1b-it-qat_baseline.csv",
        "row 1, column \"ttft_s\"",
    );
    assert_eq!(
        (m.metric, m.stat, m.unit, m.raw_unit),
        (Metric::TtftMs, None, Unit::Ms, "s")
    );
    assert!(close(m.value, 2318.9992), "{}", m.value);
    assert!(close(m.raw_value, 2.3189992000000004));

    // Same file, second row: tokens_s = 182.6378183544046.
    let m = find(
        &ing,
        "reports/gemma3/gemma3_1b-it-qat_baseline.csv",
        "row 2, column \"tokens_s\"",
    );
    assert_eq!((m.metric, m.unit), (Metric::EvalTokensPerS, Unit::TokPerS));
    assert!(close(m.value, 182.6378183544046));

    // gemma3_270m_baseline.json, results[1].tokens_s = 289.3668737909358, model gemma3:270m.
    let m = find(
        &ing,
        "reports/gemma3/gemma3_270m_baseline.json",
        "$.results[1].tokens_s",
    );
    assert_eq!(m.metric, Metric::EvalTokensPerS);
    assert!(close(m.value, 289.3668737909358));
    assert_eq!(m.label.as_deref(), Some("gemma3:270m"));

    // conv_bench: backends.eager.benchmark.mean_time_ms = 3.812139999899955.
    let m = find(
        &ing,
        "reports/compilation/conv_bench_20251002-170837.json",
        "$.backends.eager.benchmark.mean_time_ms",
    );
    assert_eq!((m.metric, m.stat), (Metric::LatencyMs, Some(Stat::Mean)));
    assert!(close(m.value, 3.812139999899955));
    assert_eq!(m.label.as_deref(), Some("eager"));

    // baseline_system_metrics.json: first GPU sample, memory_used_mb = 285.0 (MiB).
    let file = "reports/llama3/baseline_system_metrics.json";
    let m = find(&ing, file, "$.metrics[0].gpu[0].memory_used_mb");
    assert_eq!(
        (m.metric, m.unit, m.raw_unit),
        (Metric::MemoryBytes, Unit::Bytes, "MiB")
    );
    assert_eq!(m.value, 285.0 * 1024.0 * 1024.0);
    assert_eq!(
        m.label.as_deref(),
        Some("NVIDIA GeForce RTX 4080 Laptop GPU")
    );
    // ... utilization_gpu = 0 there: a real 0 %, kept.
    let m = find(&ing, file, "$.metrics[0].gpu[0].utilization_gpu");
    assert_eq!((m.metric, m.value), (Metric::GpuUtilizationPct, 0.0));
    // Capacities are not usage.
    assert!(!ing.metrics.iter().any(|m| m.raw_key == "memory_total_mb"));

    // Nsight CSV: units row says "us"; gpu__time_duration.sum = 9.408 us.
    let m = find(
        &ing,
        "reports/profiling/ncu_ollama_raw.csv",
        "row 1, column \"gpu__time_duration.sum\"",
    );
    assert_eq!((m.metric, m.raw_unit), (Metric::DurationMs, "us"));
    assert!(close(m.value, 0.009408));

    // gemma3_benchmark_fixed_summary.json: models[0].mean_ttft_s = 6.0998145.
    let m = find(
        &ing,
        "reports/ollama/20251008-122911/gemma3_benchmark_fixed_summary.json",
        "$.models[0].mean_ttft_s",
    );
    assert_eq!((m.metric, m.stat), (Metric::TtftMs, Some(Stat::Mean)));
    assert!(close(m.value, 6099.8145));
    assert_eq!(m.label.as_deref(), Some("gemma3:latest"));

    // ollama_param_tuning_summary.csv, row 1: eval_s_mean = 1.4103.
    let m = find(
        &ing,
        "reports/llama3/ollama_param_tuning_summary.csv",
        "row 1, column \"eval_s_mean\"",
    );
    assert_eq!((m.metric, m.stat), (Metric::EvalMs, Some(Stat::Mean)));
    assert!(close(m.value, 1410.3));

    // prompt_suite_runs.csv of 20251002-151204: every run failed to connect
    // (error column filled, zeros written): nothing from it.
    assert!(!ing
        .metrics
        .iter()
        .any(|m| m.file == "reports/ollama/20251002-151204/prompt_suite_runs.csv"));
    // torch_compile failed in transformer_cuda_bench and wrote 0.0 timings: left out.
    assert!(!ing
        .metrics
        .iter()
        .any(|m| m.locator.contains("torch_compile.benchmark")
            && m.file == "reports/compilation/transformer_cuda_bench_20251002-172126.json"));
    // rust_multiagent_summary.csv holds speedups and deltas only: not measurements.
    assert!(!ing
        .metrics
        .iter()
        .any(|m| m.file == "artifacts/rust_multiagent_summary.csv"));
    assert!(ing.metric_exclusions.failed_runs > 0 && ing.metric_exclusions.non_positive > 0);
    // Markdown is not mined for metrics.
    assert!(ing.metrics.iter().all(|m| !m.file.ends_with(".md")));

    // Facts: six utilization_gpu samples 0, 12, 1, 93, 92, 0 -> mean 33.
    let facts = ing.facts();
    let gpu = facts
        .metrics
        .iter()
        .find(|f| f.metric == Metric::GpuUtilizationPct && f.stat.is_none())
        .unwrap();
    assert_eq!(
        (gpu.count, gpu.files, gpu.mean, gpu.min, gpu.max),
        (6, 1, 33.0, 0.0, 93.0)
    );
    assert_eq!(gpu.max_at.locator, "$.metrics[3].gpu[0].utilization_gpu");
    assert_eq!(facts.total_files, 85);
    assert_eq!(facts.total_bytes, 419_395);
    assert_eq!(facts.unsupported_by_extension.get(".txt"), Some(&3));
    assert_eq!(facts.unsupported_by_extension.get(".ncu-rep"), Some(&2));
    assert_eq!(facts.unsupported_by_extension.get(".py"), Some(&1));
    let md = facts.to_markdown();
    assert!(
        md.starts_with("- Files ingested: 85 (CSV 24, JSON 30, Markdown 31), 419,395 bytes\n"),
        "{md}"
    );
    assert!(
        md.contains(
            "- Files skipped: 7 (unsupported type: .ncu-rep 2, .py 1, .txt 3; not utf8 1)\n"
        ),
        "{md}"
    );
    assert!(
        md.contains("| gpu_utilization_pct | % | 6 | 1 | 33.00 | 0.00 | 93.00 |\n"),
        "{md}"
    );
    assert!(
        md.contains("- reports/gemma3/Gemma3_Benchmark_Report.md: \"Gemma3 Benchmark Deep Dive\""),
        "{md}"
    );
    assert_eq!(md, ing.facts().to_markdown(), "deterministic");
    assert!(facts.numbers().contains(&33.0));

    // Numbers: CSV cells, normalised values, Markdown text ("102.85 tokens/second",
    // "3,503" in a table of Gemma3_Benchmark_Report.md).
    let nums = ing.numbers();
    assert!(
        nums.windows(2).all(|w| w[0] < w[1]),
        "sorted, no duplicates"
    );
    for n in [181.96533720183703, 2318.9992, 102.85, 3503.0, 9.408] {
        assert!(nums.iter().any(|&x| close(x, n)), "{n} missing");
    }
    assert!(!nums.contains(&123_456.789));
}

#[test]
fn scan_is_deterministic() {
    let Some((_tmp, root)) = fixture_copy() else {
        return;
    };
    let opts = IngestOptions::default();
    let a = ingest::scan(&root, &opts).unwrap().to_json();
    let single = IngestOptions { threads: 1, ..opts };
    let b = ingest::scan(&root, &single).unwrap().to_json();
    assert_eq!(a, b);
}

// ---------------------------------------------------------------------------
// Hostile trees

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

#[cfg(unix)]
fn symlink(target: impl AsRef<Path>, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// Builds the hostile tree; returns (tempdir, root, the paths that must be ingested).
#[cfg(unix)]
fn hostile_tree() -> (tempfile::TempDir, PathBuf, Vec<&'static str>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    let r = root.join("reports");
    write(&outside.join("secret.csv"), b"a,b\n1,2\n");
    write(&outside.join("dir/x.json"), b"{}");

    // Good files.
    write(
        &r.join("good.csv"),
        b"model,ttft_ms,tokens_per_second\nm1,120,55.5\n",
    );
    write(&r.join("good.json"), br#"{"results": [{"ttft_ms": 10}]}"#);
    write(&r.join("good.md"), b"# Title\n\nSome text with 42.\n");
    write(&r.join("UPPER.JSON"), br#"[1, 2]"#);
    write(&r.join("nested/deeper/ok.markdown"), b"Intro\n=====\n");
    write(&r.join("bom.csv"), b"\xEF\xBB\xBFa,b\n1,2\n");
    write(&r.join("dir_named.json/inner.csv"), b"x\n1\n");
    symlink("good.csv", &r.join("inside_link.csv"));
    write(&r.join("unreadable.csv"), b"a\n1\n");
    fs::set_permissions(
        r.join("unreadable.csv"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();

    // Bad files.
    write(&r.join("invalid.json"), br#"{"a": [1, 2,}"#);
    write(&r.join("ragged.csv"), b"a,b\n1,2\n3\n");
    write(&r.join("binary.csv"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
    write(&r.join("latin1.md"), b"caf\xe9\n");
    write(&r.join("empty.json"), b"");
    write(&r.join("blank.md"), b"  \n\n");
    write(
        &r.join("big.csv"),
        format!("a\n{}\n", "1".repeat(2000)).as_bytes(),
    );
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    write(&r.join("deep.json"), deep.as_bytes());
    symlink("missing.json", &r.join("dangling.json"));
    symlink("loop_b.csv", &r.join("loop_a.csv"));
    symlink("loop_a.csv", &r.join("loop_b.csv"));
    fs::create_dir_all(r.join("sub")).unwrap();
    symlink("..", &r.join("sub/back"));
    symlink(outside.join("secret.csv"), &r.join("outside.csv"));
    symlink(outside.join("dir"), &r.join("outside_dir"));

    // Quietly skipped.
    write(&r.join("notes.txt"), b"hello");
    write(&r.join("image.png"), b"\x89PNG");
    write(&r.join(".git/config.json"), b"{}");

    let good = vec![
        "reports/UPPER.JSON",
        "reports/bom.csv",
        "reports/dir_named.json/inner.csv",
        "reports/good.csv",
        "reports/good.json",
        "reports/good.md",
        "reports/inside_link.csv",
        "reports/nested/deeper/ok.markdown",
    ];
    (tmp, root, good)
}

/// Can this process read a chmod 000 file? (root can.)
#[cfg(unix)]
fn can_read(path: &Path) -> bool {
    fs::File::open(path).is_ok()
}

#[cfg(unix)]
#[test]
fn hostile_tree_keeps_good_files_and_reports_bad_ones() {
    let (_tmp, root, mut good) = hostile_tree();
    let r = root.join("reports");
    let fifo = Command::new("mkfifo")
        .arg(r.join("fifo.csv"))
        .status()
        .is_ok_and(|s| s.success());
    let unreadable_is_readable = can_read(&r.join("unreadable.csv"));
    if unreadable_is_readable {
        good.push("reports/unreadable.csv");
        good.sort();
    }

    let opts = IngestOptions {
        max_file_bytes: 1024,
        ..IngestOptions::default()
    };
    let ing = ingest::scan(&root, &opts).unwrap();
    let got: Vec<&str> = ing.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(got, good);

    let code_of = |p: &str| {
        ing.skipped
            .iter()
            .find(|s| s.path == p)
            .unwrap_or_else(|| panic!("{p} not reported: {:#?}", ing.skipped))
    };
    let expect = [
        (
            "reports/invalid.json",
            SkipCode::InvalidJson,
            "invalid JSON",
        ),
        (
            "reports/ragged.csv",
            SkipCode::RaggedCsv,
            "line 3 has 1 fields, the header has 2",
        ),
        (
            "reports/binary.csv",
            SkipCode::Binary,
            "NUL byte at offset 8",
        ),
        (
            "reports/latin1.md",
            SkipCode::NotUtf8,
            "byte 0xe9 at offset 3",
        ),
        ("reports/empty.json", SkipCode::Empty, "empty file"),
        ("reports/blank.md", SkipCode::Empty, "only whitespace"),
        (
            "reports/big.csv",
            SkipCode::TooLarge,
            "2003 bytes; the limit is 1024",
        ),
        ("reports/deep.json", SkipCode::TooDeep, "200 levels deep"),
        (
            "reports/dangling.json",
            SkipCode::DanglingSymlink,
            "missing.json",
        ),
        ("reports/loop_a.csv", SkipCode::SymlinkLoop, "loop"),
        ("reports/loop_b.csv", SkipCode::SymlinkLoop, "loop"),
        (
            "reports/sub/back",
            SkipCode::SymlinkLoop,
            "enclosing directory",
        ),
        ("reports/outside.csv", SkipCode::OutsideRoot, "outside ROOT"),
        ("reports/outside_dir", SkipCode::OutsideRoot, "outside ROOT"),
        ("reports/notes.txt", SkipCode::Unsupported, ".txt"),
        ("reports/image.png", SkipCode::Unsupported, ".png"),
        ("reports/.git", SkipCode::HiddenDir, "hidden"),
    ];
    for (path, code, needle) in expect {
        let s = code_of(path);
        assert_eq!(s.code, code, "{path}: {}", s.reason);
        assert!(
            s.reason.contains(needle),
            "{path}: {:?} lacks {needle:?}",
            s.reason
        );
    }
    if fifo {
        assert_eq!(code_of("reports/fifo.csv").code, SkipCode::NotRegularFile);
    }
    if !unreadable_is_readable {
        let s = code_of("reports/unreadable.csv");
        assert_eq!(s.code, SkipCode::ReadError);
        assert!(s.reason.contains("ermission"), "{}", s.reason);
    }
    // Nothing from outside ROOT or inside the hidden folder, nothing twice.
    assert!(ing
        .files
        .iter()
        .all(|f| !f.path.contains("secret") && !f.path.contains(".git")));
    let expected_skips = expect.len() + usize::from(fifo) + usize::from(!unreadable_is_readable);
    assert_eq!(ing.skipped.len(), expected_skips, "{:#?}", ing.skipped);
    assert!(ing.skipped.iter().all(|s| !s.reason.is_empty()));

    // Metrics from the good files only; the link to good.csv is read as its own path.
    let files: Vec<&str> = ing.metrics.iter().map(|m| m.file.as_str()).collect();
    assert_eq!(
        files,
        vec![
            "reports/good.csv",
            "reports/good.csv",
            "reports/good.json",
            "reports/inside_link.csv",
            "reports/inside_link.csv"
        ]
    );
    assert_eq!(ing.metrics[1].metric, Metric::EvalTokensPerS);
    assert_eq!(ing.metrics[1].value, 55.5);
    assert_eq!(ing.metrics[1].label.as_deref(), Some("m1"));
}

#[test]
fn vanished_file_is_a_skip_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err =
        ingest::load_file(tmp.path(), "reports/gone.json", &IngestOptions::default()).unwrap_err();
    assert_eq!(err.code, SkipCode::ReadError);
    assert!(err.reason.contains("vanished"), "{}", err.reason);
    assert_eq!(
        err.warning_line(),
        format!("warning: skipped reports/gone.json: {}", err.reason)
    );
}

#[test]
fn scans_root_when_no_default_folder_exists_and_honours_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(&root.join("a.json"), b"{\"latency_ms\": 5}");
    write(&root.join("custom/b.csv"), b"eval_s\n2\n");
    write(&root.join("other/c.md"), b"# C\n");

    let ing = ingest::scan(root, &IngestOptions::default()).unwrap();
    assert_eq!(ing.scanned_dirs, vec!["."]);
    let got: Vec<&str> = ing.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(got, vec!["a.json", "custom/b.csv", "other/c.md"]);

    let opts = IngestOptions {
        dirs: vec!["custom".into(), "./other/".into(), "missing".into()],
        ..IngestOptions::default()
    };
    let ing = ingest::scan(root, &opts).unwrap();
    assert_eq!(ing.scanned_dirs, vec!["custom", "other"]);
    let got: Vec<&str> = ing.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(got, vec!["custom/b.csv", "other/c.md"]);
    assert_eq!(ing.metrics[0].value, 2000.0);

    // A folder that escapes ROOT is not scanned.
    let opts = IngestOptions {
        dirs: vec!["../".into()],
        ..IngestOptions::default()
    };
    let ing = ingest::scan(&root.join("custom"), &opts).unwrap();
    assert_eq!(ing.skipped[0].code, SkipCode::OutsideRoot);
    assert_eq!(ing.scanned_dirs, vec!["."]);
}

#[test]
fn empty_tree_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let ing = ingest::scan(tmp.path(), &IngestOptions::default()).unwrap();
    assert_eq!(ing.summary_text(), "Total files analyzed: 0\n\n");
    assert!(ing.metrics.is_empty() && ing.numbers().is_empty());
}

#[test]
fn scan_errors_name_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let e = ingest::scan(&missing, &IngestOptions::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("artifact root {} does not exist", missing.display())
    );
    let file = tmp.path().join("f.json");
    write(&file, b"{}");
    let e = ingest::scan(&file, &IngestOptions::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("artifact root {} is not a directory", file.display())
    );
}

// ---------------------------------------------------------------------------
// The binary

fn chimera(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chimera"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_missing_or_file_root_is_one_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let out = chimera(&["ingest".as_ref(), missing.as_os_str()]);
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "error: artifact root {} does not exist\n",
            missing.display()
        )
    );
    assert!(out.stdout.is_empty());

    let file = tmp.path().join("f.md");
    write(&file, b"# x\n");
    let out = chimera(&["ingest".as_ref(), file.as_os_str()]);
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "error: artifact root {} is not a directory\n",
            file.display()
        )
    );
}

#[test]
fn cli_text_warnings_json_and_metrics_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    write(
        &root.join("reports/run.csv"),
        b"model,ttft_s,tokens_s\ng,0.5,100\ng,0.25,120\n",
    );
    write(&root.join("reports/bad.json"), b"{nope");
    write(&root.join("reports/big.md"), &[b'x'; 3000]);
    write(&root.join("reports/readme.txt"), b"quiet");

    let out = chimera(&[
        "ingest".as_ref(),
        root.as_os_str(),
        "--max-file-size".as_ref(),
        "2K".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("warning: skipped reports/bad.json: invalid JSON: "),
        "{stderr}"
    );
    assert_eq!(
        lines[1],
        "warning: skipped reports/big.md: too large (3000 bytes; the limit is 2048 bytes)"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("Total files analyzed: 1\n\nCSV Files (1)\n  - reports/run.csv\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Skipped files (3)\n  - reports/bad.json: invalid JSON"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  - reports/readme.txt: unsupported file type .txt\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "Metrics (4 values from 1 files; left out: 0 from failed runs, 0 zero or negative)"
        ),
        "{stdout}"
    );
    let ttft = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("ttft_ms"))
        .unwrap();
    let cols: Vec<&str> = ttft.split_whitespace().collect();
    assert_eq!(
        cols,
        vec!["ttft_ms", "2", "1", "375.00", "250.00", "500.00", "ms"]
    );

    // JSON: one object; --dirs with a comma list; metrics CSV written atomically.
    let csv_path = tmp.path().join("out/metrics.csv");
    fs::create_dir_all(csv_path.parent().unwrap()).unwrap();
    let out = chimera(&[
        "ingest".as_ref(),
        root.as_os_str(),
        "--format".as_ref(),
        "json".as_ref(),
        "--dirs".as_ref(),
        "reports,nothing".as_ref(),
        "--metrics-csv".as_ref(),
        csv_path.as_os_str(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "root",
        "scanned_dirs",
        "files",
        "skipped",
        "metrics",
        "metric_exclusions",
        "facts",
        "summary",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["scanned_dirs"], serde_json::json!(["reports"]));
    // No size cap this time: big.md is read.
    assert_eq!(v["files"][0]["path"], "reports/big.md");
    assert_eq!(v["files"][1]["path"], "reports/run.csv");
    assert_eq!(v["files"][1]["content"]["rows"], 2);
    assert_eq!(v["skipped"][0]["code"], "invalid_json");
    assert_eq!(v["metrics"].as_array().unwrap().len(), 4);
    assert_eq!(v["metrics"][0]["locator"], "row 1, column \"ttft_s\"");
    assert_eq!(v["metrics"][0]["value"], 500.0);
    assert_eq!(v["metrics"][0]["unit"], "ms");
    assert_eq!(v["facts"]["kinds"][0]["files"], 1);
    assert!(v["summary"]
        .as_str()
        .unwrap()
        .starts_with("Total files analyzed: 2\n"));

    let mut rdr = csv::Reader::from_path(&csv_path).unwrap();
    assert_eq!(
        rdr.headers().unwrap().iter().collect::<Vec<_>>(),
        chimera::ingest::metrics::CSV_HEADER.to_vec()
    );
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows[1].iter().collect::<Vec<_>>(),
        vec![
            "reports/run.csv",
            "row 1, column \"tokens_s\"",
            "eval_tokens_per_s",
            "",
            "100",
            "tok/s",
            "tokens_s",
            "100",
            "tok/s",
            "g"
        ]
    );
    // Only the CSV remains in its folder (the temporary file was renamed).
    let left: Vec<_> = fs::read_dir(csv_path.parent().unwrap()).unwrap().collect();
    assert_eq!(left.len(), 1);
}

#[test]
fn cli_warns_about_named_folders_that_do_not_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(&root.join("custom/b.csv"), b"eval_s\n2\n");
    write(&root.join("a.md"), b"# A\n");

    let out = chimera(&[
        "ingest".as_ref(),
        root.as_os_str(),
        "--dir".as_ref(),
        "custom,missing".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "warning: --dir missing: no such folder under {}; not scanned\n",
            root.display()
        )
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("Total files analyzed: 1\n"), "{stdout}");

    // None of them: all of ROOT, and it says so.
    let out = chimera(&[
        "ingest".as_ref(),
        root.as_os_str(),
        "--dir".as_ref(),
        "missing".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.ends_with(&format!(
            "warning: none of the --dir folders exists: scanned all of {}\n",
            root.display()
        )),
        "{stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("Total files analyzed: 2\n"), "{stdout}");
}
