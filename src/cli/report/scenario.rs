//! `chimera report --scenario`: the collector and insight agents at once,
//! over one loaded model.
//!
//! Agent A runs the collector persona and writes `collector_report.md`,
//! agent B the insight persona and `insight_report.md`; each run adds
//! `combined_report.md`, and `metrics.json` and the summary files gain a
//! `scenario` object (see [`crate::report::scenario`]).
//!
//! Options of each agent, later layers winning: the engine defaults, the
//! persona's options (not for the baseline), the shared sampling flags, the
//! agent's scenario overrides: the `[a]` / `[b]` table of
//! `--scenario-config FILE`, then the repeatable `--a` / `--b KEY=VALUE`
//! flags (keys as for `--collector`).
//!
//! * `baseline_vs_chimera`: A = "Baseline Collector", engine defaults and
//!   the shared flags only (`--a` / `[a]` are refused); B = "Chimera
//!   Insight" with `--b` / `[b]`.
//! * `chimera_hetero`: "Chimera Agent A" with `--a` / `[a]`, "Chimera Agent
//!   B" with `--b` / `[b]`.
//! * `chimera_homo`: both with the overrides of `--a` / `[a]` (`--b` / `[b]`
//!   are refused); the personas' own options still apply under them.
//!
//! `--concurrency` picks how the agents share the engine: `sequential` (one
//! after the other: the reference wall time), `threads` (two engines over
//! the same weights, half the threads each, one OS thread per agent) or
//! `batched` (one engine serving both agents' calls, decoding their
//! sequences in shared forward passes; the default). Greedy outputs are the
//! same in all three.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context as _, Result};
use indicatif::ProgressBar;
use serde::Deserialize;
use serde_json::Value;

use super::{finish_agent, to_json, AgentChoice, Committed, Plan, ReportArgs};
use crate::agent::{
    run_agent, AgentKind, AgentRun, Llm, OptionOverrides, Personas, Progress, Stage, Task,
    DEFAULT_BUDGET,
};
use crate::engine::{
    channel, BatchMetrics, Client, Engine, Generation, Observer, Options, Request,
};
use crate::ingest::IngestOptions;
use crate::report::metrics::RunMetrics;
use crate::report::output::{self, write_atomic, OutputDir};
use crate::report::scenario::{
    render_combined, render_summary_section, Concurrency, Scenario, ScenarioAgent, ScenarioRun,
    ScenarioRunFile, ScenarioSummary, ScenarioSummaryFile, COMBINED_REPORT,
};
use crate::report::summary::{self, SummaryMeta};

/// `--scenario-config FILE`: the overrides of agent A and agent B.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    a: Option<OptionOverrides>,
    b: Option<OptionOverrides>,
}

impl ScenarioFile {
    fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario config {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "scenario config {}: {}",
                path.display(),
                e.to_string().trim().replace('\n', " ")
            )
        })
    }
}

/// `file`'s overrides, then the `flag` assignments over them, key by key.
fn layered(
    file: Option<&OptionOverrides>,
    flag: &str,
    assignments: &[String],
) -> Result<OptionOverrides> {
    let flags = OptionOverrides::parse_assignments(flag, assignments)?;
    let Value::Object(mut merged) = serde_json::to_value(file.cloned().unwrap_or_default())? else {
        unreachable!("overrides serialize to an object")
    };
    if let Value::Object(f) = serde_json::to_value(&flags)? {
        merged.extend(f);
    }
    Ok(serde_json::from_value(Value::Object(merged))?)
}

/// One agent of the scenario.
struct Role {
    /// `A` or `B`.
    key: &'static str,
    baseline: bool,
    overrides: OptionOverrides,
    plan: Plan,
}

/// A scenario as the flags ask for it.
pub(super) struct Setup {
    scenario: Scenario,
    concurrency: Concurrency,
    roles: [Role; 2],
}

impl Setup {
    /// The scenario of `args`; `None` without `--scenario`, after refusing
    /// the flags that only a scenario takes.
    pub(super) fn from_args(args: &ReportArgs) -> Result<Option<Self>> {
        let Some(scenario) = args.scenario else {
            for (given, flag) in [
                (!args.a.is_empty(), "--a"),
                (!args.b.is_empty(), "--b"),
                (args.scenario_config.is_some(), "--scenario-config"),
                (args.concurrency.is_some(), "--concurrency"),
            ] {
                anyhow::ensure!(
                    !given,
                    "{flag} needs --scenario (baseline_vs_chimera, chimera_hetero or chimera_homo)"
                );
            }
            return Ok(None);
        };
        let name = scenario.key();
        anyhow::ensure!(
            args.collector.is_empty() && args.insight.is_empty(),
            "--collector and --insight do not apply with --scenario {name}: give agent A's options with --a KEY=VALUE and agent B's with --b (or [a] / [b] in --scenario-config)"
        );
        anyhow::ensure!(
            args.agent == AgentChoice::Both,
            "--agent does not apply with --scenario {name}: both agents run"
        );
        let file = match &args.scenario_config {
            Some(p) => ScenarioFile::load(p)?,
            None => ScenarioFile::default(),
        };
        let a = layered(file.a.as_ref(), "--a", &args.a)?;
        let b = layered(file.b.as_ref(), "--b", &args.b)?;
        let none = OptionOverrides::default();
        match scenario {
            Scenario::BaselineVsChimera => anyhow::ensure!(
                a == none,
                "--scenario {name}: the Baseline Collector runs with default options; give the Chimera Insight agent's overrides with --b or [b] (not --a or [a])"
            ),
            Scenario::ChimeraHomo => anyhow::ensure!(
                b == none,
                "--scenario {name}: both agents take the same overrides, from --a or [a]; --b and [b] are for chimera_hetero"
            ),
            Scenario::ChimeraHetero => {}
        }
        let overrides = match scenario {
            Scenario::BaselineVsChimera => [none, b],
            Scenario::ChimeraHetero => [a, b],
            Scenario::ChimeraHomo => [a.clone(), a],
        };
        let personas = match &args.personas {
            Some(p) => Personas::load(p)?,
            None => Personas::builtin(),
        };
        let labels = scenario.labels();
        let mut roles = Vec::with_capacity(2);
        for (i, (kind, overrides)) in AgentKind::ALL.into_iter().zip(overrides).enumerate() {
            let key = ["A", "B"][i];
            let baseline = scenario == Scenario::BaselineVsChimera && i == 0;
            let mut persona = personas.get(kind).clone();
            persona.label = labels[i].to_string();
            let mut options = Options::default();
            if !baseline {
                persona.options.apply(&mut options);
            }
            args.sampling.apply(&mut options);
            overrides.apply(&mut options);
            // The model's own context limit is checked once it is loaded.
            options
                .validate(usize::MAX)
                .with_context(|| format!("options of agent {key} ({})", persona.label))?;
            roles.push(Role {
                key,
                baseline,
                overrides,
                plan: Plan {
                    kind,
                    persona,
                    options,
                },
            });
        }
        let Ok(roles) = <[Role; 2]>::try_from(roles) else {
            unreachable!("two agents")
        };
        Ok(Some(Self {
            scenario,
            concurrency: args.concurrency.unwrap_or(Concurrency::Batched),
            roles,
        }))
    }

    /// The two agents as plain report plans (for the checks before the
    /// model runs).
    pub(super) fn plans(&self) -> Vec<Plan> {
        self.roles
            .iter()
            .map(|r| Plan {
                kind: r.plan.kind,
                persona: r.plan.persona.clone(),
                options: r.plan.options.clone(),
            })
            .collect()
    }
}

/// The progress line: the run, then agent A's and agent B's state.
struct Line {
    bar: ProgressBar,
    run: String,
    parts: [String; 2],
}

impl Line {
    fn show(&self) {
        self.bar.set_message(format!(
            "{} · {} | {}",
            self.run, self.parts[0], self.parts[1]
        ));
    }
}

/// One agent's part of the progress line. Calls served in a batch report
/// no tokens, so batched agents show their stage only.
struct AgentProgress {
    line: Arc<Mutex<Line>>,
    slot: usize,
    who: String,
    stage: Stage,
    first_token: Option<Instant>,
    served: bool,
}

impl AgentProgress {
    fn set(&self, part: String) {
        let mut l = self.line.lock().unwrap_or_else(|p| p.into_inner());
        l.parts[self.slot] = part;
        l.show();
    }
}

impl Observer for AgentProgress {
    fn token(&mut self, n: usize) {
        let now = Instant::now();
        let first = *self.first_token.get_or_insert(now);
        let secs = (now - first).as_secs_f64();
        let rate = if n > 1 && secs > 0.0 {
            (n - 1) as f64 / secs
        } else {
            0.0
        };
        self.set(format!(
            "{} {} · {n} tokens · {rate:.1} tok/s",
            self.who,
            self.stage.as_str()
        ));
    }

    fn warning(&mut self, msg: &str) {
        let bar = self
            .line
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .bar
            .clone();
        bar.suspend(|| eprintln!("warning: {} ({}): {msg}", self.who, self.stage.as_str()));
    }
}

impl Progress for AgentProgress {
    fn stage(&mut self, stage: Stage) {
        self.stage = stage;
        self.first_token = None;
        let what = match (stage, self.served) {
            (Stage::Ingest, _) => "",
            (_, true) => " (batched)",
            (_, false) => " · reading the prompt",
        };
        self.set(format!("{} {}{what}", self.who, stage.as_str()));
    }

    fn observer(&mut self) -> &mut dyn Observer {
        self
    }
}

/// An agent's model calls sent to an engine serving them in batches.
struct Served(Client);

impl Llm for Served {
    fn generate(&mut self, req: &Request, _: &mut dyn Observer) -> Result<Generation> {
        self.0.generate(req.clone())
    }
}

/// What one run of both agents produced.
struct Pair {
    runs: [AgentRun; 2],
    wall_s: f64,
    batch: Option<BatchMetrics>,
}

fn task<'a>(p: &'a Plan, input: &'a Path, ingest: &'a IngestOptions) -> Task<'a> {
    Task {
        kind: p.kind,
        persona: &p.persona,
        options: &p.options,
        budget: DEFAULT_BUDGET,
        input,
        ingest,
    }
}

fn joined<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Runs both agents once, the way `setup.concurrency` says. `forks` are
/// the two engines of `threads`.
fn run_pair(
    setup: &Setup,
    engine: &mut Engine,
    forks: &mut [Engine],
    input: &Path,
    ingest: &IngestOptions,
    line: &Arc<Mutex<Line>>,
    label: &str,
) -> Result<Pair> {
    let served = setup.concurrency == Concurrency::Batched;
    {
        let mut l = line.lock().unwrap_or_else(|p| p.into_inner());
        l.run = format!("{label} · {}", setup.scenario.key());
        for (i, r) in setup.roles.iter().enumerate() {
            l.parts[i] = format!("{} waiting", r.key);
        }
        l.show();
    }
    let progress = |i: usize| AgentProgress {
        line: Arc::clone(line),
        slot: i,
        who: format!(
            "{} {}",
            setup.roles[i].key, setup.roles[i].plan.persona.name
        ),
        stage: Stage::Ingest,
        first_token: None,
        served,
    };
    let [ta, tb] = [0, 1].map(|i| task(&setup.roles[i].plan, input, ingest));
    let (mut pa, mut pb) = (progress(0), progress(1));
    let t0 = Instant::now();
    let (a, b, batch) = match setup.concurrency {
        Concurrency::Sequential => {
            let a = run_agent(engine, &ta, &mut pa);
            let b = match a {
                Ok(_) => run_agent(engine, &tb, &mut pb),
                Err(_) => Err(anyhow::anyhow!("not run")),
            };
            (a, b, None)
        }
        Concurrency::Threads => {
            let [fa, fb] = forks else {
                unreachable!("two engines for --concurrency threads")
            };
            let (a, b) = std::thread::scope(|s| {
                let ha = s.spawn(|| run_agent(fa, &ta, &mut pa));
                let hb = s.spawn(|| run_agent(fb, &tb, &mut pb));
                (joined(ha), joined(hb))
            });
            (a, b, None)
        }
        Concurrency::Batched => {
            let (client, inbox) = channel();
            let (stats, a, b) = std::thread::scope(|s| {
                let mut la = Served(client.clone());
                let mut lb = Served(client);
                let ha = s.spawn(move || run_agent(&mut la, &ta, &mut pa));
                let hb = s.spawn(move || run_agent(&mut lb, &tb, &mut pb));
                // Serves until both agents are done (their clients dropped).
                let stats = engine.serve(inbox);
                (stats, joined(ha), joined(hb))
            });
            let stats = stats.context("the engine failed while serving the agents")?;
            (a, b, Some(stats))
        }
    };
    let wall_s = t0.elapsed().as_secs_f64();
    Ok(Pair {
        runs: [a?, b?],
        wall_s,
        batch,
    })
}

/// The summary files over the committed runs.
fn write_summary(
    out: &OutputDir,
    setup: &Setup,
    meta: &SummaryMeta,
    runs: &[RunMetrics],
    scenarios: &[ScenarioRun],
) -> Result<()> {
    let sum = summary::summarize(meta, runs);
    let ss = ScenarioSummary::of(setup.scenario, setup.concurrency, scenarios);
    write_atomic(
        &out.root().join(output::SUMMARY_JSON),
        &to_json(&ScenarioSummaryFile {
            summary: &sum,
            scenario: &ss,
        })?,
    )?;
    let numbered: Vec<(usize, &ScenarioRun)> = runs.iter().map(|r| r.run).zip(scenarios).collect();
    let md = summary::render_markdown(&sum, runs) + &render_summary_section(&ss, &numbered);
    write_atomic(&out.root().join(output::SUMMARY_MD), md.as_bytes())
}

/// Runs the scenario: warmup runs, then `--runs` runs, each committed
/// whole with the summary rewritten after it.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    args: &ReportArgs,
    setup: Setup,
    mut engine: Engine,
    out: &OutputDir,
    ingest_opts: &IngestOptions,
    committed: &Arc<Mutex<Committed>>,
    bar: &ProgressBar,
) -> Result<u8> {
    let (mut forks, engines, threads) = match setup.concurrency {
        Concurrency::Threads => {
            let half = (engine.threads() / 2).max(1);
            (vec![engine.fork(half), engine.fork(half)], 2, half)
        }
        _ => (Vec::new(), 1, engine.threads()),
    };
    let line = Arc::new(Mutex::new(Line {
        bar: bar.clone(),
        run: String::new(),
        parts: Default::default(),
    }));

    for w in 1..=args.warmup {
        let label = format!("warmup {w}/{}", args.warmup);
        run_pair(
            &setup,
            &mut engine,
            &mut forks,
            &args.input,
            ingest_opts,
            &line,
            &label,
        )?;
    }

    let started_at = chrono::Utc::now();
    let date = chrono::Local::now().format("%Y-%m-%d").to_string();
    let model = engine.name().to_string();
    let meta = SummaryMeta {
        model: model.clone(),
        input: args.input.display().to_string(),
        started_at: started_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        runs_requested: args.runs,
        warmup_runs: args.warmup,
    };
    // Forks (--concurrency threads) run on the CPU.
    let num_gpu = if forks.is_empty() {
        engine.num_gpu() as u32
    } else {
        0
    };
    let mut runs: Vec<RunMetrics> = Vec::new();
    let mut scenarios: Vec<ScenarioRun> = Vec::new();
    let stdout = std::io::stdout();
    for n in 1..=args.runs {
        let run_started = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let label = format!("run {n}/{}", args.runs);
        let pair = run_pair(
            &setup,
            &mut engine,
            &mut forks,
            &args.input,
            ingest_opts,
            &line,
            &label,
        )?;
        let mut reports = Vec::new();
        let mut agents = Vec::new();
        let mut views = Vec::new();
        for (r, role) in pair.runs.iter().zip(&setup.roles) {
            let (md, record) = finish_agent(r, &model, &date, num_gpu);
            views.push(ScenarioAgent::new(
                role.key,
                role.baseline,
                &r.options,
                &role.overrides,
                &record,
                num_gpu,
            ));
            reports.push((record.report_file.clone(), md));
            agents.push(record);
        }
        let Ok(views) = <[ScenarioAgent; 2]>::try_from(views) else {
            unreachable!("two agents")
        };
        let scenario = ScenarioRun::new(
            setup.scenario,
            setup.concurrency,
            engines,
            threads,
            pair.wall_s,
            views,
            pair.batch,
        );
        reports.push((
            COMBINED_REPORT.to_string(),
            render_combined(&scenario, n, &date, &model),
        ));
        let run = RunMetrics {
            run: n,
            model: model.clone(),
            started_at: run_started,
            input: meta.input.clone(),
            agents,
        };

        let mut c = committed.lock().unwrap_or_else(|p| p.into_inner());
        let staged = out.stage_run(n)?;
        for (file, md) in &reports {
            write_atomic(&staged.join(file), md.as_bytes())?;
        }
        write_atomic(
            &staged.join(output::METRICS_JSON),
            &to_json(&ScenarioRunFile {
                run: &run,
                scenario: &scenario,
            })?,
        )?;
        let dir: PathBuf = out.commit_run(n)?;
        runs.push(run);
        scenarios.push(scenario);
        write_summary(out, &setup, &meta, &runs, &scenarios)?;
        c.runs.push(output::run_dir_name(n));
        drop(c);

        let files: Vec<&str> = reports
            .iter()
            .map(|(f, _)| f.as_str())
            .chain([output::METRICS_JSON])
            .collect();
        let t = &scenarios[n - 1].timing;
        bar.suspend(|| {
            let mut o = stdout.lock();
            let _ = writeln!(o, "wrote {} ({})", dir.display(), files.join(", "));
            let _ = writeln!(
                o,
                "  wall {:.2} s, sequential estimate {:.2} s, speedup {:.2}x",
                t.concurrent_wall_s, t.sequential_estimate_s, t.speedup
            );
            let _ = o.flush();
        });
    }
    bar.finish_and_clear();

    let sum = summary::summarize(&meta, &runs);
    let ss = ScenarioSummary::of(setup.scenario, setup.concurrency, &scenarios);
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
            "{}: throughput {:.2} tok/s (cv {:.2}%), TTFT {:.2} ms (cv {:.2}%), duration {:.2} s over {} run(s)",
            a.label,
            a.eval_tokens_per_s.mean,
            a.eval_tokens_per_s.cv * 100.0,
            a.ttft_ms.mean,
            a.ttft_ms.cv * 100.0,
            a.workflow_total_s.mean,
            a.eval_tokens_per_s.n
        );
    }
    let _ = write!(
        o,
        "{} ({}): wall {:.2} s, sequential estimate {:.2} s, speedup {:.2}x, efficiency {:.1}%",
        setup.scenario.key(),
        setup.concurrency.key(),
        ss.concurrent_wall_s.mean,
        ss.sequential_estimate_s.mean,
        ss.speedup.mean,
        ss.efficiency.mean * 100.0
    );
    if let (Some(b), Some(r)) = (&ss.mean_batch_size, &ss.aggregate_tokens_per_s) {
        let _ = write!(
            o,
            ", mean batch size {:.2}, aggregate decode {:.2} tok/s",
            b.mean, r.mean
        );
    }
    let _ = writeln!(o, " (mean over {} run(s))", ss.speedup.n);
    let _ = o.flush();
    Ok(0)
}
