//! What one generation measured, and exactly what each number times.
//!
//! All times come from `std::time::Instant` (monotonic) read inside the
//! decode loop; milliseconds as f64.

use serde::{Deserialize, Serialize};

/// Metrics of one generation call. These names are the JSON keys of
/// `generate --format json` and of the reports' `metrics.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Loading the model: opening and mapping the weights file, building the
    /// model and reading the tokenizer. The same value for every call of a
    /// loaded engine.
    pub load_ms: f64,
    /// Time to first token: from the call's start (tokenization included)
    /// until the first generated token has been sampled.
    pub ttft_ms: f64,
    /// Tokens in the prompt as fed to the model (after any truncation).
    pub prompt_tokens: usize,
    /// Forward passes over the prompt (all chunks), up to its last logits.
    pub prompt_eval_ms: f64,
    /// `prompt_tokens / prompt_eval_ms`, per second.
    pub prompt_tokens_per_s: f64,
    /// Decode steps: tokens produced by a forward pass of their own. The
    /// first generated token comes from the prompt's forward pass, so this is
    /// `generated_tokens - 1` (0 when nothing was generated).
    pub eval_tokens: usize,
    /// Time of those decode steps, each a forward pass plus sampling: from
    /// the first token sampled to the last.
    pub eval_ms: f64,
    /// `eval_tokens / eval_ms`, per second: decode speed.
    pub eval_tokens_per_s: f64,
    /// All tokens the model generated (the stop token excluded).
    pub generated_tokens: usize,
    /// Inter-token latency percentiles: gaps between consecutive sampled
    /// tokens.
    pub itl_p50_ms: f64,
    pub itl_p90_ms: f64,
    pub itl_p99_ms: f64,
    /// The whole call: start to the last token decoded to text.
    pub total_ms: f64,
    /// Peak resident memory of the process so far (VmHWM), bytes.
    pub peak_rss_bytes: u64,
    /// Why generation ended: `eos`, `end_of_turn`, `stop`, `num_predict` or
    /// `num_ctx`.
    pub stop_reason: String,
    /// Prompt tokens dropped from the front of the user text to fit num_ctx.
    pub truncated_prompt_tokens: usize,
}

impl Metrics {
    /// Fills the rates and percentiles from the raw counts and times.
    pub fn finish(&mut self, itl_ms: &mut [f64]) {
        self.prompt_tokens_per_s = rate(self.prompt_tokens, self.prompt_eval_ms);
        self.eval_tokens_per_s = rate(self.eval_tokens, self.eval_ms);
        itl_ms.sort_by(|a, b| a.total_cmp(b));
        self.itl_p50_ms = percentile(itl_ms, 50.0);
        self.itl_p90_ms = percentile(itl_ms, 90.0);
        self.itl_p99_ms = percentile(itl_ms, 99.0);
        self.peak_rss_bytes = peak_rss_bytes();
    }
}

/// Items per second, 0 when no time passed.
pub fn rate(n: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        n as f64 * 1000.0 / ms
    } else {
        0.0
    }
}

/// Nearest-rank percentile of sorted values (0 for none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Peak resident set size of this process, from `/proc/self/status`
/// (`VmHWM`), or `getrusage` where there is no procfs.
pub fn peak_rss_bytes() -> u64 {
    if let Ok(s) = std::fs::read_to_string("/proc/self/status") {
        if let Some(kb) = s
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
        {
            return kb * 1024;
        }
    }
    // SAFETY: getrusage writes into the struct we pass.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) == 0 {
            // Linux reports kilobytes (macOS bytes; close enough for a fallback).
            return u.ru_maxrss as u64 * 1024;
        }
    }
    0
}

/// Current resident set size (VmRSS), bytes.
pub fn current_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(|x| x as f64).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 90.0), 90.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn rates_follow_counts_and_times() {
        let mut m = Metrics {
            prompt_tokens: 100,
            prompt_eval_ms: 250.0,
            eval_tokens: 30,
            eval_ms: 600.0,
            ..Default::default()
        };
        m.finish(&mut [3.0, 1.0, 2.0]);
        assert_eq!(m.prompt_tokens_per_s, 400.0);
        assert_eq!(m.eval_tokens_per_s, 50.0);
        assert_eq!(m.itl_p50_ms, 2.0);
        assert!(m.peak_rss_bytes > 0);
    }
}
