//! `chimera report`: run the agents over an artifact folder and write their
//! reports, each run's metrics and a summary over runs.
//!
//! Output folder layout:
//!
//! ```text
//! DIR/summary.json, DIR/summary.md      statistics over the counted runs
//! DIR/run_<n>/collector_report.md       per agent that ran
//! DIR/run_<n>/insight_report.md
//! DIR/run_<n>/metrics.json              every call's options, metrics, tokens and text
//! ```
//!
//! Options of each agent, later layers winning: the engine defaults, the
//! persona's, the shared sampling flags, the agent's own `--collector` /
//! `--insight KEY=VALUE` flags. When no layer sets `num_predict`, the
//! analysis call generates at most 384 tokens and the report call 768
//! ([`DEFAULT_BUDGET`]).
//!
//! A folder that already holds a report is refused unless `--overwrite`, and
//! so is one inside a folder the input scan reads (a later run would ingest
//! an earlier one's reports);
//! runs are staged and renamed into place whole, every file is written
//! atomically, and Ctrl-C keeps the finished runs (and a summary of them),
//! says where they are and exits with 130.
//!
//! With `--scenario` both agents run at once and each run also gets a
//! `combined_report.md`; `report/scenario.rs` documents the scenarios,
//! their option layers (`--a` / `--b KEY=VALUE`, `--scenario-config FILE`)
//! and `--concurrency`.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use super::args::{ModelArgs, SamplingArgs};
use crate::agent::{
    run_agent, AgentKind, AgentRun, OptionOverrides, Persona, Personas, Progress, Stage, Task,
    DEFAULT_BUDGET,
};
use crate::engine::{Engine, Generation, Observer, Options};
use crate::ingest::{self, IngestOptions};
use crate::models::{resolve, Fetch};
use crate::report::markdown::{self, AgentReport, Configuration};
use crate::report::metrics::{AgentMetrics, CallRecord, MetricsBlock, RunMetrics};
use crate::report::numcheck::{self, Known};
use crate::report::output::{self, write_atomic, OutputDir};
use crate::report::summary::{self, SummaryMeta};

mod scenario;

/// Which agents run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AgentChoice {
    /// DataCollector-9000 ("Chimera Agent A"): the data inventory.
    Collector,
    /// InsightAgent ("Chimera Insight"): findings and recommendations.
    Insight,
    /// Both, the collector first.
    Both,
}

impl AgentChoice {
    fn kinds(self) -> Vec<AgentKind> {
        match self {
            AgentChoice::Collector => vec![AgentKind::Collector],
            AgentChoice::Insight => vec![AgentKind::Insight],
            AgentChoice::Both => AgentKind::ALL.to_vec(),
        }
    }
}

#[derive(Debug, Args)]
#[command(
    after_help = "Without -n/--num-predict (or num_predict in a persona or KEY=VALUE), each \
                  agent's analysis call generates at most 384 tokens and its report call 768."
)]
pub struct ReportArgs {
    /// Artifact folder to analyse: its reports/, csv_data/ and artifacts/
    /// folders when any exists, else the folder itself.
    #[arg(
        short = 'i',
        long,
        value_name = "ROOT",
        default_value = "examples/artifacts"
    )]
    pub input: PathBuf,

    /// Folder for run_<n>/ (reports and metrics.json), summary.json and
    /// summary.md. One that already holds a report is refused unless
    /// --overwrite is given.
    #[arg(
        short = 'o',
        long,
        value_name = "DIR",
        default_value = "reports/chimera"
    )]
    pub output_dir: PathBuf,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    /// Which agents run.
    #[arg(long, value_enum, default_value_t = AgentChoice::Both)]
    pub agent: AgentChoice,

    /// Runs to write and count in the summary statistics.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub runs: usize,

    /// Runs made first and thrown away (warm caches and CPU clocks); never
    /// written or counted.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub warmup: usize,

    /// An option for the collector only, over the shared flags (repeatable).
    /// KEY is temperature, top_k, top_p, min_p, repeat_penalty,
    /// repeat_last_n, seed, num_predict, num_ctx or stop.
    #[arg(long = "collector", value_name = "KEY=VALUE")]
    pub collector: Vec<String>,

    /// An option for the insight agent only, over the shared flags
    /// (repeatable); keys as for --collector.
    #[arg(long = "insight", value_name = "KEY=VALUE")]
    pub insight: Vec<String>,

    /// TOML file replacing parts of the built-in personas: [collector] and
    /// [insight] tables with name, label, system and an options table.
    #[arg(long, value_name = "FILE.toml")]
    pub personas: Option<PathBuf>,

    /// Replace a report already in the output folder (its run_<n>/ folders
    /// and summary files; nothing else there is touched).
    #[arg(long)]
    pub overwrite: bool,

    /// No progress display and no warnings about skipped input files.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Run both agents at once: baseline_vs_chimera ("Baseline Collector"
    /// with default options against "Chimera Insight" with --b),
    /// chimera_hetero ("Chimera Agent A" with --a, "Chimera Agent B" with
    /// --b) or chimera_homo (both with --a). Each run adds
    /// combined_report.md: wall time, speedup, efficiency, contention.
    #[arg(long, value_enum, value_name = "SCENARIO")]
    pub scenario: Option<crate::report::scenario::Scenario>,

    /// With --scenario: how the agents share the engine: sequential (one
    /// after the other), threads (two engines, half the threads each) or
    /// batched (shared decode steps on one engine) [default: batched].
    #[arg(long, value_enum, value_name = "MODE")]
    pub concurrency: Option<crate::report::scenario::Concurrency>,

    /// With --scenario: an option of agent A (the collector persona), over
    /// the shared flags and [a] of --scenario-config (repeatable); keys as
    /// for --collector.
    #[arg(long = "a", value_name = "KEY=VALUE")]
    pub a: Vec<String>,

    /// With --scenario: an option of agent B (the insight persona), over
    /// the shared flags and [b] of --scenario-config (repeatable).
    #[arg(long = "b", value_name = "KEY=VALUE")]
    pub b: Vec<String>,

    /// With --scenario: TOML file with [a] and [b] tables of agent options
    /// (temperature = 0.2, num_ctx = 4096, ...); --a / --b win over it.
    /// Example: examples/scenario.toml.
    #[arg(long, value_name = "FILE.toml")]
    pub scenario_config: Option<PathBuf>,
}

/// One agent as this report runs it.
struct Plan {
    kind: AgentKind,
    persona: Persona,
    options: Options,
}

fn plans(args: &ReportArgs) -> Result<Vec<Plan>> {
    let personas = match &args.personas {
        Some(p) => Personas::load(p)?,
        None => Personas::builtin(),
    };
    let collector = OptionOverrides::parse_assignments("--collector", &args.collector)?;
    let insight = OptionOverrides::parse_assignments("--insight", &args.insight)?;
    let mut out = Vec::new();
    for kind in args.agent.kinds() {
        let persona = personas.get(kind).clone();
        let mut options = Options::default();
        persona.options.apply(&mut options);
        args.sampling.apply(&mut options);
        match kind {
            AgentKind::Collector => collector.apply(&mut options),
            AgentKind::Insight => insight.apply(&mut options),
        }
        // The model's own context limit is checked once it is loaded.
        options
            .validate(usize::MAX)
            .with_context(|| format!("options of {} ({})", persona.name, kind.key()))?;
        out.push(Plan {
            kind,
            persona,
            options,
        });
    }
    Ok(out)
}

/// The progress line on stderr: stage, tokens so far, decode rate.
struct Display {
    bar: ProgressBar,
    prefix: String,
    stage: Stage,
    first_token: Option<Instant>,
}

impl Display {
    fn new(bar: ProgressBar) -> Self {
        Self {
            bar,
            prefix: String::new(),
            stage: Stage::Ingest,
            first_token: None,
        }
    }
}

impl Observer for Display {
    fn token(&mut self, n: usize) {
        let now = Instant::now();
        let first = *self.first_token.get_or_insert(now);
        let secs = (now - first).as_secs_f64();
        let rate = if n > 1 && secs > 0.0 {
            (n - 1) as f64 / secs
        } else {
            0.0
        };
        self.bar.set_message(format!(
            "{} · {} · {n} tokens · {rate:.1} tok/s",
            self.prefix,
            self.stage.as_str()
        ));
    }

    fn warning(&mut self, msg: &str) {
        self.bar.suspend(|| eprintln!("warning: {msg}"));
    }
}

impl Progress for Display {
    fn stage(&mut self, stage: Stage) {
        self.stage = stage;
        self.first_token = None;
        let what = match stage {
            Stage::Ingest => "",
            Stage::Analysis | Stage::Report => " · reading the prompt",
        };
        self.bar
            .set_message(format!("{} · {}{what}", self.prefix, stage.as_str()));
    }

    fn observer(&mut self) -> &mut dyn Observer {
        self
    }
}

fn progress_bar(show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn call_record(stage: Stage, g: &Generation) -> CallRecord {
    CallRecord {
        stage: stage.as_str().to_string(),
        options: g.options.clone(),
        metrics: g.metrics.clone(),
        token_ids: g.token_ids.clone(),
        text: g.text.clone(),
    }
}

/// The report file of an agent.
fn report_file(kind: AgentKind) -> String {
    format!("{}_report.md", kind.key())
}

/// Renders one agent's report and collects its metrics.
/// The agent's report and metrics; `num_gpu` is the layers its engine ran
/// on a GPU, for the Configuration line.
fn finish_agent(run: &AgentRun, model: &str, date: &str, num_gpu: u32) -> (String, AgentMetrics) {
    let known = Known::new(
        run.data_numbers
            .iter()
            .copied()
            .chain(run.facts.numbers())
            .chain(numcheck::all_numbers(&run.given_text())),
    );
    let a = &run.analysis;
    let shown_analysis = a
        .key_findings
        .iter()
        .chain(&a.recommendations)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    let check = numcheck::check(
        &[
            ("report", run.report_call.text.as_str()),
            ("analysis", shown_analysis.as_str()),
        ],
        &known,
    );
    let metrics = MetricsBlock::combine([&run.analysis_call.metrics, &run.report_call.metrics]);
    let findings_note = a.key_findings_from.note("findings");
    let recommendations_note = a.recommendations_from.note("recommendations");
    let md = markdown::render(&AgentReport {
        label: &run.persona.label,
        date,
        model,
        configuration: Configuration::new(&run.options, num_gpu),
        body: &run.report_call.text,
        files_analyzed: run.files_analyzed,
        times: &run.times,
        data_summary: &run.data_summary,
        metrics: &metrics,
        key_findings: &a.key_findings,
        key_findings_note: findings_note.as_deref(),
        recommendations: &a.recommendations,
        recommendations_note: recommendations_note.as_deref(),
        persona_prompt: &run.persona.system,
        facts_markdown: &run.facts_markdown,
        number_check: &check,
    });
    let record = AgentMetrics {
        agent: run.kind.key().to_string(),
        name: run.persona.name.clone(),
        label: run.persona.label.clone(),
        report_file: report_file(run.kind),
        files_analyzed: run.files_analyzed,
        workflow: run.times,
        metrics,
        analysis: run.analysis.clone(),
        number_check: check,
        calls: vec![
            call_record(Stage::Analysis, &run.analysis_call),
            call_record(Stage::Report, &run.report_call),
        ],
    };
    (md, record)
}

/// `path` made absolute with symbolic links resolved, for the part of it
/// that exists (an output folder may not exist yet).
fn resolved(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            return rest.iter().rev().fold(c, |acc, part| acc.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The first of `dirs` that holds `path` (or is it), if any.
fn containing<'a>(path: &Path, dirs: &'a [PathBuf]) -> Option<&'a PathBuf> {
    let p = resolved(path);
    dirs.iter().find(|d| p.starts_with(resolved(d)))
}

/// What the Ctrl-C handler needs to know; the main thread holds the lock
/// while it commits a run, so an interruption never lands mid-commit.
struct Committed {
    out: PathBuf,
    runs: Vec<String>,
}

fn interrupted_message(c: &Committed) -> String {
    if c.runs.is_empty() {
        format!(
            "interrupted: no run had finished; nothing was written to {}",
            c.out.display()
        )
    } else {
        format!(
            "interrupted: {} finished run(s) kept in {} ({}; {} covers them)",
            c.runs.len(),
            c.out.display(),
            c.runs.join(", "),
            output::SUMMARY_JSON
        )
    }
}

fn to_json(v: &impl serde::Serialize) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(v)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Writes run `n`'s files into its staging folder, renames it into place
/// and rewrites the summary over every committed run.
fn commit_run(
    out: &OutputDir,
    n: usize,
    reports: &[(String, String)],
    run: &RunMetrics,
    meta: &SummaryMeta,
    runs: &[RunMetrics],
) -> Result<PathBuf> {
    let staged = out.stage_run(n)?;
    for (file, md) in reports {
        write_atomic(&staged.join(file), md.as_bytes())?;
    }
    write_atomic(&staged.join(output::METRICS_JSON), &to_json(run)?)?;
    let dir = out.commit_run(n)?;
    let sum = summary::summarize(meta, runs);
    write_atomic(&out.root().join(output::SUMMARY_JSON), &to_json(&sum)?)?;
    write_atomic(
        &out.root().join(output::SUMMARY_MD),
        summary::render_markdown(&sum, runs).as_bytes(),
    )?;
    Ok(dir)
}

fn run_once(
    engine: &mut Engine,
    plans: &[Plan],
    input: &Path,
    ingest_opts: &IngestOptions,
    display: &mut Display,
    label: &str,
) -> Result<Vec<AgentRun>> {
    let mut out = Vec::with_capacity(plans.len());
    for p in plans {
        display.prefix = format!("{label} · {}", p.persona.name);
        let task = Task {
            kind: p.kind,
            persona: &p.persona,
            options: &p.options,
            budget: DEFAULT_BUDGET,
            input,
            ingest: ingest_opts,
        };
        out.push(run_agent(engine, &task, display)?);
    }
    Ok(out)
}

pub fn run(args: ReportArgs) -> Result<u8> {
    anyhow::ensure!(args.runs >= 1, "invalid --runs 0: must be at least 1");
    let setup = scenario::Setup::from_args(&args)?;
    let plans = match &setup {
        Some(s) => s.plans(),
        None => plans(&args)?,
    };

    // Fail on a bad output or input folder before the model loads (the
    // output first: a refusal should not follow input warnings).
    let out = OutputDir::new(&args.output_dir);
    if !args.overwrite {
        out.refuse_existing()?;
    }
    let ingest_opts = IngestOptions::default();
    let probe = ingest::scan(&args.input, &ingest_opts)?;
    if !args.quiet {
        for s in probe.bad_files() {
            eprintln!("{}", s.warning_line());
        }
        if probe.files.is_empty() {
            eprintln!(
                "warning: no CSV, JSON or Markdown files under {}; the agents will report on nothing",
                args.input.display()
            );
        }
    }
    let scanned: Vec<PathBuf> = probe
        .scanned_dirs
        .iter()
        .map(|d| args.input.join(d))
        .collect();
    if let Some(dir) = containing(&args.output_dir, &scanned) {
        anyhow::bail!(
            "output folder {} is inside {}, which is scanned: later runs would read earlier reports; choose an --output-dir outside it",
            args.output_dir.display(),
            dir.display()
        );
    }
    drop(probe);

    let files = resolve(
        &args.model.model,
        args.model.tokenizer.as_deref(),
        Fetch::IfMissing,
    )?;
    let mut engine = Engine::load(&files, &args.model.engine_config()?)?;
    let max_ctx = engine.model().config().max_position_embeddings;
    for p in &plans {
        p.options
            .validate(max_ctx)
            .with_context(|| format!("options of {} ({})", p.persona.name, p.kind.key()))?;
    }
    if args.overwrite {
        out.clear_existing()?;
    } else {
        out.create()?;
    }

    let committed = Arc::new(Mutex::new(Committed {
        out: args.output_dir.clone(),
        runs: Vec::new(),
    }));
    let show = !args.quiet && std::io::stderr().is_terminal();
    let bar = progress_bar(show);
    {
        let committed = Arc::clone(&committed);
        let bar = bar.clone();
        // Only one handler per process; if one is already installed (a
        // host program), Ctrl-C keeps its behaviour and the atomic writes
        // still leave no half files.
        let _ = ctrlc::set_handler(move || {
            let c = committed.lock().unwrap_or_else(|p| p.into_inner());
            bar.finish_and_clear();
            eprintln!("{}", interrupted_message(&c));
            std::process::exit(130);
        });
    }
    if let Some(setup) = setup {
        return scenario::run(&args, setup, engine, &out, &ingest_opts, &committed, &bar);
    }
    let mut display = Display::new(bar.clone());

    for w in 1..=args.warmup {
        let label = format!("warmup {w}/{}", args.warmup);
        run_once(
            &mut engine,
            &plans,
            &args.input,
            &ingest_opts,
            &mut display,
            &label,
        )?;
    }

    let started_at = chrono::Utc::now();
    let date = chrono::Local::now().format("%Y-%m-%d").to_string();
    let meta = SummaryMeta {
        model: engine.name().to_string(),
        input: args.input.display().to_string(),
        started_at: started_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        runs_requested: args.runs,
        warmup_runs: args.warmup,
    };
    let mut runs: Vec<RunMetrics> = Vec::new();
    let stdout = std::io::stdout();
    for n in 1..=args.runs {
        let run_started = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let label = format!("run {n}/{}", args.runs);
        let agent_runs = run_once(
            &mut engine,
            &plans,
            &args.input,
            &ingest_opts,
            &mut display,
            &label,
        )?;
        let mut reports = Vec::new();
        let mut agents = Vec::new();
        for r in &agent_runs {
            let (md, record) = finish_agent(r, engine.name(), &date, engine.num_gpu() as u32);
            reports.push((record.report_file.clone(), md));
            agents.push(record);
        }
        runs.push(RunMetrics {
            run: n,
            model: engine.name().to_string(),
            started_at: run_started,
            input: meta.input.clone(),
            agents,
        });
        let mut c = committed.lock().unwrap_or_else(|p| p.into_inner());
        let dir = commit_run(&out, n, &reports, &runs[n - 1], &meta, &runs)?;
        c.runs.push(output::run_dir_name(n));
        drop(c);
        let files: Vec<&str> = reports
            .iter()
            .map(|(f, _)| f.as_str())
            .chain([output::METRICS_JSON])
            .collect();
        bar.suspend(|| {
            let mut o = stdout.lock();
            let _ = writeln!(o, "wrote {} ({})", dir.display(), files.join(", "));
            let _ = o.flush();
        });
    }
    bar.finish_and_clear();

    let sum = summary::summarize(&meta, &runs);
    let mut o = stdout.lock();
    let _ = writeln!(
        o,
        "wrote {} and {}",
        out.root().join(output::SUMMARY_JSON).display(),
        out.root().join(output::SUMMARY_MD).display()
    );
    for a in &sum.agents {
        let _ = writeln!(
            o,
            "{}: throughput {:.2} tok/s (cv {:.2}%), TTFT {:.2} ms (cv {:.2}%) over {} run(s)",
            a.label,
            a.eval_tokens_per_s.mean,
            a.eval_tokens_per_s.cv * 100.0,
            a.ttft_ms.mean,
            a.ttft_ms.cv * 100.0,
            a.eval_tokens_per_s.n
        );
    }
    let _ = o.flush();
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_inside_a_scanned_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let reports = tmp.path().join("reports");
        std::fs::create_dir(&reports).unwrap();
        let scanned = vec![reports.clone()];
        assert_eq!(
            containing(&reports.join("chimera/new"), &scanned),
            Some(&reports)
        );
        assert_eq!(containing(&reports, &scanned), Some(&reports));
        assert_eq!(
            containing(&tmp.path().join("reports/../out"), &scanned),
            None
        );
        assert_eq!(containing(&tmp.path().join("reports2"), &scanned), None);
    }

    #[test]
    fn interruption_messages() {
        let mut c = Committed {
            out: PathBuf::from("out"),
            runs: vec![],
        };
        assert_eq!(
            interrupted_message(&c),
            "interrupted: no run had finished; nothing was written to out"
        );
        c.runs = vec!["run_1".into(), "run_2".into()];
        assert_eq!(
            interrupted_message(&c),
            "interrupted: 2 finished run(s) kept in out (run_1, run_2; summary.json covers them)"
        );
    }
}
