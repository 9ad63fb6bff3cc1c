//! `summary.json` and `summary.md`: statistics of each agent's figures over
//! the counted runs (warmup runs are never part of them).
//!
//! Per agent, over runs: the Metrics block's throughput
//! (`eval_tokens_per_s`), `ttft_ms`, `total_ms`, `generated_tokens` and
//! `prompt_tokens_per_s`, the workflow's wall-clock seconds and the number
//! of unmatched figures; per call stage, its own throughput, TTFT and
//! prompt rate. Each is a [`Stat`]: n, mean, sample stddev, CV, min, max and
//! the values.

use std::fmt::Write as _;

use serde::Serialize;

use super::metrics::RunMetrics;
use super::stats::Stat;

/// One call stage of an agent, over runs.
#[derive(Debug, Clone, Serialize)]
pub struct CallSummary {
    pub stage: String,
    pub eval_tokens_per_s: Stat,
    pub ttft_ms: Stat,
    pub prompt_tokens_per_s: Stat,
    pub generated_tokens: Stat,
}

/// One agent, over runs.
#[derive(Debug, Clone, Serialize)]
pub struct AgentSummary {
    pub agent: String,
    pub name: String,
    pub label: String,
    pub report_file: String,
    pub eval_tokens_per_s: Stat,
    pub ttft_ms: Stat,
    pub total_ms: Stat,
    pub generated_tokens: Stat,
    pub prompt_tokens_per_s: Stat,
    pub workflow_total_s: Stat,
    pub unmatched_figures: Stat,
    pub calls: Vec<CallSummary>,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub model: String,
    pub input: String,
    /// When the report started, RFC 3339, UTC.
    pub started_at: String,
    pub runs_requested: usize,
    pub warmup_runs: usize,
    pub runs_completed: usize,
    /// Folder names of the counted runs, in order.
    pub run_dirs: Vec<String>,
    pub statistics: String,
    pub agents: Vec<AgentSummary>,
}

/// What the summary says besides the runs.
#[derive(Debug, Clone)]
pub struct SummaryMeta {
    pub model: String,
    pub input: String,
    pub started_at: String,
    pub runs_requested: usize,
    pub warmup_runs: usize,
}

/// Statistics of every agent in `runs` (agents in their first run's order).
pub fn summarize(meta: &SummaryMeta, runs: &[RunMetrics]) -> Summary {
    let mut agents = Vec::new();
    if let Some(first) = runs.first() {
        for a in &first.agents {
            let per_run: Vec<_> = runs
                .iter()
                .filter_map(|r| r.agents.iter().find(|x| x.agent == a.agent))
                .collect();
            let stat = |f: &dyn Fn(&super::metrics::AgentMetrics) -> f64| {
                Stat::of(&per_run.iter().map(|x| f(x)).collect::<Vec<_>>())
            };
            let calls = a
                .calls
                .iter()
                .map(|c| {
                    let of_stage: Vec<_> = per_run
                        .iter()
                        .filter_map(|x| x.calls.iter().find(|y| y.stage == c.stage))
                        .collect();
                    let cs = |f: &dyn Fn(&super::metrics::CallRecord) -> f64| {
                        Stat::of(&of_stage.iter().map(|x| f(x)).collect::<Vec<_>>())
                    };
                    CallSummary {
                        stage: c.stage.clone(),
                        eval_tokens_per_s: cs(&|x| x.metrics.eval_tokens_per_s),
                        ttft_ms: cs(&|x| x.metrics.ttft_ms),
                        prompt_tokens_per_s: cs(&|x| x.metrics.prompt_tokens_per_s),
                        generated_tokens: cs(&|x| x.metrics.generated_tokens as f64),
                    }
                })
                .collect();
            agents.push(AgentSummary {
                agent: a.agent.clone(),
                name: a.name.clone(),
                label: a.label.clone(),
                report_file: a.report_file.clone(),
                eval_tokens_per_s: stat(&|x| x.metrics.eval_tokens_per_s),
                ttft_ms: stat(&|x| x.metrics.ttft_ms),
                total_ms: stat(&|x| x.metrics.total_ms),
                generated_tokens: stat(&|x| x.metrics.generated_tokens as f64),
                prompt_tokens_per_s: stat(&|x| x.metrics.prompt_tokens_per_s),
                workflow_total_s: stat(&|x| x.workflow.total_s),
                unmatched_figures: stat(&|x| x.number_check.unmatched.len() as f64),
                calls,
            });
        }
    }
    Summary {
        model: meta.model.clone(),
        input: meta.input.clone(),
        started_at: meta.started_at.clone(),
        runs_requested: meta.runs_requested,
        warmup_runs: meta.warmup_runs,
        runs_completed: runs.len(),
        run_dirs: runs
            .iter()
            .map(|r| super::output::run_dir_name(r.run))
            .collect(),
        statistics: "over counted runs: mean; stddev = sample standard deviation (n - 1); \
                     cv = stddev / mean as a fraction"
            .into(),
        agents,
    }
}

/// One `| name | mean | stddev | cv | min | max |` row.
pub(crate) fn stat_row(s: &mut String, name: &str, st: &Stat, decimals: usize) {
    let _ = writeln!(
        s,
        "| {name} | {:.d$} | {:.d$} | {:.2}% | {:.d$} | {:.d$} |",
        st.mean,
        st.stddev,
        st.cv * 100.0,
        st.min,
        st.max,
        d = decimals
    );
}

/// `summary.md`.
pub fn render_markdown(sum: &Summary, runs: &[RunMetrics]) -> String {
    let mut s = String::from("# chimera report: summary\n\n");
    let warm = match sum.warmup_runs {
        0 => String::new(),
        1 => " (after 1 warmup run, not counted)".into(),
        n => format!(" (after {n} warmup runs, not counted)"),
    };
    let _ = write!(
        s,
        "- Model: {}\n- Input: {}\n- Started: {}\n- Runs: {} of {} completed{warm}\n\n\
         Statistics over the completed runs: mean, sample standard deviation, coefficient of \
         variation (stddev / mean), min and max. Throughput is `eval_tokens_per_s` of the \
         agent's two calls together; TTFT is the mean of their `ttft_ms`.\n",
        sum.model, sum.input, sum.started_at, sum.runs_completed, sum.runs_requested
    );
    for a in &sum.agents {
        let _ = write!(
            s,
            "\n## {} ({})\n\n| Metric | Mean | Stddev | CV | Min | Max |\n\
             | --- | ---: | ---: | ---: | ---: | ---: |\n",
            a.label, a.name
        );
        stat_row(&mut s, "Throughput (tok/s)", &a.eval_tokens_per_s, 2);
        stat_row(&mut s, "TTFT (ms)", &a.ttft_ms, 2);
        stat_row(&mut s, "Total Duration (ms)", &a.total_ms, 2);
        stat_row(&mut s, "Tokens Generated", &a.generated_tokens, 1);
        stat_row(
            &mut s,
            "Prompt eval rate (tok/s)",
            &a.prompt_tokens_per_s,
            2,
        );
        stat_row(&mut s, "Workflow time (s)", &a.workflow_total_s, 2);
        stat_row(&mut s, "Unmatched figures", &a.unmatched_figures, 1);
        for c in &a.calls {
            stat_row(
                &mut s,
                &format!("{} call throughput (tok/s)", capitalize(&c.stage)),
                &c.eval_tokens_per_s,
                2,
            );
            stat_row(
                &mut s,
                &format!("{} call TTFT (ms)", capitalize(&c.stage)),
                &c.ttft_ms,
                2,
            );
        }
        s.push_str(
            "\n| Run | Throughput (tok/s) | TTFT (ms) | Tokens | Workflow (s) | Unmatched figures | Report |\n\
             | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
        );
        for r in runs {
            let Some(x) = r.agents.iter().find(|x| x.agent == a.agent) else {
                continue;
            };
            let path = format!("{}/{}", super::output::run_dir_name(r.run), x.report_file);
            let _ = writeln!(
                s,
                "| {} | {:.2} | {:.2} | {} | {:.2} | {} | [{path}]({path}) |",
                r.run,
                x.metrics.eval_tokens_per_s,
                x.metrics.ttft_ms,
                x.metrics.generated_tokens,
                x.workflow.total_s,
                x.number_check.unmatched.len()
            );
        }
    }
    s
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{Analysis, StageTimes};
    use crate::engine::{Metrics, Options};
    use crate::report::metrics::{AgentMetrics, CallRecord, MetricsBlock};
    use crate::report::numcheck::NumberCheck;

    fn run(n: usize, tps: [f64; 2], ttft: [f64; 2]) -> RunMetrics {
        let calls: Vec<CallRecord> = ["analysis", "report"]
            .iter()
            .zip(tps.iter().zip(ttft))
            .map(|(stage, (&t, f))| CallRecord {
                stage: stage.to_string(),
                options: Options::default(),
                metrics: Metrics {
                    eval_tokens: 10,
                    eval_ms: 10_000.0 / t,
                    eval_tokens_per_s: t,
                    generated_tokens: 11,
                    ttft_ms: f,
                    ..Default::default()
                },
                token_ids: vec![1; 11],
                text: String::new(),
            })
            .collect();
        let metrics = MetricsBlock::combine(calls.iter().map(|c| &c.metrics));
        RunMetrics {
            run: n,
            model: "m".into(),
            started_at: "t".into(),
            input: "in".into(),
            agents: vec![AgentMetrics {
                agent: "collector".into(),
                name: "DataCollector-9000".into(),
                label: "Chimera Agent A".into(),
                report_file: "collector_report.md".into(),
                files_analyzed: 3,
                workflow: StageTimes {
                    total_s: n as f64,
                    ..Default::default()
                },
                metrics,
                analysis: Analysis::default(),
                number_check: NumberCheck::default(),
                calls,
            }],
        }
    }

    #[test]
    fn statistics_over_runs() {
        let runs = [
            run(1, [40.0, 40.0], [100.0, 300.0]),
            run(2, [20.0, 20.0], [200.0, 400.0]),
        ];
        let meta = SummaryMeta {
            model: "m".into(),
            input: "in".into(),
            started_at: "t".into(),
            runs_requested: 2,
            warmup_runs: 1,
        };
        let sum = summarize(&meta, &runs);
        assert_eq!(sum.runs_completed, 2);
        assert_eq!(sum.run_dirs, ["run_1", "run_2"]);
        let a = &sum.agents[0];
        assert_eq!(a.eval_tokens_per_s.values, [40.0, 20.0]);
        assert_eq!(a.eval_tokens_per_s.mean, 30.0);
        assert!((a.eval_tokens_per_s.stddev - 200f64.sqrt()).abs() < 1e-9);
        assert_eq!(a.ttft_ms.values, [200.0, 300.0]);
        assert_eq!(a.workflow_total_s.values, [1.0, 2.0]);
        assert_eq!(a.calls.len(), 2);
        assert_eq!(a.calls[1].stage, "report");
        assert_eq!(a.calls[1].ttft_ms.values, [300.0, 400.0]);

        let md = render_markdown(&sum, &runs);
        assert!(md.contains("- Runs: 2 of 2 completed (after 1 warmup run, not counted)\n"));
        assert!(md.contains("\n## Chimera Agent A (DataCollector-9000)\n"));
        assert!(md.contains("| Throughput (tok/s) | 30.00 | 14.14 | 47.14% | 20.00 | 40.00 |\n"));
        assert!(
            md.contains("| Report call TTFT (ms) | 350.00 | 70.71 | 20.20% | 300.00 | 400.00 |\n")
        );
        assert!(md.contains(
            "| 2 | 20.00 | 300.00 | 22 | 2.00 | 0 | [run_2/collector_report.md](run_2/collector_report.md) |\n"
        ));
        assert!(summarize(&meta, &[]).agents.is_empty());
    }
}
