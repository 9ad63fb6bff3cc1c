//! What `metrics.json` holds, and the Metrics block of an agent report.
//!
//! Every call keeps the engine's [`Metrics`] whole, under the names `chimera
//! generate --format json` prints. The agent-level [`MetricsBlock`] combines
//! an agent's two calls (analysis and report) into the figures the report's
//! Metrics section shows, using the same names:
//!
//! | field                 | combination over the calls                  |
//! |-----------------------|---------------------------------------------|
//! | `eval_tokens_per_s`   | sum of `eval_tokens` / sum of `eval_ms`      |
//! | `ttft_ms`             | mean of the calls' `ttft_ms`                 |
//! | `total_ms`            | sum (generation time, not the workflow time) |
//! | `generated_tokens`    | sum                                          |
//! | `eval_tokens`         | sum                                          |
//! | `prompt_tokens`       | sum                                          |
//! | `prompt_eval_ms`      | sum                                          |
//! | `prompt_tokens_per_s` | sum of `prompt_tokens` / sum of `prompt_eval_ms` |
//! | `eval_ms`             | sum                                          |
//! | `load_ms`             | the engine's load time, once (it loads once) |

use serde::Serialize;

use super::numcheck::NumberCheck;
use crate::agent::{Analysis, StageTimes};
use crate::engine::metrics::rate;
use crate::engine::{Metrics, Options};

/// The Metrics section of one agent report: its calls combined.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetricsBlock {
    pub eval_tokens_per_s: f64,
    pub ttft_ms: f64,
    pub total_ms: f64,
    pub generated_tokens: usize,
    pub eval_tokens: usize,
    pub prompt_tokens: usize,
    pub prompt_eval_ms: f64,
    pub prompt_tokens_per_s: f64,
    pub eval_ms: f64,
    pub load_ms: f64,
}

impl MetricsBlock {
    /// Combines calls as the module docs describe (all zeros for none).
    pub fn combine<'a>(calls: impl IntoIterator<Item = &'a Metrics>) -> Self {
        let mut b = Self::default();
        let mut n = 0usize;
        for m in calls {
            n += 1;
            b.ttft_ms += m.ttft_ms;
            b.total_ms += m.total_ms;
            b.generated_tokens += m.generated_tokens;
            b.eval_tokens += m.eval_tokens;
            b.prompt_tokens += m.prompt_tokens;
            b.prompt_eval_ms += m.prompt_eval_ms;
            b.eval_ms += m.eval_ms;
            b.load_ms = b.load_ms.max(m.load_ms);
        }
        if n > 0 {
            b.ttft_ms /= n as f64;
        }
        b.eval_tokens_per_s = rate(b.eval_tokens, b.eval_ms);
        b.prompt_tokens_per_s = rate(b.prompt_tokens, b.prompt_eval_ms);
        b
    }
}

/// One engine call of an agent, as `metrics.json` keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    /// `analysis` or `report`.
    pub stage: String,
    /// Every option in force (the seed drawn included).
    pub options: Options,
    pub metrics: Metrics,
    /// The generated token ids (their count is `metrics.generated_tokens`).
    pub token_ids: Vec<u32>,
    pub text: String,
}

/// One agent in one run.
#[derive(Debug, Clone, Serialize)]
pub struct AgentMetrics {
    /// `collector` or `insight`.
    pub agent: String,
    pub name: String,
    pub label: String,
    /// The report file in the same run folder.
    pub report_file: String,
    pub files_analyzed: usize,
    /// Wall-clock seconds per workflow stage.
    pub workflow: StageTimes,
    /// The report's Metrics block.
    pub metrics: MetricsBlock,
    /// What was parsed from the analysis call.
    pub analysis: Analysis,
    pub number_check: NumberCheck,
    pub calls: Vec<CallRecord>,
}

/// `run_<n>/metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunMetrics {
    pub run: usize,
    pub model: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub input: String,
    pub agents: Vec<AgentMetrics>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combining_calls() {
        let a = Metrics {
            load_ms: 500.0,
            ttft_ms: 100.0,
            prompt_tokens: 1000,
            prompt_eval_ms: 2000.0,
            eval_tokens: 99,
            eval_ms: 2000.0,
            generated_tokens: 100,
            total_ms: 4100.0,
            ..Default::default()
        };
        let b = Metrics {
            load_ms: 500.0,
            ttft_ms: 300.0,
            prompt_tokens: 1500,
            prompt_eval_ms: 3000.0,
            eval_tokens: 201,
            eval_ms: 4000.0,
            generated_tokens: 202,
            total_ms: 7300.0,
            ..Default::default()
        };
        let m = MetricsBlock::combine([&a, &b]);
        assert_eq!(m.ttft_ms, 200.0);
        assert_eq!(m.total_ms, 11400.0);
        assert_eq!(
            (m.generated_tokens, m.eval_tokens, m.prompt_tokens),
            (302, 300, 2500)
        );
        assert_eq!(m.eval_tokens_per_s, 50.0);
        assert_eq!(m.prompt_tokens_per_s, 500.0);
        assert_eq!(
            (m.eval_ms, m.prompt_eval_ms, m.load_ms),
            (6000.0, 5000.0, 500.0)
        );
        assert_eq!(MetricsBlock::combine([]), MetricsBlock::default());
    }
}
