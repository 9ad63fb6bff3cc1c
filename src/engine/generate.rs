//! The decode loop and its clock.

use super::metrics::Metrics;
use super::options::Options;
use super::sampler::Sampler;
use super::{Device, EngineConfig};
use crate::model::gemma3::{Batch, Runtime, Scratch};
use crate::model::tokenizer::ChatPrompt;
use crate::model::{Gemma3, KvCache, Tokenizer};
use crate::models::{ModelFiles, TokenizerFile};
use anyhow::{Context, Result};
use serde::Serialize;
use std::time::Instant;

/// What to send to the model.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// One user turn in Gemma's chat template, with an optional system text.
    Chat {
        system: Option<String>,
        user: String,
    },
    /// Text sent as is, after `<bos>`.
    Raw(String),
}

#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Prompt,
    pub options: Options,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Eos,
    EndOfTurn,
    Stop,
    NumPredict,
    NumCtx,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::EndOfTurn => "end_of_turn",
            StopReason::Stop => "stop",
            StopReason::NumPredict => "num_predict",
            StopReason::NumCtx => "num_ctx",
        }
    }
}

/// The result of one call; serialized as `generate --format json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub model: String,
    pub prompt_token_ids: Vec<u32>,
    pub token_ids: Vec<u32>,
    pub text: String,
    pub stop_reason: StopReason,
    pub options: Options,
    pub metrics: Metrics,
}

/// Receives what a generation produces as it happens.
pub trait Observer {
    /// New text, in order; concatenated it is `Generation::text`.
    fn text(&mut self, _piece: &str) {}
    /// The logits the next token is sampled from (before any penalty).
    fn logits(&mut self, _logits: &[f32]) {}
    /// A token was sampled; `n` tokens so far.
    fn token(&mut self, _n: usize) {}
    fn warning(&mut self, msg: &str) {
        eprintln!("warning: {msg}");
    }
}

/// Ignores everything but warnings.
pub struct Quiet;
impl Observer for Quiet {}

/// A model loaded in this process, with the buffers its calls reuse.
pub struct Engine {
    model: Gemma3,
    tokenizer: Tokenizer,
    rt: Runtime,
    name: String,
    load_ms: f64,
    file_bytes: u64,
    ubatch: usize,
    scratch: Option<Scratch>,
    cache: Option<KvCache>,
    logits: Vec<f32>,
}

impl Engine {
    /// Loads the weights and tokenizer; `load_ms` covers both.
    pub fn load(files: &ModelFiles, cfg: &EngineConfig) -> Result<Self> {
        let t0 = Instant::now();
        match cfg.device {
            Device::Cpu | Device::Auto => {}
            Device::Cuda(_) => anyhow::bail!(
                "--device cuda: this build has no CUDA support (rebuild with `--features cuda`)"
            ),
        }
        let model = crate::model::load(&files.weights)?;
        let tokenizer = match &files.tokenizer {
            TokenizerFile::Json(path) => Tokenizer::from_file(path)?,
            TokenizerFile::FromGguf => crate::model::gguf_tokenizer::load_path(&files.weights)?,
        };
        anyhow::ensure!(
            tokenizer.base_vocab_size() <= model.vocab_size(),
            "tokenizer {} has {} tokens but the model only {}: they do not belong together",
            files.tokenizer.display(),
            tokenizer.base_vocab_size(),
            model.vocab_size()
        );
        let file_bytes = files.weights_bytes();
        let mut e = Self::from_parts(model, tokenizer, cfg);
        e.name = files.name.clone();
        e.file_bytes = file_bytes;
        e.load_ms = t0.elapsed().as_secs_f64() * 1000.0;
        Ok(e)
    }

    /// An engine over an already built model (tests build tiny ones).
    pub fn from_parts(model: Gemma3, tokenizer: Tokenizer, cfg: &EngineConfig) -> Self {
        let threads = cfg.threads.unwrap_or_else(default_threads);
        Self {
            logits: vec![0.0; model.vocab_size()],
            model,
            tokenizer,
            rt: Runtime::new(threads),
            name: String::new(),
            load_ms: 0.0,
            file_bytes: 0,
            ubatch: cfg.ubatch.max(1),
            scratch: None,
            cache: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn load_ms(&self) -> f64 {
        self.load_ms
    }

    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    pub fn model(&self) -> &Gemma3 {
        &self.model
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn threads(&self) -> usize {
        self.rt.pool.n_threads()
    }

    pub fn isa(&self) -> crate::cpu::Isa {
        self.rt.isa
    }

    /// Makes sure buffers and cache fit `num_ctx`; allocates only when the
    /// context grows.
    fn prepare(&mut self, num_ctx: usize) {
        let cfg = self.model.config();
        let rows = self.ubatch.min(num_ctx);
        if self.scratch.as_ref().is_none_or(|s| s.max_rows() < rows) {
            self.scratch = Some(Scratch::new(
                cfg,
                self.rt.isa,
                rows,
                self.rt.pool.n_threads(),
            ));
        }
        if self
            .cache
            .as_ref()
            .is_none_or(|c| c.num_ctx() != num_ctx || c.max_chunk() < rows)
        {
            self.cache = Some(KvCache::new(cfg, num_ctx, rows));
        }
        if let Some(c) = self.cache.as_mut() {
            c.clear();
        }
    }

    /// Token ids for `prompt`, cut from the front of the user text when they
    /// would not leave `reserve` tokens of `num_ctx` free. Returns the ids
    /// and how many were dropped.
    pub fn tokenize(
        &self,
        prompt: &Prompt,
        num_ctx: usize,
        reserve: usize,
    ) -> Result<(Vec<u32>, usize)> {
        let tok = &self.tokenizer;
        let full = match prompt {
            Prompt::Chat { system, user } => ChatPrompt {
                system: system.as_deref(),
                user,
            }
            .render(),
            Prompt::Raw(text) => text.clone(),
        };
        let ids = tok.encode(&full, true)?;
        let limit = num_ctx.saturating_sub(reserve).max(1);
        if ids.len() <= limit {
            return Ok((ids, 0));
        }
        // Re-encode the parts separately so only user text is dropped; the
        // template and <bos> always survive.
        let (head, user, tail) = match prompt {
            Prompt::Chat { system, user } => {
                let cp = ChatPrompt {
                    system: system.as_deref(),
                    user,
                };
                (
                    tok.encode(&cp.head(), true)?,
                    tok.encode(user, false)?,
                    tok.encode(ChatPrompt::MODEL_PREFIX, false)?,
                )
            }
            Prompt::Raw(text) => (tok.encode("", true)?, tok.encode(text, false)?, Vec::new()),
        };
        let fixed = head.len() + tail.len();
        anyhow::ensure!(
            fixed < limit,
            "the prompt template and system text alone take {fixed} tokens, more than num_ctx {num_ctx} minus {reserve} reserved for generation allows"
        );
        let keep = limit - fixed;
        let dropped = user.len().saturating_sub(keep);
        let mut out = head;
        out.extend_from_slice(&user[dropped..]);
        out.extend_from_slice(&tail);
        Ok((out, dropped))
    }

    /// Runs `ids` through the model from an empty cache and returns the
    /// logits of every position listed in `rows` (for tests and tools).
    pub fn logits_at(
        &mut self,
        ids: &[u32],
        rows: &[usize],
        num_ctx: usize,
    ) -> Result<Vec<Vec<f32>>> {
        anyhow::ensure!(
            ids.len() <= num_ctx,
            "{} tokens do not fit num_ctx {num_ctx}",
            ids.len()
        );
        self.prepare(num_ctx);
        let vocab = self.model.vocab_size();
        let mut out = Vec::new();
        let scratch = self.scratch.as_mut().expect("prepared");
        let caches = std::slice::from_mut(self.cache.as_mut().expect("prepared"));
        let step = scratch.max_rows();
        for (c, chunk) in ids.chunks(step).enumerate() {
            let base = c * step;
            let pos: Vec<usize> = (base..base + chunk.len()).collect();
            let want: Vec<usize> = rows
                .iter()
                .filter(|&&r| r >= base && r < base + chunk.len())
                .map(|r| r - base)
                .collect();
            let mut logits = vec![0f32; want.len() * vocab];
            let b = Batch {
                tokens: chunk,
                positions: &pos,
                seqs: &vec![0; chunk.len()],
                logits_rows: &want,
            };
            self.model
                .forward(&self.rt, scratch, &b, caches, &mut logits)?;
            out.extend(logits.chunks_exact(vocab).map(|l| l.to_vec()));
        }
        Ok(out)
    }

    /// Generates a completion for `req`, reporting text as it is produced.
    pub fn generate(&mut self, req: &Request, obs: &mut dyn Observer) -> Result<Generation> {
        let t0 = Instant::now();
        let mut options = req.options.clone();
        options.validate(self.model.config().max_position_embeddings)?;
        if options.seed.is_none() {
            options.seed = Some(rand::random::<u32>() as u64);
        }
        let num_ctx = options.num_ctx;
        let (prompt_ids, truncated) =
            self.tokenize(&req.prompt, num_ctx, options.generation_reserve())?;
        if truncated > 0 {
            obs.warning(&format!(
                "prompt truncated: dropped {truncated} tokens from the front of the user text to fit num_ctx {num_ctx}"
            ));
        }
        self.prepare(num_ctx);
        let vocab = self.model.vocab_size();
        let mut m = Metrics {
            load_ms: self.load_ms,
            prompt_tokens: prompt_ids.len(),
            truncated_prompt_tokens: truncated,
            ..Default::default()
        };

        // Prompt evaluation, in chunks of the scratch size.
        let t_prompt = Instant::now();
        {
            let scratch = self.scratch.as_mut().expect("prepared");
            let caches = std::slice::from_mut(self.cache.as_mut().expect("prepared"));
            let step = scratch.max_rows();
            let n_chunks = prompt_ids.len().div_ceil(step);
            for (c, chunk) in prompt_ids.chunks(step).enumerate() {
                let base = c * step;
                let pos: Vec<usize> = (base..base + chunk.len()).collect();
                let seqs = vec![0usize; chunk.len()];
                let last = [chunk.len() - 1];
                let rows: &[usize] = if c + 1 == n_chunks { &last } else { &[] };
                let b = Batch {
                    tokens: chunk,
                    positions: &pos,
                    seqs: &seqs,
                    logits_rows: rows,
                };
                self.model
                    .forward(&self.rt, scratch, &b, caches, &mut self.logits)
                    .context("prompt evaluation failed")?;
            }
        }
        m.prompt_eval_ms = ms(t_prompt);

        let mut sampler = Sampler::new(&options);
        let mut history = prompt_ids.clone();
        let mut tokens: Vec<u32> = Vec::new();
        let mut stream = self.tokenizer.stream();
        let mut text = StopScanner::new(&options.stop);
        let mut itl = Vec::new();
        let mut t_first: Option<Instant> = None;
        let mut t_last = Instant::now();
        let stop_reason = loop {
            obs.logits(&self.logits[..vocab]);
            let tok = sampler.sample(&mut self.logits[..vocab], &history);
            let now = Instant::now();
            match t_first {
                None => {
                    t_first = Some(now);
                    m.ttft_ms = (now - t0).as_secs_f64() * 1000.0;
                }
                Some(_) => itl.push((now - t_last).as_secs_f64() * 1000.0),
            }
            t_last = now;
            if tok == self.tokenizer.eos {
                break StopReason::Eos;
            }
            if Some(tok) == self.tokenizer.end_of_turn {
                break StopReason::EndOfTurn;
            }
            tokens.push(tok);
            history.push(tok);
            obs.token(tokens.len());
            let piece = stream.push(tok)?;
            let (emit, hit) = text.push(&piece);
            if !emit.is_empty() {
                obs.text(&emit);
            }
            if hit {
                break StopReason::Stop;
            }
            if options.num_predict.is_some_and(|n| tokens.len() >= n) {
                break StopReason::NumPredict;
            }
            let cache = self.cache.as_mut().expect("prepared");
            if cache.len() >= num_ctx {
                break StopReason::NumCtx;
            }
            let pos = [cache.len()];
            let b = Batch {
                tokens: &[tok],
                positions: &pos,
                seqs: &[0],
                logits_rows: &[0],
            };
            self.model
                .forward(
                    &self.rt,
                    self.scratch.as_mut().expect("prepared"),
                    &b,
                    std::slice::from_mut(cache),
                    &mut self.logits,
                )
                .context("decoding failed")?;
        };
        let rest = text.finish();
        if !rest.is_empty() {
            obs.text(&rest);
        }
        m.generated_tokens = tokens.len();
        m.eval_tokens = tokens.len().saturating_sub(1);
        if let Some(tf) = t_first {
            if tokens.len() > 1 {
                m.eval_ms = (t_last - tf).as_secs_f64() * 1000.0;
            }
        }
        m.stop_reason = stop_reason.as_str().to_string();
        m.total_ms = ms(t0);
        if itl.len() > m.eval_tokens {
            // The stop token's gap is not a generated token's.
            itl.truncate(m.eval_tokens);
        }
        m.finish(&mut itl);
        Ok(Generation {
            model: self.name.clone(),
            prompt_token_ids: prompt_ids,
            token_ids: tokens,
            text: text.into_text(),
            stop_reason,
            options,
            metrics: m,
        })
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Threads for the CPU kernels: every core this process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Holds back text that might be the start of a stop string, and cuts the
/// text at the first stop string found.
struct StopScanner<'a> {
    stops: &'a [String],
    text: String,
    emitted: usize,
    done: bool,
}

impl<'a> StopScanner<'a> {
    fn new(stops: &'a [String]) -> Self {
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
        for s in self.stops {
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
        let mut sc = StopScanner::new(&stops);
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
