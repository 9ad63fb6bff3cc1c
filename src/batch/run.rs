//! Running a job list: one folder per job under `DIR/jobs/<id>/`, the
//! manifest `DIR/manifest.json` rewritten atomically after every job (so a
//! crash or Ctrl-C loses at most the job in flight), and `DIR/index.md` /
//! `DIR/index.csv` with each job's settings and headline metrics.
//!
//! `--resume` skips jobs the manifest records as finished whose folder
//! still holds its `summary.json`; any other job folder left behind (a job
//! cut short) is removed and the job runs again.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{display_value, slice, Job, JobFile, Settings, Shard, PLAIN_SCENARIO};
use crate::cli::report::ReportArgs;
use crate::report::output::{write_atomic, SUMMARY_JSON};

pub const MANIFEST: &str = "manifest.json";
pub const JOBS_DIR: &str = "jobs";

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Finished,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Finished => "finished",
            Status::Failed => "failed",
        }
    }
}

/// One agent's headline figures of a finished job, from its summary.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Headline {
    pub agent: String,
    pub label: String,
    /// Counted runs.
    pub runs: usize,
    pub eval_tokens_per_s_mean: f64,
    pub eval_tokens_per_s_stddev: f64,
    pub ttft_ms_mean: f64,
    pub ttft_ms_stddev: f64,
    /// Generated tokens over the counted runs.
    pub generated_tokens: f64,
}

/// One job as the manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub index: usize,
    pub id: String,
    /// The job's folder, relative to the batch folder (or, in a merged
    /// index, to the merge folder).
    pub dir: String,
    pub settings: Settings,
    pub status: Status,
    /// Wall-clock seconds of the job: model load and warm-up runs included.
    pub wall_s: Option<f64>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    #[serde(default)]
    pub headline: Vec<Headline>,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub jobs_file: String,
    /// Hash of every job id of the whole expansion, in order.
    pub grid_id: String,
    /// Jobs in the whole expansion (every shard).
    pub total_jobs: usize,
    pub all_job_ids: Vec<String>,
    /// `I/N` when this folder holds one shard.
    pub shard: Option<String>,
    pub updated_at: String,
    /// This folder's jobs (its shard's), in order.
    pub jobs: Vec<JobRecord>,
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Manifest {
    /// The manifest of batch folder `dir`, if it has one.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let p = dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
        };
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is not a chimera batch manifest", p.display()))
    }

    pub fn save(&mut self, dir: &Path) -> Result<()> {
        self.updated_at = now();
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        write_atomic(&dir.join(MANIFEST), &bytes)
    }

    pub fn count(&self, s: Status) -> usize {
        self.jobs.iter().filter(|j| j.status == s).count()
    }
}

/// The headline rows of a finished report folder (none when its
/// summary.json has no agents, e.g. a scenario with another layout).
pub fn headline(job_dir: &Path) -> Result<Vec<Headline>> {
    let p = job_dir.join(SUMMARY_JSON);
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))?;
    let f = |a: &Value, k: &str, s: &str| a[k][s].as_f64().unwrap_or(0.0);
    Ok(v["agents"]
        .as_array()
        .map(|agents| {
            agents
                .iter()
                .map(|a| Headline {
                    agent: a["agent"].as_str().unwrap_or_default().to_string(),
                    label: a["label"].as_str().unwrap_or_default().to_string(),
                    runs: a["eval_tokens_per_s"]["n"].as_u64().unwrap_or(0) as usize,
                    eval_tokens_per_s_mean: f(a, "eval_tokens_per_s", "mean"),
                    eval_tokens_per_s_stddev: f(a, "eval_tokens_per_s", "stddev"),
                    ttft_ms_mean: f(a, "ttft_ms", "mean"),
                    ttft_ms_stddev: f(a, "ttft_ms", "stddev"),
                    generated_tokens: a["generated_tokens"]["values"]
                        .as_array()
                        .map(|x| x.iter().filter_map(Value::as_f64).sum())
                        .unwrap_or(0.0),
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Runs one job into `dir` (which does not exist yet).
pub trait Runner {
    fn run(&mut self, job: &Job, dir: &Path) -> Result<()>;
}

/// The `chimera report` arguments of a job (without the program name).
pub fn report_argv(job: &Job, dir: &Path, quiet: bool) -> Vec<String> {
    let mut argv = vec![
        "report".to_string(),
        "--output-dir".into(),
        dir.display().to_string(),
    ];
    for (k, v) in &job.settings {
        if k == "scenario" && v.as_str() == Some(PLAIN_SCENARIO) {
            continue;
        }
        let flag = format!("--{}", k.replace('_', "-"));
        match v {
            Value::Bool(true) => argv.push(flag),
            Value::Bool(false) | Value::Null => {}
            Value::Array(items) => {
                for x in items {
                    argv.push(flag.clone());
                    argv.push(display_value(x));
                }
            }
            other => {
                argv.push(flag);
                argv.push(display_value(other));
            }
        }
    }
    if quiet && !job.settings.contains_key("quiet") {
        argv.push("--quiet".into());
    }
    argv
}

#[derive(Parser)]
#[command(name = "chimera")]
struct ReportCli {
    #[command(subcommand)]
    cmd: ReportOnly,
}

#[derive(clap::Subcommand)]
enum ReportOnly {
    Report(ReportArgs),
}

/// A job's settings parsed by `chimera report`'s own argument parser.
pub fn report_args(job: &Job, dir: &Path, quiet: bool) -> Result<ReportArgs> {
    let argv = report_argv(job, dir, quiet);
    match ReportCli::try_parse_from(std::iter::once("chimera".to_string()).chain(argv)) {
        Ok(ReportCli {
            cmd: ReportOnly::Report(a),
        }) => Ok(a),
        Err(e) => {
            use clap::error::{ContextKind, ContextValue, ErrorKind};
            let msg = match (e.kind(), e.get(ContextKind::InvalidArg)) {
                (ErrorKind::UnknownArgument, Some(ContextValue::String(a))) => format!(
                    "`{}` is not a `chimera report` option",
                    a.trim_start_matches('-').replace('-', "_")
                ),
                _ => e
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
                    .to_string(),
            };
            anyhow::bail!("job {} ({}): {msg}", job.index + 1, job.id)
        }
    }
}

/// Runs each job as `chimera report` in this process.
pub struct ReportRunner {
    /// Pass `--quiet` (no live display or input warnings of the report).
    pub quiet: bool,
}

impl Runner for ReportRunner {
    fn run(&mut self, job: &Job, dir: &Path) -> Result<()> {
        let args = report_args(job, dir, self.quiet)?;
        match crate::cli::report::run(args)? {
            0 => Ok(()),
            code => anyhow::bail!("chimera report exited with code {code}"),
        }
    }
}

/// Checks every job against `chimera report`'s parser and every model name
/// before anything runs.
pub fn validate(jobs: &[Job], out: &Path) -> Result<()> {
    let reg = crate::models::Registry::builtin()?;
    for j in jobs {
        report_args(j, &out.join(JOBS_DIR).join(&j.id), false)?;
        let m = j.model();
        if !(Path::new(m).exists() || reg.get(m).is_some() || crate::models::is_repo_id(m)) {
            anyhow::bail!(
                "job {} ({}): unknown model `{m}`: not a file, not in models.toml (known: {}) and not a Hugging Face repo id",
                j.index + 1,
                j.id,
                reg.names().join(", ")
            );
        }
    }
    Ok(())
}

/// How to run a batch.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    pub out: PathBuf,
    pub resume: bool,
    pub shard: Option<Shard>,
}

/// What the Ctrl-C handler reads; held while the manifest is written.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub manifest: PathBuf,
    pub finished: usize,
    pub jobs: usize,
    pub in_flight: Option<String>,
}

impl Live {
    pub fn interrupted_message(&self) -> String {
        if self.manifest.as_os_str().is_empty() {
            return "interrupted before the first job started; nothing was recorded".into();
        }
        let flight = match &self.in_flight {
            Some(id) => format!("; job {id} was cut short and runs again with --resume"),
            None => String::new(),
        };
        format!(
            "interrupted: {} of {} jobs finished, recorded in {}{flight}",
            self.finished,
            self.jobs,
            self.manifest.display()
        )
    }
}

/// Progress over the jobs this invocation runs.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Jobs run so far (finished or failed) out of `to_run`.
    pub done: usize,
    pub to_run: usize,
    /// Generated tokens of the jobs run so far (counted runs).
    pub tokens: f64,
    /// Wall seconds of the jobs run so far.
    pub elapsed_s: f64,
}

impl Progress {
    /// Seconds left at the mean job time so far.
    pub fn eta_s(&self) -> Option<f64> {
        (self.done > 0)
            .then(|| self.elapsed_s / self.done as f64 * (self.to_run - self.done) as f64)
    }

    /// `[=====>    ] 3/12 jobs · ETA 4m · 4512 tokens (35.2 tok/s)`.
    pub fn line(&self) -> String {
        let width = 24;
        let filled = (self.done * width)
            .checked_div(self.to_run)
            .unwrap_or(width);
        let bar: String = (0..width)
            .map(|i| match i.cmp(&filled) {
                std::cmp::Ordering::Less => '=',
                std::cmp::Ordering::Equal => '>',
                std::cmp::Ordering::Greater => ' ',
            })
            .collect();
        let eta = match self.eta_s() {
            Some(s) => format!(
                "ETA {}",
                indicatif::HumanDuration(std::time::Duration::from_secs_f64(s))
            ),
            None => "ETA -".into(),
        };
        let rate = if self.elapsed_s > 0.0 {
            self.tokens / self.elapsed_s
        } else {
            0.0
        };
        format!(
            "[{bar}] {}/{} jobs · {eta} · {:.0} tokens ({rate:.1} tok/s)",
            self.done, self.to_run, self.tokens
        )
    }
}

/// What a batch hears as it goes.
pub trait Events {
    fn starting(&mut self, _p: &Progress, _job: &Job) {}
    fn finished(&mut self, _p: &Progress, _rec: &JobRecord) {}
}

pub struct NoEvents;
impl Events for NoEvents {}

/// What happened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Jobs of this folder (the shard's).
    pub jobs: usize,
    /// Finished before this invocation and skipped.
    pub skipped: usize,
    pub ran: usize,
    /// `(id, error)` of the jobs that failed now.
    pub failed: Vec<(String, String)>,
    /// Finished jobs of an earlier manifest no longer in the job file.
    pub dropped: usize,
}

fn job_dir(out: &Path, id: &str) -> PathBuf {
    out.join(JOBS_DIR).join(id)
}

fn save(out: &Path, m: &mut Manifest, file: &JobFile) -> Result<()> {
    m.save(out)?;
    super::index::write(
        out,
        &m.jobs,
        &super::index::Meta::of_manifest(m, &file.path),
    )
}

/// Runs the jobs of `file` (its shard's) into `opts.out`.
pub fn run(
    file: &JobFile,
    opts: &BatchOptions,
    runner: &mut dyn Runner,
    live: &Mutex<Live>,
    events: &mut dyn Events,
) -> Result<Outcome> {
    let out = &opts.out;
    let jobs = slice(&file.jobs, opts.shard);
    let shard = opts.shard.map(|s| s.to_string());
    let old = Manifest::load(out)?;
    if let Some(m) = &old {
        anyhow::ensure!(
            opts.resume,
            "{} already holds a batch ({MANIFEST}); pass --resume to continue it or choose another --output-dir",
            out.display()
        );
        anyhow::ensure!(
            m.shard == shard,
            "{} holds shard {} of its batch, not {}; resume it with the same --shard",
            out.display(),
            m.shard.as_deref().unwrap_or("(none)"),
            shard.as_deref().unwrap_or("(none)")
        );
    }
    std::fs::create_dir_all(out.join(JOBS_DIR))
        .with_context(|| format!("cannot create output folder {}", out.display()))?;

    let mut outcome = Outcome {
        jobs: jobs.len(),
        ..Default::default()
    };
    let records: Vec<JobRecord> = jobs
        .iter()
        .map(|j| {
            let done = old
                .as_ref()
                .and_then(|m| m.jobs.iter().find(|r| r.id == j.id))
                .filter(|r| r.status == Status::Finished)
                .filter(|_| job_dir(out, &j.id).join(SUMMARY_JSON).is_file());
            match done {
                Some(r) => {
                    outcome.skipped += 1;
                    JobRecord {
                        index: j.index,
                        ..r.clone()
                    }
                }
                None => JobRecord {
                    index: j.index,
                    id: j.id.clone(),
                    dir: format!("{JOBS_DIR}/{}", j.id),
                    settings: j.settings.clone(),
                    status: Status::Pending,
                    wall_s: None,
                    finished_at: None,
                    error: None,
                    headline: Vec::new(),
                },
            }
        })
        .collect();
    if let Some(m) = &old {
        outcome.dropped = m
            .jobs
            .iter()
            .filter(|r| r.status == Status::Finished && !jobs.iter().any(|j| j.id == r.id))
            .count();
    }
    let mut manifest = Manifest {
        version: 1,
        jobs_file: file.path.display().to_string(),
        grid_id: file.grid_id.clone(),
        total_jobs: file.jobs.len(),
        all_job_ids: file.jobs.iter().map(|j| j.id.clone()).collect(),
        shard,
        updated_at: String::new(),
        jobs: records,
    };
    {
        let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
        save(out, &mut manifest, file)?;
        *l = Live {
            manifest: out.join(MANIFEST),
            finished: manifest.count(Status::Finished),
            jobs: jobs.len(),
            in_flight: None,
        };
    }

    let mut progress = Progress {
        to_run: jobs.len() - outcome.skipped,
        ..Default::default()
    };
    for (k, job) in jobs.iter().enumerate() {
        if manifest.jobs[k].status == Status::Finished {
            continue;
        }
        let dir = job_dir(out, &job.id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| {
                format!("cannot remove the unfinished job folder {}", dir.display())
            })?;
        }
        live.lock().unwrap_or_else(|p| p.into_inner()).in_flight = Some(job.id.clone());
        events.starting(&progress, job);
        let t0 = Instant::now();
        let result = runner.run(job, &dir).and_then(|()| headline(&dir));
        let wall = t0.elapsed().as_secs_f64();
        let rec = &mut manifest.jobs[k];
        rec.wall_s = Some(wall);
        match result {
            Ok(h) => {
                rec.status = Status::Finished;
                rec.finished_at = Some(now());
                rec.error = None;
                progress.tokens += h.iter().map(|x| x.generated_tokens).sum::<f64>();
                rec.headline = h;
            }
            Err(e) => {
                let msg = format!("{e:#}");
                rec.status = Status::Failed;
                rec.error = Some(msg.clone());
                outcome.failed.push((job.id.clone(), msg));
            }
        }
        outcome.ran += 1;
        progress.done += 1;
        progress.elapsed_s += wall;
        {
            let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
            save(out, &mut manifest, file)?;
            l.finished = manifest.count(Status::Finished);
            l.in_flight = None;
        }
        events.finished(&progress, &manifest.jobs[k]);
    }
    Ok(outcome)
}
