//! `chimera batch`, `chimera batch merge` and `chimera compare`: grid
//! expansion, shards, resume after a simulated crash, the merged index and
//! the comparison, through the library with a stand-in runner and through
//! the binary with a tiny random model.

mod common;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use anyhow::Result;
use candle_core::quantized::GgmlDType;
use chimera::batch::index::{self, INDEX_CSV, INDEX_MD};
use chimera::batch::run::{self, BatchOptions, Live, Manifest, NoEvents, Runner, Status, MANIFEST};
use chimera::batch::{slice, Job, JobFile, Shard};
use chimera::model::Config;
use common::tiny::{tokenizer_json, Tiny};
use serde_json::{json, Value};

const GRID: &str = r#"
output_dir = "out"

[defaults]
input = "examples/artifacts"
runs = 2
seed = 7

[grid]
temperature = [0.2, 0.8]
model = ["gemma3-270m-q4_k_m", "gemma3-1b-it-q4_k_m"]
num_ctx = [1024, 2048, 4096]
"#;

fn grid() -> JobFile {
    JobFile::parse(GRID, Path::new("jobs.toml")).unwrap()
}

fn err(text: &str) -> String {
    format!(
        "{:#}",
        JobFile::parse(text, Path::new("jobs.toml")).unwrap_err()
    )
}

#[test]
fn the_grid_expands_in_a_fixed_order_with_stable_ids() {
    let f = grid();
    assert_eq!(f.jobs.len(), 12);
    assert_eq!(f.output_dir.as_deref(), Some(Path::new("out")));
    // model varies slowest, then num_ctx, then temperature (alphabetical).
    let first = &f.jobs[0].settings;
    assert_eq!(first["model"], "gemma3-270m-q4_k_m");
    assert_eq!(
        (first["num_ctx"].clone(), first["temperature"].clone()),
        (json!(1024), json!(0.2))
    );
    assert_eq!(f.jobs[1].settings["temperature"], json!(0.8));
    assert_eq!(f.jobs[2].settings["num_ctx"], json!(2048));
    assert_eq!(f.jobs[6].settings["model"], "gemma3-1b-it-q4_k_m");
    for (i, j) in f.jobs.iter().enumerate() {
        assert_eq!(j.index, i);
        assert_eq!(j.settings["runs"], 2, "defaults reach every job");
        assert_eq!(j.settings["scenario"], "report");
    }
    assert_eq!(
        f.jobs[0].id[..f.jobs[0].id.len() - 9].to_string(),
        "gemma3-270m-q4_k_m_report_num_ctx-1024_temperature-0.2"
    );
    let mut ids: Vec<&str> = f.jobs.iter().map(|j| j.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12, "ids are unique");
    // Same file, same ids; ids never depend on the order keys are written.
    let again = grid();
    assert_eq!(f.grid_id, again.grid_id);
    let reordered =
        GRID.replace("temperature = [0.2, 0.8]\nmodel", "model") + "temperature = [0.2, 0.8]\n";
    let r = JobFile::parse(&reordered, Path::new("x")).unwrap();
    assert_eq!(
        r.jobs.iter().map(|j| &j.id).collect::<Vec<_>>(),
        f.jobs.iter().map(|j| &j.id).collect::<Vec<_>>()
    );
}

#[test]
fn several_grids_scalars_and_repeated_flags() {
    let f = JobFile::parse(
        r#"
[defaults]
stop = ["@@", "END"]
[[grid]]
model = "m.gguf"
temperature = [0.0, 0.5]
[[grid]]
model = ["m.gguf"]
temperature = [0.5, 1.0]
scenario = ["report", "chimera_homo"]
"#,
        Path::new("x"),
    )
    .unwrap();
    // 2 + 4 combinations, one of them (m.gguf, report, 0.5) in both grids.
    assert_eq!(f.jobs.len(), 5);
    let argv = run::report_argv(&f.jobs[4], Path::new("d"), false).join(" ");
    assert_eq!(
        argv,
        "report --output-dir d --model m.gguf --scenario chimera_homo --stop @@ --stop END --temperature 1.0"
    );
    let plain = run::report_argv(&f.jobs[0], Path::new("d"), true).join(" ");
    assert_eq!(
        plain,
        "report --output-dir d --model m.gguf --stop @@ --stop END --temperature 0.0 --quiet"
    );
}

#[test]
fn bad_job_files_fail_in_one_clear_line() {
    for (text, needle) in [
        (
            "[grid]\nnum_ctx = []\n",
            "[grid] num_ctx: an empty list gives no jobs",
        ),
        (
            "[defaults]\noutput_dir = 'x'\n",
            "[defaults] output_dir: set by chimera batch",
        ),
        ("jobs = 3\n", "unknown field `jobs`"),
        ("[grid]\nmodel = [1]\n", "[grid] model: must be a string"),
        (
            "[defaults]\nwhen = 2024-01-01\n",
            "only strings, numbers, booleans and lists",
        ),
        ("[grid\n", "jobs.toml"),
    ] {
        let e = err(text);
        assert!(e.contains(needle), "{needle:?} in {e:?}");
        assert!(e.starts_with("job file jobs.toml"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    let f = JobFile::parse("[grid]\nnum_gpus = [0, 1]\n", Path::new("x")).unwrap();
    let e = format!(
        "{:#}",
        run::validate(&f.jobs, Path::new("out")).unwrap_err()
    );
    assert!(
        e.contains("`num_gpus` is not a `chimera report` option"),
        "{e}"
    );
    let f = JobFile::parse("[grid]\nmodel = ['nope']\n", Path::new("x")).unwrap();
    let e = format!(
        "{:#}",
        run::validate(&f.jobs, Path::new("out")).unwrap_err()
    );
    assert!(e.contains("unknown model `nope`"), "{e}");
    let f = JobFile::parse("[grid]\ntemperature = ['hot']\n", Path::new("x")).unwrap();
    let e = format!(
        "{:#}",
        run::validate(&f.jobs, Path::new("out")).unwrap_err()
    );
    assert!(e.contains("job 1") && e.contains("hot"), "{e}");
}

#[test]
fn shards_cover_every_job_exactly_once() {
    let f = grid();
    for n in 1..=7 {
        let mut seen = vec![0usize; f.jobs.len()];
        for i in 1..=n {
            let shard: Shard = format!("{i}/{n}").parse().unwrap();
            for j in slice(&f.jobs, Some(shard)) {
                seen[j.index] += 1;
                assert_eq!(j.index % n, i - 1);
            }
        }
        assert!(seen.iter().all(|&c| c == 1), "N = {n}: {seen:?}");
    }
    assert_eq!(slice(&f.jobs, None).len(), 12);
}

/// Writes a report-like summary.json; can crash at one job, leaving half a
/// folder behind.
#[derive(Default)]
struct Fake {
    ran: Vec<String>,
    crash_at: Option<String>,
    fail: Option<String>,
}

impl Runner for Fake {
    fn run(&mut self, job: &Job, dir: &Path) -> Result<()> {
        assert!(!dir.exists(), "a job starts from no folder");
        std::fs::create_dir_all(dir.join("run_1"))?;
        std::fs::write(dir.join("run_1/metrics.json"), "{")?;
        if self.crash_at.as_deref() == Some(job.id.as_str()) {
            panic!("simulated crash in {}", job.id);
        }
        if self.fail.as_deref() == Some(job.id.as_str()) {
            anyhow::bail!("model exploded");
        }
        let k = job.index as f64;
        let summary = json!({
            "model": job.model(),
            "run_dirs": ["run_1", "run_2"],
            "agents": [{
                "agent": "collector", "label": "Chimera Agent A",
                "eval_tokens_per_s": {"n": 2, "mean": 10.0 + k, "stddev": 1.0, "values": [9.0 + k, 11.0 + k]},
                "ttft_ms": {"n": 2, "mean": 100.0, "stddev": 2.0, "values": [98.0, 102.0]},
                "generated_tokens": {"n": 2, "mean": 5.0, "stddev": 0.0, "values": [5.0, 5.0]}
            }]
        });
        std::fs::write(dir.join("summary.json"), summary.to_string())?;
        self.ran.push(job.id.clone());
        Ok(())
    }
}

fn opts(out: &Path, resume: bool, shard: Option<&str>) -> BatchOptions {
    BatchOptions {
        out: out.to_path_buf(),
        resume,
        shard: shard.map(|s| s.parse().unwrap()),
    }
}

#[test]
fn resume_after_a_crash_runs_only_the_missing_jobs() {
    let f = grid();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("batch");
    let live = Mutex::new(Live::default());
    let crash = f.jobs[4].id.clone();
    let mut first = Fake {
        crash_at: Some(crash.clone()),
        ..Default::default()
    };
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
        run::run(
            &f,
            &opts(&out, false, None),
            &mut first,
            &live,
            &mut NoEvents,
        )
    }));
    assert!(r.is_err(), "the runner crashed");
    assert_eq!(first.ran.len(), 4);
    let m = Manifest::load(&out).unwrap().unwrap();
    assert_eq!(m.count(Status::Finished), 4);
    assert_eq!(m.count(Status::Pending), 8);
    assert!(
        out.join("jobs")
            .join(&crash)
            .join("run_1/metrics.json")
            .exists(),
        "half a job left"
    );
    let l = live.lock().unwrap().clone();
    assert_eq!(
        (l.finished, l.in_flight.as_deref()),
        (4, Some(crash.as_str()))
    );
    assert!(l
        .interrupted_message()
        .contains(&format!("job {crash} was cut short")));

    // Without --resume the folder is refused.
    let e = run::run(
        &f,
        &opts(&out, false, None),
        &mut Fake::default(),
        &live,
        &mut NoEvents,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("already holds a batch") && e.contains("--resume"),
        "{e}"
    );
    // A finished job whose folder is gone runs again.
    std::fs::remove_dir_all(out.join("jobs").join(&f.jobs[1].id)).unwrap();

    let mut second = Fake::default();
    let o = run::run(
        &f,
        &opts(&out, true, None),
        &mut second,
        &live,
        &mut NoEvents,
    )
    .unwrap();
    let want: Vec<String> = std::iter::once(f.jobs[1].id.clone())
        .chain(f.jobs[4..].iter().map(|j| j.id.clone()))
        .collect();
    assert_eq!(second.ran, want);
    assert_eq!((o.skipped, o.ran, o.failed.len()), (3, 9, 0));
    let m = Manifest::load(&out).unwrap().unwrap();
    assert_eq!(m.count(Status::Finished), 12);
    assert_eq!(m.total_jobs, 12);

    let csv = std::fs::read_to_string(out.join(INDEX_CSV)).unwrap();
    let mut rd = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    for col in [
        "index",
        "job",
        "status",
        "model",
        "num_ctx",
        "temperature",
        "seed",
        "eval_tokens_per_s_mean",
        "ttft_ms_stddev",
        "wall_s",
    ] {
        assert!(header.iter().any(|h| h == col), "{col} in {header:?}");
    }
    assert_eq!(rd.records().count(), 12);
    let md = std::fs::read_to_string(out.join(INDEX_MD)).unwrap();
    assert!(
        md.contains("12 jobs here: 12 finished, 0 failed, 0 pending"),
        "{md}"
    );
    assert!(
        md.contains("| # | Job | model | num_ctx | temperature | Status | Agent |"),
        "{md}"
    );
    assert!(md.contains(&format!("| 5 | [{crash}](jobs/{crash}/summary.md) | gemma3-270m-q4_k_m | 4096 | 0.2 | finished | collector | 2 | 14.00 ± 1.00 | 100.00 ± 2.00 | 10 |")), "{md}");
}

#[test]
fn failed_jobs_are_recorded_and_retried() {
    let f = JobFile::parse("[grid]\ntemperature = [0.1, 0.2, 0.3]\n", Path::new("j")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let live = Mutex::new(Live::default());
    let mut fake = Fake {
        fail: Some(f.jobs[1].id.clone()),
        ..Default::default()
    };
    let o = run::run(
        &f,
        &opts(&out, false, None),
        &mut fake,
        &live,
        &mut NoEvents,
    )
    .unwrap();
    assert_eq!(
        o.failed,
        vec![(f.jobs[1].id.clone(), "model exploded".to_string())]
    );
    assert_eq!(o.ran, 3);
    let md = std::fs::read_to_string(out.join(INDEX_MD)).unwrap();
    assert!(md.contains("| failed: model exploded |"), "{md}");
    let mut again = Fake::default();
    let o = run::run(
        &f,
        &opts(&out, true, None),
        &mut again,
        &live,
        &mut NoEvents,
    )
    .unwrap();
    assert_eq!(again.ran, vec![f.jobs[1].id.clone()]);
    assert_eq!((o.skipped, o.failed.len()), (2, 0));
    // A different shard cannot resume this folder.
    let e = run::run(
        &f,
        &opts(&out, true, Some("1/2")),
        &mut Fake::default(),
        &live,
        &mut NoEvents,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("holds shard (none)"), "{e}");
}

#[test]
fn merged_shards_make_one_index() {
    let f = grid();
    let tmp = tempfile::tempdir().unwrap();
    let live = Mutex::new(Live::default());
    let dirs: Vec<PathBuf> = (1..=3)
        .map(|i| tmp.path().join(format!("shard-{i}")))
        .collect();
    for (i, d) in dirs.iter().enumerate() {
        let shard = format!("{}/3", i + 1);
        run::run(
            &f,
            &opts(d, false, Some(&shard)),
            &mut Fake::default(),
            &live,
            &mut NoEvents,
        )
        .unwrap();
        let m = Manifest::load(d).unwrap().unwrap();
        assert_eq!(m.jobs.len(), 4);
        assert_eq!(m.shard.as_deref(), Some(shard.as_str()));
    }
    assert_eq!(index::common_parent(&dirs).unwrap(), tmp.path());
    let merged = index::merge(&dirs, tmp.path()).unwrap();
    assert_eq!((merged.finished, merged.total_jobs), (12, 12));
    assert!(merged.missing.is_empty() && merged.duplicates.is_empty());
    let csv = std::fs::read_to_string(tmp.path().join(INDEX_CSV)).unwrap();
    let mut rd = csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
    let ids: Vec<&str> = rows.iter().map(|r| &r[1]).collect();
    let want: Vec<&str> = f.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, want, "every job once, in job-file order");
    assert_eq!(&rows[1][3], format!("shard-2/jobs/{}", f.jobs[1].id));
    let md = std::fs::read_to_string(tmp.path().join(INDEX_MD)).unwrap();
    assert!(
        md.contains("merged from 3 folder(s): 12 jobs here: 12 finished"),
        "{md}"
    );

    // Without the third shard, its jobs are missing.
    let two = index::merge(&dirs[..2], &tmp.path().join("m2")).unwrap();
    assert_eq!(two.finished, 8);
    let want: Vec<String> = f
        .jobs
        .iter()
        .skip(2)
        .step_by(3)
        .map(|j| j.id.clone())
        .collect();
    assert_eq!(two.missing, want);
    let md = std::fs::read_to_string(tmp.path().join("m2").join(INDEX_MD)).unwrap();
    assert!(md.contains("Missing from every folder merged: 4"), "{md}");
    assert!(
        md.contains("(../shard-1/jobs/"),
        "links relative to the merge folder: {md}"
    );

    // Folders of another job file are refused.
    let other = JobFile::parse("[grid]\nseed = [1]\n", Path::new("o")).unwrap();
    let od = tmp.path().join("other");
    run::run(
        &other,
        &opts(&od, false, None),
        &mut Fake::default(),
        &live,
        &mut NoEvents,
    )
    .unwrap();
    let e = index::merge(&[dirs[0].clone(), od], tmp.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("different job files"), "{e}");
}

fn chimera(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chimera"))
        .args(args)
        .current_dir(cwd)
        .env("CHIMERA_CACHE", cwd.join("cache"))
        .output()
        .expect("running chimera")
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

#[test]
fn the_binary_runs_resumes_and_merges_real_reports_on_a_tiny_model() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let vocab = 1536;
    Tiny::random(
        Config {
            vocab_size: vocab,
            ..Config::tiny()
        },
        3,
    )
    .write_gguf(&d.join("tiny.gguf"), GgmlDType::Q8_0);
    std::fs::write(d.join("tokenizer.json"), tokenizer_json(vocab, &[])).unwrap();
    std::fs::create_dir_all(d.join("input")).unwrap();
    std::fs::write(
        d.join("input/run.csv"),
        "model,tokens_s,ttft_s\ntiny,12.5,0.2\n",
    )
    .unwrap();
    std::fs::write(
        d.join("jobs.toml"),
        "[defaults]\nmodel = 'tiny.gguf'\ninput = 'input'\nagent = 'collector'\nnum_predict = 2\nruns = 1\nseed = 1\n\n[grid]\ntemperature = [0.0, 0.5]\n",
    )
    .unwrap();

    one_error_line(
        &chimera(&["batch", "jobs.toml", "--shard", "3/2"], d),
        "invalid shard `3/2`: I must be between 1 and 2",
    );
    one_error_line(
        &chimera(&["batch", "missing.toml"], d),
        "cannot read job file missing.toml",
    );
    std::fs::write(d.join("bad.toml"), "[grid]\nnum_gpus = [0]\n").unwrap();
    one_error_line(
        &chimera(&["batch", "bad.toml"], d),
        "`num_gpus` is not a `chimera report` option",
    );

    let o = chimera(&["batch", "jobs.toml", "-o", "out"], d);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("2 job(s) run, 0 skipped"), "{stdout}");
    let out = d.join("out");
    let m = Manifest::load(&out).unwrap().unwrap();
    assert_eq!(m.count(Status::Finished), 2);
    for r in &m.jobs {
        let job = out.join(&r.dir);
        assert!(
            job.join("summary.json").is_file() && job.join("run_1/collector_report.md").is_file()
        );
        assert_eq!(r.headline.len(), 1);
        assert_eq!(r.headline[0].agent, "collector");
        assert_eq!(r.headline[0].runs, 1);
    }

    // A crash in job 2: the manifest still says pending, its folder is half written.
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(MANIFEST)).unwrap()).unwrap();
    v["jobs"][1]["status"] = json!("pending");
    std::fs::write(out.join(MANIFEST), v.to_string()).unwrap();
    let job2 = out.join(m.jobs[1].dir.clone());
    std::fs::remove_file(job2.join("summary.json")).unwrap();
    std::fs::write(out.join(&m.jobs[0].dir).join("marker"), "kept").unwrap();
    let o = chimera(&["batch", "jobs.toml", "-o", "out"], d);
    one_error_line(&o, "already holds a batch");
    let o = chimera(&["batch", "jobs.toml", "-o", "out", "--resume"], d);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("1 job(s) run, 1 skipped as finished earlier, 0 failed"),
        "{stdout}"
    );
    assert!(job2.join("summary.json").is_file());
    assert!(
        out.join(&m.jobs[0].dir).join("marker").is_file(),
        "the finished job is untouched"
    );

    // Shards into their own folders, merged next to them.
    for i in 1..=2 {
        let o = chimera(
            &[
                "batch",
                "jobs.toml",
                "--shard",
                &format!("{i}/2"),
                "-o",
                &format!("sweep/shard-{i}"),
            ],
            d,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = chimera(&["batch", "merge", "sweep/shard-1", "sweep/shard-2"], d);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 of 2 jobs finished"));
    let md = std::fs::read_to_string(d.join("sweep").join(INDEX_MD)).unwrap();
    assert!(
        md.contains("(shard-1/jobs/") && md.contains("(shard-2/jobs/"),
        "{md}"
    );

    // compare two finished jobs (each a report folder).
    let a = out.join(&m.jobs[0].dir);
    let o = chimera(
        &[
            "compare",
            a.to_str().unwrap(),
            job2.to_str().unwrap(),
            "-o",
            "cmp",
        ],
        d,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(d.join("cmp/comparison.md").is_file() && d.join("cmp/comparison.json").is_file());
    one_error_line(
        &chimera(&["compare", "nope", a.to_str().unwrap()], d),
        "run folder nope not found",
    );
    one_error_line(
        &chimera(&["compare", "input", a.to_str().unwrap()], d),
        "has no summary.json",
    );
    one_error_line(
        &chimera(
            &[
                "compare",
                a.to_str().unwrap(),
                job2.to_str().unwrap(),
                "-o",
                "cmp",
            ],
            d,
        ),
        "already holds a comparison",
    );
}

fn summary(model: &str, tps: &[f64], ttft: &[f64]) -> Value {
    let stat = |v: &[f64]| serde_json::to_value(chimera::report::Stat::of(v)).unwrap();
    json!({
        "model": model, "input": "in", "started_at": "2025-01-01T00:00:00Z",
        "runs_requested": tps.len(), "warmup_runs": 0, "runs_completed": tps.len(),
        "run_dirs": (1..=tps.len()).map(|i| format!("run_{i}")).collect::<Vec<_>>(),
        "statistics": "",
        "agents": [{
            "agent": "insight", "name": "InsightAgent", "label": "Chimera Insight", "report_file": "insight_report.md",
            "eval_tokens_per_s": stat(tps), "ttft_ms": stat(ttft), "total_ms": stat(&[1000.0; 3][..tps.len()]),
            "generated_tokens": stat(&[100.0; 3][..tps.len()]), "prompt_tokens_per_s": stat(&[500.0; 3][..tps.len()]),
            "workflow_total_s": stat(&[1.0; 3][..tps.len()]), "unmatched_figures": stat(&[0.0; 3][..tps.len()]), "calls": []
        }]
    })
}

#[test]
fn compare_on_fixed_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for (name, s) in [
        (
            "a",
            summary("baseline", &[40.0, 44.0, 42.0], &[200.0, 220.0, 210.0]),
        ),
        (
            "b",
            summary("chimera", &[60.0, 66.0, 63.0], &[100.0, 110.0, 105.0]),
        ),
    ] {
        std::fs::create_dir_all(d.join(name)).unwrap();
        std::fs::write(d.join(name).join("summary.json"), s.to_string()).unwrap();
    }
    let o = chimera(&["compare", "a", "b"], d);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("Chimera Insight: throughput 42.00 -> 63.00 tok/s (+50.0%), TTFT 210.00 -> 105.00 ms (-50.0%)"), "{stdout}");
    let md = std::fs::read_to_string(d.join("reports/compare/comparison.md")).unwrap();
    // sA = 2, sB = 3, n = 3: se = sqrt(4/3 + 9/3) = 2.08; cv 4.76% and 4.76%.
    assert!(md.contains("| Throughput (tok/s) | 42.00 | 2.00 | 4.76% | 63.00 | 3.00 | 4.76% | +21.00 | 2.08 | +50.00% | 1.500 |"), "{md}");
    assert!(md.contains("| TTFT (ms) | 210.00 | 10.00 | 4.76% | 105.00 | 5.00 | 4.76% | -105.00 | 6.45 | -50.00% | 0.500 |"), "{md}");
    assert!(
        md.contains("| 2 | 44.00 | 66.00 | 220.00 | 110.00 |"),
        "{md}"
    );
    assert!(
        md.contains("- A (baseline): a — model baseline, 3 run(s)"),
        "{md}"
    );
    let j: Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("reports/compare/comparison.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(j["agents"][0]["deltas"][0]["ratio"], 1.5);
    assert_eq!(j["agents"][0]["runs"].as_array().unwrap().len(), 3);
}
