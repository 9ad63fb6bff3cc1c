//! `chimera compare RUN_A RUN_B`: the baseline-versus-chimera comparison of
//! two finished report folders, from their `summary.json` (the per-run
//! values it keeps, in the order of its `run_dirs`).
//!
//! Per agent present in both: throughput (`eval_tokens_per_s`), TTFT
//! (`ttft_ms`), prompt rate, total duration and tokens generated, each
//! side's mean, sample stddev and CV; the delta B − A, its standard error
//! `sqrt(sA²/nA + sB²/nB)`, the delta relative to A and the ratio B / A;
//! then a run-by-run table of throughput and TTFT. A is the baseline.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::report::output::SUMMARY_JSON;
use crate::report::stats::Stat;

/// One agent of one side.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AgentSide {
    pub agent: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub label: String,
    pub eval_tokens_per_s: Stat,
    pub ttft_ms: Stat,
    pub prompt_tokens_per_s: Stat,
    pub total_ms: Stat,
    pub generated_tokens: Stat,
}

/// One finished report folder.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Side {
    #[serde(skip_deserializing)]
    pub dir: PathBuf,
    pub model: String,
    #[serde(default)]
    pub input: String,
    #[serde(default)]
    pub started_at: String,
    #[serde(default)]
    pub run_dirs: Vec<String>,
    pub agents: Vec<AgentSide>,
}

impl Side {
    pub fn load(dir: &Path) -> Result<Self> {
        anyhow::ensure!(dir.is_dir(), "run folder {} not found", dir.display());
        let p = dir.join(SUMMARY_JSON);
        anyhow::ensure!(
            p.is_file(),
            "{} has no {SUMMARY_JSON}: not a finished chimera report folder",
            dir.display()
        );
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        let mut side: Side = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a chimera report summary: {e}", p.display()))?;
        side.dir = dir.to_path_buf();
        Ok(side)
    }
}

/// One figure compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta {
    pub metric: String,
    pub a: Stat,
    pub b: Stat,
    /// `b.mean - a.mean`.
    pub delta: f64,
    /// Standard error of the delta: `sqrt(sA²/nA + sB²/nB)`.
    pub delta_se: f64,
    /// `delta / a.mean` as a fraction (0 when `a.mean` is 0).
    pub delta_rel: f64,
    /// `b.mean / a.mean` (0 when `a.mean` is 0).
    pub ratio: f64,
}

impl Delta {
    pub fn of(metric: &str, a: &Stat, b: &Stat) -> Self {
        let se = |s: &Stat| {
            if s.n > 0 {
                s.stddev * s.stddev / s.n as f64
            } else {
                0.0
            }
        };
        let delta = b.mean - a.mean;
        let (rel, ratio) = if a.mean != 0.0 {
            (delta / a.mean, b.mean / a.mean)
        } else {
            (0.0, 0.0)
        };
        Self {
            metric: metric.into(),
            a: a.clone(),
            b: b.clone(),
            delta,
            delta_se: (se(a) + se(b)).sqrt(),
            delta_rel: rel,
            ratio,
        }
    }
}

/// One agent compared.
#[derive(Debug, Clone, Serialize)]
pub struct AgentComparison {
    pub agent: String,
    pub label: String,
    pub deltas: Vec<Delta>,
    /// `(run, a throughput, b throughput, a ttft, b ttft)` by position.
    pub runs: Vec<RunRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    pub run: usize,
    pub a_run_dir: Option<String>,
    pub b_run_dir: Option<String>,
    pub a_eval_tokens_per_s: Option<f64>,
    pub b_eval_tokens_per_s: Option<f64>,
    pub a_ttft_ms: Option<f64>,
    pub b_ttft_ms: Option<f64>,
}

/// `comparison.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub a: SideMeta,
    pub b: SideMeta,
    pub statistics: String,
    pub agents: Vec<AgentComparison>,
    /// Agents found on one side only.
    pub unmatched: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SideMeta {
    pub dir: String,
    pub model: String,
    pub input: String,
    pub started_at: String,
    pub runs: usize,
}

fn meta(s: &Side) -> SideMeta {
    SideMeta {
        dir: s.dir.display().to_string(),
        model: s.model.clone(),
        input: s.input.clone(),
        started_at: s.started_at.clone(),
        runs: s.run_dirs.len(),
    }
}

/// Compares `b` against the baseline `a`.
pub fn compare(a: &Side, b: &Side) -> Comparison {
    let mut agents = Vec::new();
    let mut unmatched = Vec::new();
    for x in &a.agents {
        let Some(y) = b.agents.iter().find(|y| y.agent == x.agent) else {
            unmatched.push(format!("{} (A only)", x.agent));
            continue;
        };
        let deltas = vec![
            Delta::of(
                "Throughput (tok/s)",
                &x.eval_tokens_per_s,
                &y.eval_tokens_per_s,
            ),
            Delta::of("TTFT (ms)", &x.ttft_ms, &y.ttft_ms),
            Delta::of(
                "Prompt eval rate (tok/s)",
                &x.prompt_tokens_per_s,
                &y.prompt_tokens_per_s,
            ),
            Delta::of("Total duration (ms)", &x.total_ms, &y.total_ms),
            Delta::of("Tokens generated", &x.generated_tokens, &y.generated_tokens),
        ];
        let n = x.eval_tokens_per_s.n.max(y.eval_tokens_per_s.n);
        let runs = (0..n)
            .map(|i| RunRow {
                run: i + 1,
                a_run_dir: a.run_dirs.get(i).cloned(),
                b_run_dir: b.run_dirs.get(i).cloned(),
                a_eval_tokens_per_s: x.eval_tokens_per_s.values.get(i).copied(),
                b_eval_tokens_per_s: y.eval_tokens_per_s.values.get(i).copied(),
                a_ttft_ms: x.ttft_ms.values.get(i).copied(),
                b_ttft_ms: y.ttft_ms.values.get(i).copied(),
            })
            .collect();
        agents.push(AgentComparison {
            agent: x.agent.clone(),
            label: if y.label.is_empty() {
                x.label.clone()
            } else {
                y.label.clone()
            },
            deltas,
            runs,
        });
    }
    for y in &b.agents {
        if !a.agents.iter().any(|x| x.agent == y.agent) {
            unmatched.push(format!("{} (B only)", y.agent));
        }
    }
    Comparison {
        a: meta(a),
        b: meta(b),
        statistics: "per side: mean, sample stddev (n - 1), cv = stddev / mean; delta = B - A; \
                     se = sqrt(sA^2/nA + sB^2/nB); delta % = delta / A mean; ratio = B mean / A mean"
            .into(),
        agents,
        unmatched,
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into())
}

/// `comparison.md`.
pub fn render_markdown(c: &Comparison) -> String {
    let mut s = String::from("# chimera compare: baseline (A) vs chimera (B)\n\n");
    for (k, m) in [("A (baseline)", &c.a), ("B", &c.b)] {
        let _ = writeln!(
            s,
            "- {k}: {} — model {}, {} run(s), started {}",
            m.dir, m.model, m.runs, m.started_at
        );
    }
    s.push_str(
        "\nEach side: mean, sample stddev and CV (stddev / mean) over its counted runs. \
         Δ = B − A; ± is the standard error of Δ, √(sA²/nA + sB²/nB); Δ % is relative to A; \
         B / A is the ratio of the means (above 1: B is higher — better for throughput, worse \
         for TTFT).\n",
    );
    for a in &c.agents {
        let _ = write!(
            s,
            "\n## {} ({})\n\n| Metric | A mean | A stddev | A CV | B mean | B stddev | B CV | Δ (B − A) | ± | Δ % | B / A |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
            a.label, a.agent
        );
        for d in &a.deltas {
            let _ = writeln!(
                s,
                "| {} | {:.2} | {:.2} | {:.2}% | {:.2} | {:.2} | {:.2}% | {:+.2} | {:.2} | {:+.2}% | {:.3} |",
                d.metric,
                d.a.mean,
                d.a.stddev,
                d.a.cv * 100.0,
                d.b.mean,
                d.b.stddev,
                d.b.cv * 100.0,
                d.delta,
                d.delta_se,
                d.delta_rel * 100.0,
                d.ratio
            );
        }
        s.push_str(
            "\n| Run | A throughput (tok/s) | B throughput (tok/s) | A TTFT (ms) | B TTFT (ms) |\n\
             | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for r in &a.runs {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                r.run,
                opt(r.a_eval_tokens_per_s),
                opt(r.b_eval_tokens_per_s),
                opt(r.a_ttft_ms),
                opt(r.b_ttft_ms)
            );
        }
    }
    if !c.unmatched.is_empty() {
        let _ = writeln!(s, "\nAgents on one side only: {}", c.unmatched.join(", "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_statistics() {
        let a = Stat::of(&[9.0, 11.0]);
        let b = Stat::of(&[15.0, 15.0, 18.0]);
        let d = Delta::of("x", &a, &b);
        assert_eq!(d.delta, 6.0);
        assert_eq!(d.delta_rel, 0.6);
        assert_eq!(d.ratio, 1.6);
        let want = (a.stddev.powi(2) / 2.0 + b.stddev.powi(2) / 3.0).sqrt();
        assert!((d.delta_se - want).abs() < 1e-12);
        let zero = Delta::of("x", &Stat::of(&[0.0]), &b);
        assert_eq!((zero.delta_rel, zero.ratio), (0.0, 0.0));
    }
}
