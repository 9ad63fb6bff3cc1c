//! One generation in flight: its prompt, sampler, stop rules, text stream
//! and clock. The scheduler (`batch.rs`) feeds it logits; it decides the
//! next token and when it is done.

use super::generate::{Generation, Observer, StopReason};
use super::metrics::Metrics;
use super::options::Options;
use super::sampler::Sampler;
use crate::model::tokenizer::TextStream;
use crate::model::Tokenizer;
use anyhow::Result;
use std::time::Instant;

/// Where a sequence is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Prompt tokens from `fed` on still need a forward pass.
    Prefill {
        fed: usize,
    },
    /// `next` was sampled and must be fed to get the following logits.
    Decode {
        next: u32,
    },
    Done(StopReason),
}

pub struct Seq<'o> {
    pub obs: Box<dyn Observer + 'o>,
    pub options: Options,
    pub prompt: Vec<u32>,
    pub phase: Phase,
    sampler: Sampler,
    history: Vec<u32>,
    tokens: Vec<u32>,
    stream: TextStream,
    text: StopScanner,
    metrics: Metrics,
    t_start: Instant,
    t_first: Option<Instant>,
    t_last: Instant,
    itl: Vec<f64>,
}

impl<'o> Seq<'o> {
    /// A sequence whose request started at `t_start` (tokenization
    /// included in its TTFT) with `prompt` already tokenized.
    pub fn new(
        obs: Box<dyn Observer + 'o>,
        options: Options,
        prompt: Vec<u32>,
        truncated: usize,
        load_ms: f64,
        t_start: Instant,
    ) -> Self {
        let metrics = Metrics {
            load_ms,
            prompt_tokens: prompt.len(),
            truncated_prompt_tokens: truncated,
            ..Default::default()
        };
        Self {
            sampler: Sampler::new(&options),
            history: prompt.clone(),
            text: StopScanner::new(options.stop.clone()),
            options,
            obs,
            prompt,
            phase: Phase::Prefill { fed: 0 },
            tokens: Vec::new(),
            stream: TextStream::default(),
            metrics,
            t_start,
            t_first: None,
            t_last: t_start,
            itl: Vec::new(),
        }
    }

    /// Adds the wall time of a prompt forward pass this sequence took part in.
    pub fn add_prompt_time(&mut self, ms: f64) {
        self.metrics.prompt_eval_ms += ms;
    }

    /// Samples the next token from `logits` and applies every stop rule;
    /// `cache_len` is how many positions the sequence holds in its cache.
    pub fn accept(&mut self, logits: &mut [f32], tok: &Tokenizer, cache_len: usize) -> Result<()> {
        self.obs.logits(logits);
        let id = self.sampler.sample(logits, &self.history);
        let now = Instant::now();
        match self.t_first {
            None => {
                self.t_first = Some(now);
                self.metrics.ttft_ms = ms_between(self.t_start, now);
            }
            Some(_) => self.itl.push(ms_between(self.t_last, now)),
        }
        self.t_last = now;
        let stop = if id == tok.eos {
            Some(StopReason::Eos)
        } else if Some(id) == tok.end_of_turn {
            Some(StopReason::EndOfTurn)
        } else {
            self.tokens.push(id);
            self.history.push(id);
            self.obs.token(self.tokens.len());
            let piece = self.stream.push(tok, id)?;
            let (emit, hit) = self.text.push(&piece);
            if !emit.is_empty() {
                self.obs.text(&emit);
            }
            if hit {
                Some(StopReason::Stop)
            } else if self
                .options
                .num_predict
                .is_some_and(|n| self.tokens.len() >= n)
            {
                Some(StopReason::NumPredict)
            } else if cache_len >= self.options.num_ctx {
                Some(StopReason::NumCtx)
            } else {
                None
            }
        };
        self.phase = match stop {
            Some(r) => Phase::Done(r),
            None => Phase::Decode { next: id },
        };
        Ok(())
    }

    /// The finished generation (call once `phase` is `Done`).
    pub fn finish(mut self, model: &str) -> Generation {
        let Phase::Done(stop_reason) = self.phase else {
            unreachable!("finish() on a running sequence")
        };
        let rest = self.text.finish();
        if !rest.is_empty() {
            self.obs.text(&rest);
        }
        let m = &mut self.metrics;
        m.generated_tokens = self.tokens.len();
        m.eval_tokens = self.tokens.len().saturating_sub(1);
        if let Some(tf) = self.t_first {
            if self.tokens.len() > 1 {
                m.eval_ms = ms_between(tf, self.t_last);
            }
        }
        m.stop_reason = stop_reason.as_str().to_string();
        m.total_ms = ms_between(self.t_start, Instant::now());
        // The stop token's gap is not a generated token's.
        self.itl.truncate(m.eval_tokens);
        m.finish(&mut self.itl);
        Generation {
            model: model.to_string(),
            prompt_token_ids: self.prompt,
            token_ids: self.tokens,
            text: self.text.into_text(),
            stop_reason,
            options: self.options,
            metrics: self.metrics,
        }
    }
}

fn ms_between(a: Instant, b: Instant) -> f64 {
    (b - a).as_secs_f64() * 1000.0
}

/// Holds back text that might be the start of a stop string, and cuts the
/// text at the first stop string found.
struct StopScanner {
    stops: Vec<String>,
    text: String,
    emitted: usize,
    done: bool,
}

impl StopScanner {
    fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            text: String::new(),
            emitted: 0,
            done: false,
        }
    }

    /// Adds a piece; returns the text safe to show and whether a stop
    /// string was completed.
    fn push(&mut self, piece: &str) -> (String, bool) {
        if self.done {
            return (String::new(), true);
        }
        self.text.push_str(piece);
        if self.stops.is_empty() {
            let out = self.text[self.emitted..].to_string();
            self.emitted = self.text.len();
            return (out, false);
        }
        let longest = self.stops.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut from = self.emitted.saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min()
        {
            self.text.truncate(at);
            self.done = true;
            let out = self.text[self.emitted.min(at)..].to_string();
            self.emitted = self.text.len();
            return (out, true);
        }
        // Keep back the longest suffix that could still grow into a stop string.
        let mut safe = self.text.len();
        for s in &self.stops {
            for k in (1..s.len()).rev() {
                if self.text.len() >= k && s.is_char_boundary(k) && self.text.ends_with(&s[..k]) {
                    safe = safe.min(self.text.len() - k);
                    break;
                }
            }
        }
        let safe = safe.max(self.emitted);
        let out = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        (out, false)
    }

    /// Text not yet shown (held back as a possible stop-string start).
    fn finish(&mut self) -> String {
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }

    fn into_text(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(stops: &[&str], pieces: &[&str]) -> (String, String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut sc = StopScanner::new(stops);
        let mut shown = String::new();
        let mut hit = false;
        for p in pieces {
            let (out, h) = sc.push(p);
            shown.push_str(&out);
            if h {
                hit = true;
                break;
            }
        }
        shown.push_str(&sc.finish());
        (shown, sc.into_text(), hit)
    }

    #[test]
    fn stop_strings_cut_the_text_even_across_pieces() {
        let (shown, text, hit) = feed(&["END"], &["hello E", "N", "D and more"]);
        assert!(hit);
        assert_eq!(shown, "hello ");
        assert_eq!(text, "hello ");
    }

    #[test]
    fn held_back_prefixes_are_released_when_they_do_not_match() {
        let (shown, text, hit) = feed(&["END"], &["a E", "x"]);
        assert!(!hit);
        assert_eq!(shown, "a Ex");
        assert_eq!(text, "a Ex");
    }

    #[test]
    fn earliest_stop_string_wins() {
        let (_, text, hit) = feed(&["zz", "b"], &["a", "bzz"]);
        assert!(hit);
        assert_eq!(text, "a");
    }
}
