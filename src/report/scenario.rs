//! Two agents at once (`chimera report --scenario`): the timing arithmetic,
//! the `scenario` part of `metrics.json` and `summary.json`, the combined
//! report and the scenario section of `summary.md`. Like the rest of
//! `report`, it renders what it is handed and runs nothing.
//!
//! The figures are the original multi-agent benchmark's:
//!
//! * **concurrent wall time**: from the start of both agents to the end of
//!   the later one;
//! * **sequential estimate**: the sum of the two agents' own durations
//!   (each agent's workflow time, measured in the same run);
//! * **speedup** = sequential estimate / concurrent wall time;
//! * **efficiency** = speedup / 2 (two agents);
//! * **contention detected** when the speedup is below 1.5 (not applicable
//!   when the agents ran one after the other).
//!
//! Each agent's duration is measured while it shares the machine with the
//! other, so the speedup tells how far the agents overlapped, not how much
//! sooner they finished than one after the other; the honest end-to-end
//! comparison is the wall time of the same scenario under
//! `--concurrency sequential`. Both reports say so.
//!
//! Combined report layout:
//!
//! ```text
//! # Multi-Agent Report: <scenario>
//!
//! **Date:** / **Model:** / **Scenario:** / **Concurrency:** / **Run:**
//!
//! ## Concurrency        wall, sequential estimate, speedup, efficiency, contention
//! ## Batch              (batched only) steps, mean batch size, aggregate tok/s, prefill
//! ## Agents             A, B and B − A: throughput, TTFT, duration, tokens, stages
//! ## Configurations     each agent's Configuration line and overrides, the options that differ
//! ```

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::markdown::Configuration;
use super::metrics::{AgentMetrics, RunMetrics};
use super::stats::Stat;
use super::summary::{stat_row, Summary};
use crate::agent::{OptionOverrides, StageTimes};
use crate::engine::{BatchMetrics, Options};

/// Below this speedup two concurrent agents are said to contend.
pub const CONTENTION_SPEEDUP: f64 = 1.5;

/// The combined report's file name in each run folder.
pub const COMBINED_REPORT: &str = "combined_report.md";

/// Which two agents run, with which options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// "Baseline Collector" with the engine's default options against
    /// "Chimera Insight" with the Chimera options (--b / [b]).
    #[value(name = "baseline_vs_chimera")]
    BaselineVsChimera,
    /// "Chimera Agent A" and "Chimera Agent B", each with its own overrides
    /// (--a / [a] and --b / [b]).
    #[value(name = "chimera_hetero")]
    ChimeraHetero,
    /// "Chimera Agent A" and "Chimera Agent B" with the same overrides
    /// (--a / [a], applied to both).
    #[value(name = "chimera_homo")]
    ChimeraHomo,
}

impl Scenario {
    pub fn key(self) -> &'static str {
        match self {
            Scenario::BaselineVsChimera => "baseline_vs_chimera",
            Scenario::ChimeraHetero => "chimera_hetero",
            Scenario::ChimeraHomo => "chimera_homo",
        }
    }

    /// The labels of agent A (the collector persona) and agent B (the
    /// insight persona).
    pub fn labels(self) -> [&'static str; 2] {
        match self {
            Scenario::BaselineVsChimera => ["Baseline Collector", "Chimera Insight"],
            Scenario::ChimeraHetero | Scenario::ChimeraHomo => {
                ["Chimera Agent A", "Chimera Agent B"]
            }
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Scenario::BaselineVsChimera => {
                "the baseline collector with default options against the Chimera insight agent"
            }
            Scenario::ChimeraHetero => "two Chimera agents, each with its own options",
            Scenario::ChimeraHomo => "two Chimera agents with the same overrides",
        }
    }
}

/// How the two agents share the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// One engine, agent A then agent B (the reference for wall times).
    Sequential,
    /// Two engines over the same weights, half the threads each, one OS
    /// thread per agent.
    Threads,
    /// One engine decoding both agents' sequences in shared forward passes.
    Batched,
}

impl Concurrency {
    pub fn key(self) -> &'static str {
        match self {
            Concurrency::Sequential => "sequential",
            Concurrency::Threads => "threads",
            Concurrency::Batched => "batched",
        }
    }

    fn describe(self, engines: usize, threads: usize) -> String {
        let t = |n: usize| {
            if n == 1 {
                "1 thread".into()
            } else {
                format!("{n} threads")
            }
        };
        match self {
            Concurrency::Sequential => format!("one engine ({}), agent A then agent B", t(threads)),
            Concurrency::Threads => format!(
                "{engines} engines over the same weights ({} each), one OS thread per agent",
                t(threads)
            ),
            Concurrency::Batched => format!(
                "one engine ({}) decoding both agents' sequences in shared forward passes",
                t(threads)
            ),
        }
    }
}

/// The run's timing figures (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timing {
    pub concurrent_wall_s: f64,
    pub sequential_estimate_s: f64,
    pub speedup: f64,
    pub efficiency: f64,
    /// Speedup below [`CONTENTION_SPEEDUP`]; `None` (null) when the agents
    /// ran one after the other.
    pub contention_detected: Option<bool>,
}

impl Timing {
    /// From the wall time of both agents and each agent's own duration.
    pub fn new(concurrent_wall_s: f64, durations_s: [f64; 2], concurrency: Concurrency) -> Self {
        let sequential_estimate_s = durations_s[0] + durations_s[1];
        let speedup = if concurrent_wall_s > 0.0 {
            sequential_estimate_s / concurrent_wall_s
        } else {
            0.0
        };
        Self {
            concurrent_wall_s,
            sequential_estimate_s,
            speedup,
            efficiency: speedup / 2.0,
            contention_detected: match concurrency {
                Concurrency::Sequential => None,
                _ => Some(speedup < CONTENTION_SPEEDUP),
            },
        }
    }
}

/// B − A, and its share of A (`None` when A is 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Delta {
    pub abs: f64,
    pub rel: Option<f64>,
}

impl Delta {
    pub fn of(a: f64, b: f64) -> Self {
        Self {
            abs: b - a,
            rel: (a != 0.0).then(|| (b - a) / a),
        }
    }

    /// `+1.23 (+4.5%)`.
    fn show(&self, decimals: usize) -> String {
        let mut s = format!("{:+.d$}", self.abs, d = decimals);
        if let Some(r) = self.rel {
            let _ = write!(s, " ({:+.1}%)", r * 100.0);
        }
        s
    }
}

/// Agent B's figures less agent A's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Deltas {
    pub eval_tokens_per_s: Delta,
    pub ttft_ms: Delta,
    pub duration_s: Delta,
    pub generated_tokens: Delta,
}

/// One agent of a scenario run.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioAgent {
    /// `A` (the collector persona) or `B` (the insight persona).
    pub role: String,
    pub label: String,
    /// `collector` or `insight`, as in the run's `agents`.
    pub agent: String,
    pub name: String,
    pub report_file: String,
    /// Ran with the engine's default options (the baseline).
    pub baseline: bool,
    /// The report's Configuration line.
    pub configuration: String,
    pub options: Options,
    /// The scenario overrides given to this agent ([a]/[b] and --a/--b).
    pub overrides: OptionOverrides,
    /// The agent's Metrics block figures.
    pub eval_tokens_per_s: f64,
    pub ttft_ms: f64,
    pub generated_tokens: usize,
    /// The agent's workflow time (ingest to the end of the report call).
    pub duration_s: f64,
    pub workflow: StageTimes,
}

impl ScenarioAgent {
    pub fn new(
        role: &str,
        baseline: bool,
        options: &Options,
        overrides: &OptionOverrides,
        m: &AgentMetrics,
        num_gpu: u32,
    ) -> Self {
        Self {
            role: role.to_string(),
            label: m.label.clone(),
            agent: m.agent.clone(),
            name: m.name.clone(),
            report_file: m.report_file.clone(),
            baseline,
            configuration: Configuration::new(options, num_gpu).to_string(),
            options: options.clone(),
            overrides: overrides.clone(),
            eval_tokens_per_s: m.metrics.eval_tokens_per_s,
            ttft_ms: m.metrics.ttft_ms,
            generated_tokens: m.metrics.generated_tokens,
            duration_s: m.workflow.total_s,
            workflow: m.workflow,
        }
    }
}

/// An option whose value differs between the agents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptionDifference {
    pub option: String,
    pub a: Value,
    pub b: Value,
}

/// `v` as a JSON object, through its text so that an `f32` keeps its short
/// form (`to_value` would widen 0.2 to 0.20000000298023224).
fn json_object(v: &impl Serialize) -> serde_json::Map<String, Value> {
    match serde_json::to_string(v).map(|t| serde_json::from_str(&t)) {
        Ok(Ok(Value::Object(m))) => m,
        _ => serde_json::Map::new(),
    }
}

/// The options (by their JSON names) that differ between `a` and `b`.
pub fn option_differences(a: &Options, b: &Options) -> Vec<OptionDifference> {
    let (a, b) = (json_object(a), json_object(b));
    a.iter()
        .filter_map(|(k, va)| {
            let vb = b.get(k).cloned().unwrap_or(Value::Null);
            (*va != vb).then(|| OptionDifference {
                option: k.clone(),
                a: va.clone(),
                b: vb,
            })
        })
        .collect()
}

/// The `scenario` object of a scenario run's `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioRun {
    pub scenario: Scenario,
    pub concurrency: Concurrency,
    /// Engines the agents ran on (2 with `threads`, else 1) and the CPU
    /// threads of each.
    pub engines: usize,
    pub threads_per_engine: usize,
    pub combined_report: String,
    pub timing: Timing,
    /// Agent A, then agent B.
    pub agents: Vec<ScenarioAgent>,
    /// B − A.
    pub deltas: Deltas,
    pub option_differences: Vec<OptionDifference>,
    /// The shared decode steps (batched only).
    pub batch: Option<BatchMetrics>,
}

impl ScenarioRun {
    pub fn new(
        scenario: Scenario,
        concurrency: Concurrency,
        engines: usize,
        threads_per_engine: usize,
        concurrent_wall_s: f64,
        agents: [ScenarioAgent; 2],
        batch: Option<BatchMetrics>,
    ) -> Self {
        let [a, b] = &agents;
        let deltas = Deltas {
            eval_tokens_per_s: Delta::of(a.eval_tokens_per_s, b.eval_tokens_per_s),
            ttft_ms: Delta::of(a.ttft_ms, b.ttft_ms),
            duration_s: Delta::of(a.duration_s, b.duration_s),
            generated_tokens: Delta::of(a.generated_tokens as f64, b.generated_tokens as f64),
        };
        Self {
            scenario,
            concurrency,
            engines,
            threads_per_engine,
            combined_report: COMBINED_REPORT.to_string(),
            timing: Timing::new(concurrent_wall_s, [a.duration_s, b.duration_s], concurrency),
            option_differences: option_differences(&a.options, &b.options),
            deltas,
            agents: agents.into(),
            batch,
        }
    }
}

/// A scenario run's `metrics.json`: the plain report's fields, then
/// `scenario`.
#[derive(Debug, Serialize)]
pub struct ScenarioRunFile<'a> {
    #[serde(flatten)]
    pub run: &'a RunMetrics,
    pub scenario: &'a ScenarioRun,
}

/// The `scenario` object of `summary.json`: the timing over runs.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioSummary {
    pub scenario: Scenario,
    pub concurrency: Concurrency,
    pub concurrent_wall_s: Stat,
    pub sequential_estimate_s: Stat,
    pub speedup: Stat,
    pub efficiency: Stat,
    /// Runs with contention detected (`None` for sequential runs).
    pub contention_runs: Option<usize>,
    /// Batched only.
    pub mean_batch_size: Option<Stat>,
    pub aggregate_tokens_per_s: Option<Stat>,
}

impl ScenarioSummary {
    /// Statistics over `runs` (all of one scenario and concurrency).
    pub fn of(scenario: Scenario, concurrency: Concurrency, runs: &[ScenarioRun]) -> Self {
        let stat =
            |f: &dyn Fn(&ScenarioRun) -> f64| Stat::of(&runs.iter().map(f).collect::<Vec<_>>());
        let batches: Vec<&BatchMetrics> = runs.iter().filter_map(|r| r.batch.as_ref()).collect();
        let batch_stat = |f: &dyn Fn(&BatchMetrics) -> f64| {
            (!batches.is_empty())
                .then(|| Stat::of(&batches.iter().map(|b| f(b)).collect::<Vec<_>>()))
        };
        Self {
            scenario,
            concurrency,
            concurrent_wall_s: stat(&|r| r.timing.concurrent_wall_s),
            sequential_estimate_s: stat(&|r| r.timing.sequential_estimate_s),
            speedup: stat(&|r| r.timing.speedup),
            efficiency: stat(&|r| r.timing.efficiency),
            contention_runs: (concurrency != Concurrency::Sequential).then(|| {
                runs.iter()
                    .filter(|r| r.timing.contention_detected == Some(true))
                    .count()
            }),
            mean_batch_size: batch_stat(&|b| b.mean_batch_size),
            aggregate_tokens_per_s: batch_stat(&|b| b.aggregate_tokens_per_s),
        }
    }
}

/// A scenario report's `summary.json`: the plain report's fields, then
/// `scenario`.
#[derive(Debug, Serialize)]
pub struct ScenarioSummaryFile<'a> {
    #[serde(flatten)]
    pub summary: &'a Summary,
    pub scenario: &'a ScenarioSummary,
}

const SPEEDUP_NOTE: &str = "Speedup compares the sum of the two agents' durations with the wall \
time of this run. Each duration was measured while the agents shared the machine, so the speedup \
says how far they overlapped, not how much sooner they finished than one after the other: for \
that, compare the concurrent wall time with the same scenario's under `--concurrency sequential`.";

fn contention_text(t: &Timing) -> &'static str {
    match t.contention_detected {
        Some(true) => "yes",
        Some(false) => "no",
        None => "not applicable (the agents ran one after the other)",
    }
}

fn overrides_text(o: &OptionOverrides) -> String {
    let m = json_object(o);
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `combined_report.md` of run `run`.
pub fn render_combined(r: &ScenarioRun, run: usize, date: &str, model: &str) -> String {
    let mut s = String::new();
    let [a, b] = [&r.agents[0], &r.agents[1]];
    let t = &r.timing;
    let _ = write!(
        s,
        "# Multi-Agent Report: {scenario}\n\n\
         **Date:** {date}\n**Model:** {model}\n\
         **Scenario:** {scenario} ({what}): A = {la}, B = {lb}\n\
         **Concurrency:** {mode} ({how})\n**Run:** {run}\n\n",
        scenario = r.scenario.key(),
        what = r.scenario.describe(),
        la = a.label,
        lb = b.label,
        mode = r.concurrency.key(),
        how = r.concurrency.describe(r.engines, r.threads_per_engine),
    );
    let _ = write!(
        s,
        "## Concurrency\n\n| Metric | Value |\n| --- | ---: |\n\
         | Concurrent wall time | {:.2} s |\n\
         | Sequential estimate (sum of the agents' durations) | {:.2} s |\n\
         | Speedup (sequential estimate / wall time) | {:.2}x |\n\
         | Efficiency (speedup / 2) | {:.1}% |\n\
         | Contention detected (speedup < {CONTENTION_SPEEDUP}) | {} |\n\n{SPEEDUP_NOTE}\n",
        t.concurrent_wall_s,
        t.sequential_estimate_s,
        t.speedup,
        t.efficiency * 100.0,
        contention_text(t),
    );
    if let Some(bm) = &r.batch {
        let _ = write!(
            s,
            "\n## Batch\n\nThe engine's own figures for every call of both agents.\n\n\
             | Metric | Value |\n| --- | ---: |\n\
             | Decode steps | {} |\n\
             | Mean batch size | {:.2} |\n\
             | Aggregate decode throughput | {:.2} tok/s |\n\
             | Decode tokens | {} in {:.2} ms |\n\
             | Prompt tokens | {} in {:.2} ms |\n\
             | Engine wall time | {:.2} s |\n",
            bm.steps,
            bm.mean_batch_size,
            bm.aggregate_tokens_per_s,
            bm.decode_tokens,
            bm.decode_ms,
            bm.prompt_tokens,
            bm.prompt_ms,
            bm.wall_ms / 1000.0,
        );
    }
    let d = &r.deltas;
    let stages = |x: &ScenarioAgent| {
        format!(
            "{:.2} / {:.2} / {:.2}",
            x.workflow.ingest_s, x.workflow.analysis_s, x.workflow.report_s
        )
    };
    let link = |x: &ScenarioAgent| format!("[{f}]({f})", f = x.report_file);
    let _ = write!(
        s,
        "\n## Agents\n\n| | A: {} | B: {} | Δ (B − A) |\n| --- | ---: | ---: | ---: |\n\
         | Persona | {} | {} | |\n\
         | Throughput (tok/s) | {:.2} | {:.2} | {} |\n\
         | TTFT (ms) | {:.2} | {:.2} | {} |\n\
         | Duration (s) | {:.2} | {:.2} | {} |\n\
         | Tokens generated | {} | {} | {} |\n\
         | Stages (s): ingest / analysis / report | {} | {} | |\n\
         | Report | {} | {} | |\n\n\
         Throughput and TTFT are each agent's Metrics block (its two calls together); \
         duration is its workflow time, from ingestion to the end of its report call.\n",
        a.label,
        b.label,
        a.name,
        b.name,
        a.eval_tokens_per_s,
        b.eval_tokens_per_s,
        d.eval_tokens_per_s.show(2),
        a.ttft_ms,
        b.ttft_ms,
        d.ttft_ms.show(2),
        a.duration_s,
        b.duration_s,
        d.duration_s.show(2),
        a.generated_tokens,
        b.generated_tokens,
        d.generated_tokens.show(0),
        stages(a),
        stages(b),
        link(a),
        link(b),
    );
    s.push_str("\n## Configurations\n\n");
    for x in [a, b] {
        let source = if x.baseline {
            "the engine's default options".to_string()
        } else {
            format!(
                "the persona's options; overrides: {}",
                overrides_text(&x.overrides)
            )
        };
        let _ = writeln!(
            s,
            "- **{}: {}** ({source}): {}",
            x.role, x.label, x.configuration
        );
    }
    if r.option_differences.is_empty() {
        s.push_str("\nBoth agents ran with the same options.\n");
    } else {
        s.push_str("\n| Option | A | B |\n| --- | --- | --- |\n");
        for o in &r.option_differences {
            let _ = writeln!(s, "| {} | {} | {} |", o.option, o.a, o.b);
        }
    }
    s
}

/// The scenario section appended to `summary.md`.
pub fn render_summary_section(sum: &ScenarioSummary, runs: &[(usize, &ScenarioRun)]) -> String {
    let mut s = format!(
        "\n## Scenario: {} ({})\n\n| Metric | Mean | Stddev | CV | Min | Max |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |\n",
        sum.scenario.key(),
        sum.concurrency.key()
    );
    stat_row(
        &mut s,
        "Concurrent wall time (s)",
        &sum.concurrent_wall_s,
        2,
    );
    stat_row(
        &mut s,
        "Sequential estimate (s)",
        &sum.sequential_estimate_s,
        2,
    );
    stat_row(&mut s, "Speedup (x)", &sum.speedup, 2);
    stat_row(&mut s, "Efficiency (speedup / 2)", &sum.efficiency, 3);
    if let Some(st) = &sum.mean_batch_size {
        stat_row(&mut s, "Mean batch size", st, 2);
    }
    if let Some(st) = &sum.aggregate_tokens_per_s {
        stat_row(&mut s, "Aggregate decode throughput (tok/s)", st, 2);
    }
    match sum.contention_runs {
        Some(k) => {
            let _ = writeln!(
                s,
                "\nContention detected (speedup < {CONTENTION_SPEEDUP}) in {k} of {} run(s).",
                sum.speedup.n
            );
        }
        None => s.push_str("\nContention: not applicable (the agents ran one after the other).\n"),
    }
    let _ = writeln!(s, "\n{SPEEDUP_NOTE}");
    s.push_str(
        "\n| Run | Wall (s) | Sequential estimate (s) | Speedup | Efficiency | Contention | Combined report |\n\
         | ---: | ---: | ---: | ---: | ---: | --- | --- |\n",
    );
    for (n, r) in runs {
        let t = &r.timing;
        let path = format!("{}/{}", super::output::run_dir_name(*n), r.combined_report);
        let contention = match t.contention_detected {
            Some(true) => "yes",
            Some(false) => "no",
            None => "n/a",
        };
        let _ = writeln!(
            s,
            "| {n} | {:.2} | {:.2} | {:.2}x | {:.1}% | {contention} | [{path}]({path}) |",
            t.concurrent_wall_s,
            t.sequential_estimate_s,
            t.speedup,
            t.efficiency * 100.0
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::Analysis;
    use crate::report::metrics::MetricsBlock;
    use crate::report::numcheck::NumberCheck;

    fn agent_metrics(
        agent: &str,
        label: &str,
        tps: f64,
        ttft: f64,
        tokens: usize,
        secs: f64,
    ) -> AgentMetrics {
        AgentMetrics {
            agent: agent.into(),
            name: format!("{agent}-persona"),
            label: label.into(),
            report_file: format!("{agent}_report.md"),
            files_analyzed: 3,
            workflow: StageTimes {
                ingest_s: 0.5,
                analysis_s: secs / 2.0 - 0.25,
                report_s: secs / 2.0 - 0.25,
                total_s: secs,
            },
            metrics: MetricsBlock {
                eval_tokens_per_s: tps,
                ttft_ms: ttft,
                generated_tokens: tokens,
                ..Default::default()
            },
            analysis: Analysis::default(),
            number_check: NumberCheck::default(),
            calls: vec![],
        }
    }

    fn fixed_run(concurrency: Concurrency, wall: f64, batch: Option<BatchMetrics>) -> ScenarioRun {
        let base = Options::default();
        let tuned = Options {
            temperature: 0.2,
            num_ctx: 4096,
            ..Default::default()
        };
        let overrides = OptionOverrides {
            temperature: Some(0.2),
            ..Default::default()
        };
        let a = ScenarioAgent::new(
            "A",
            true,
            &base,
            &OptionOverrides::default(),
            &agent_metrics("collector", "Baseline Collector", 40.0, 200.0, 100, 10.0),
            0,
        );
        let b = ScenarioAgent::new(
            "B",
            false,
            &tuned,
            &overrides,
            &agent_metrics("insight", "Chimera Insight", 30.0, 250.0, 120, 6.0),
            0,
        );
        ScenarioRun::new(
            Scenario::BaselineVsChimera,
            concurrency,
            1,
            2,
            wall,
            [a, b],
            batch,
        )
    }

    #[test]
    fn speedup_efficiency_and_contention() {
        let t = Timing::new(8.0, [10.0, 6.0], Concurrency::Batched);
        assert_eq!(t.sequential_estimate_s, 16.0);
        assert_eq!(t.speedup, 2.0);
        assert_eq!(t.efficiency, 1.0);
        assert_eq!(t.contention_detected, Some(false));

        let t = Timing::new(12.0, [10.0, 6.0], Concurrency::Threads);
        assert!((t.speedup - 16.0 / 12.0).abs() < 1e-12);
        assert!((t.efficiency - 16.0 / 24.0).abs() < 1e-12);
        assert_eq!(t.contention_detected, Some(true));

        // The threshold itself is not contention: only below 1.5.
        assert_eq!(
            Timing::new(10.0, [9.0, 6.0], Concurrency::Batched).contention_detected,
            Some(false)
        );
        assert_eq!(
            Timing::new(10.0, [9.0, 5.99], Concurrency::Batched).contention_detected,
            Some(true)
        );

        // One after the other: contention does not apply.
        let t = Timing::new(16.5, [10.0, 6.0], Concurrency::Sequential);
        assert_eq!(t.contention_detected, None);
        assert!(t.speedup < 1.0);

        assert_eq!(
            Timing::new(0.0, [1.0, 1.0], Concurrency::Batched).speedup,
            0.0
        );
    }

    #[test]
    fn deltas_and_differences() {
        assert_eq!(
            Delta::of(40.0, 30.0),
            Delta {
                abs: -10.0,
                rel: Some(-0.25)
            }
        );
        assert_eq!(
            Delta::of(0.0, 3.0),
            Delta {
                abs: 3.0,
                rel: None
            }
        );
        assert_eq!(Delta::of(40.0, 30.0).show(2), "-10.00 (-25.0%)");
        assert_eq!(Delta::of(100.0, 120.0).show(0), "+20 (+20.0%)");

        let r = fixed_run(Concurrency::Batched, 8.0, None);
        assert_eq!(
            r.deltas.duration_s,
            Delta {
                abs: -4.0,
                rel: Some(-0.4)
            }
        );
        assert_eq!(r.deltas.generated_tokens.abs, 20.0);
        let keys: Vec<&str> = r
            .option_differences
            .iter()
            .map(|d| d.option.as_str())
            .collect();
        assert_eq!(keys, ["temperature", "num_ctx"]);
        assert_eq!(r.option_differences[1].a, serde_json::json!(2048));
        assert_eq!(r.option_differences[1].b, serde_json::json!(4096));
        assert!(option_differences(&Options::default(), &Options::default()).is_empty());
    }

    #[test]
    fn combined_report_layout() {
        let batch = BatchMetrics {
            steps: 130,
            decode_tokens: 216,
            decode_ms: 4000.0,
            aggregate_tokens_per_s: 54.0,
            mean_batch_size: 216.0 / 130.0,
            prompt_tokens: 5000,
            prompt_ms: 3000.0,
            wall_ms: 7900.0,
        };
        let r = fixed_run(Concurrency::Batched, 8.0, Some(batch));
        let md = render_combined(&r, 1, "2025-01-02", "gemma3-270m-q4_k_m");
        let want = [
            "# Multi-Agent Report: baseline_vs_chimera\n\n**Date:** 2025-01-02\n**Model:** gemma3-270m-q4_k_m\n",
            "**Scenario:** baseline_vs_chimera (the baseline collector with default options against the Chimera insight agent): A = Baseline Collector, B = Chimera Insight\n",
            "**Concurrency:** batched (one engine (2 threads) decoding both agents' sequences in shared forward passes)\n**Run:** 1\n",
            "## Concurrency\n",
            "| Concurrent wall time | 8.00 s |\n",
            "| Sequential estimate (sum of the agents' durations) | 16.00 s |\n",
            "| Speedup (sequential estimate / wall time) | 2.00x |\n",
            "| Efficiency (speedup / 2) | 100.0% |\n",
            "| Contention detected (speedup < 1.5) | no |\n",
            "--concurrency sequential",
            "## Batch\n",
            "| Decode steps | 130 |\n| Mean batch size | 1.66 |\n| Aggregate decode throughput | 54.00 tok/s |\n",
            "| Prompt tokens | 5000 in 3000.00 ms |\n| Engine wall time | 7.90 s |\n",
            "## Agents\n\n| | A: Baseline Collector | B: Chimera Insight | Δ (B − A) |\n",
            "| Persona | collector-persona | insight-persona | |\n",
            "| Throughput (tok/s) | 40.00 | 30.00 | -10.00 (-25.0%) |\n",
            "| TTFT (ms) | 200.00 | 250.00 | +50.00 (+25.0%) |\n",
            "| Duration (s) | 10.00 | 6.00 | -4.00 (-40.0%) |\n",
            "| Tokens generated | 100 | 120 | +20 (+20.0%) |\n",
            "| Stages (s): ingest / analysis / report | 0.50 / 4.75 / 4.75 | 0.50 / 2.75 / 2.75 | |\n",
            "| Report | [collector_report.md](collector_report.md) | [insight_report.md](insight_report.md) | |\n",
            "## Configurations\n\n",
            "- **A: Baseline Collector** (the engine's default options): num_gpu=0, num_ctx=2048, temp=0.8, top_p=0.9, top_k=40, repeat_penalty=1.1\n",
            "- **B: Chimera Insight** (the persona's options; overrides: temperature=0.2): num_gpu=0, num_ctx=4096, temp=0.2,",
            "| Option | A | B |\n| --- | --- | --- |\n| temperature | 0.8 | 0.2 |\n| num_ctx | 2048 | 4096 |\n",
        ];
        let mut at = 0;
        for w in want {
            match md[at..].find(w) {
                Some(p) => at += p + w.len(),
                None => panic!("missing or out of order: {w:?}\n---\n{md}"),
            }
        }

        // Sequential: no batch section, contention not applicable.
        let r = fixed_run(Concurrency::Sequential, 16.5, None);
        let md = render_combined(&r, 2, "d", "m");
        assert!(!md.contains("## Batch"));
        assert!(md.contains("| Contention detected (speedup < 1.5) | not applicable (the agents ran one after the other) |\n"));
        assert!(md.contains(
            "**Concurrency:** sequential (one engine (2 threads), agent A then agent B)\n"
        ));
        assert!(md.contains("| Speedup (sequential estimate / wall time) | 0.97x |\n"));
    }

    #[test]
    fn metrics_and_summary_json() {
        let r = fixed_run(Concurrency::Threads, 12.0, None);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["scenario"], "baseline_vs_chimera");
        assert_eq!(v["concurrency"], "threads");
        assert_eq!(v["combined_report"], "combined_report.md");
        assert_eq!(v["timing"]["contention_detected"], true);
        assert_eq!(
            v["agents"][1]["overrides"],
            serde_json::json!({"temperature": 0.2f32})
        );
        assert_eq!(v["batch"], Value::Null);

        let runs = [
            fixed_run(
                Concurrency::Batched,
                8.0,
                Some(BatchMetrics {
                    mean_batch_size: 1.5,
                    aggregate_tokens_per_s: 50.0,
                    ..Default::default()
                }),
            ),
            fixed_run(
                Concurrency::Batched,
                12.0,
                Some(BatchMetrics {
                    mean_batch_size: 2.0,
                    aggregate_tokens_per_s: 60.0,
                    ..Default::default()
                }),
            ),
        ];
        let s = ScenarioSummary::of(Scenario::BaselineVsChimera, Concurrency::Batched, &runs);
        assert_eq!(s.concurrent_wall_s.values, [8.0, 12.0]);
        assert_eq!(s.sequential_estimate_s.mean, 16.0);
        assert!((s.speedup.mean - (2.0 + 16.0 / 12.0) / 2.0).abs() < 1e-12);
        assert_eq!(s.contention_runs, Some(1));
        assert_eq!(s.mean_batch_size.as_ref().unwrap().mean, 1.75);
        assert_eq!(
            s.aggregate_tokens_per_s.as_ref().unwrap().values,
            [50.0, 60.0]
        );

        let numbered: Vec<(usize, &ScenarioRun)> =
            runs.iter().enumerate().map(|(i, r)| (i + 1, r)).collect();
        let md = render_summary_section(&s, &numbered);
        assert!(
            md.starts_with("\n## Scenario: baseline_vs_chimera (batched)\n"),
            "{md}"
        );
        assert!(
            md.contains("| Concurrent wall time (s) | 10.00 | 2.83 | 28.28% | 8.00 | 12.00 |\n"),
            "{md}"
        );
        assert!(md.contains("| Mean batch size | 1.75 |"), "{md}");
        assert!(
            md.contains("Contention detected (speedup < 1.5) in 1 of 2 run(s).\n"),
            "{md}"
        );
        assert!(md.contains("| 2 | 12.00 | 16.00 | 1.33x | 66.7% | yes | [run_2/combined_report.md](run_2/combined_report.md) |\n"), "{md}");

        let seq = [fixed_run(Concurrency::Sequential, 16.5, None)];
        let s = ScenarioSummary::of(Scenario::BaselineVsChimera, Concurrency::Sequential, &seq);
        assert_eq!(
            (s.contention_runs, s.mean_batch_size.is_none()),
            (None, true)
        );
        let md = render_summary_section(&s, &[(1, &seq[0])]);
        assert!(md.contains("Contention: not applicable"));
        assert!(md.contains("| n/a |"));
    }
}
