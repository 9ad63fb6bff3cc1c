//! The decode loop and its clock.

use super::gpu::Offload;
use super::metrics::Metrics;
use super::options::Options;
use super::EngineConfig;
use crate::model::gemma3::{Batch, BatchKind, Runtime, Scratch};
use crate::model::gguf::GgufFile;
use crate::model::tokenizer::ChatPrompt;
use crate::model::{Gemma3, KvCache, Tokenizer};
use crate::models::{ModelFiles, TokenizerFile};
use anyhow::Result;
use serde::Serialize;
use std::sync::Arc;
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
/// Weights and tokenizer are shared: [`Engine::fork`] makes another engine
/// over the same model with its own threads and buffers.
pub struct Engine {
    model: Arc<Gemma3>,
    tokenizer: Arc<Tokenizer>,
    rt: Runtime,
    name: String,
    load_ms: f64,
    file_bytes: u64,
    ubatch: usize,
    scratch: Option<Scratch>,
    logits: Vec<f32>,
    /// Layers `0..num_gpu` on a GPU (`--device cuda`), when there is one.
    gpu: Option<Offload>,
}

impl Engine {
    /// Loads the weights and tokenizer; `load_ms` covers both.
    pub fn load(files: &ModelFiles, cfg: &EngineConfig) -> Result<Self> {
        let t0 = Instant::now();
        // Refused before any file is read.
        super::gpu::check_device(cfg.device)?;
        let (model, tokenizer) = match crate::model::hf_folder(&files.weights) {
            Some(_) => {
                let model = crate::model::load(&files.weights)?;
                let tokenizer = match &files.tokenizer {
                    TokenizerFile::Json(path) => Tokenizer::from_file(path)?,
                    TokenizerFile::FromGguf => anyhow::bail!(
                        "{} is not a GGUF file and carries no tokenizer metadata; pass --tokenizer PATH to a tokenizer.json",
                        files.weights.display()
                    ),
                };
                (model, tokenizer)
            }
            None => {
                // One read of the header serves the weights and the tokenizer.
                let file = GgufFile::open(&files.weights)?;
                let model = crate::model::load_gguf_file(&file)?;
                let tokenizer = match &files.tokenizer {
                    TokenizerFile::Json(path) => Tokenizer::from_file(path)?,
                    TokenizerFile::FromGguf => gguf_tokenizer(&file)?,
                };
                (model, tokenizer)
            }
        };
        anyhow::ensure!(
            tokenizer.base_vocab_size() <= model.vocab_size(),
            "tokenizer {} has {} tokens but the model only {}: they do not belong together",
            files.tokenizer.display(),
            tokenizer.base_vocab_size(),
            model.vocab_size()
        );
        let file_bytes = files.weights_bytes();
        let gpu = Offload::open(cfg.device, cfg.num_gpu, &files.weights, model.config())?;
        let mut e = Self::from_parts(model, tokenizer, cfg);
        e.gpu = gpu;
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
            model: Arc::new(model),
            tokenizer: Arc::new(tokenizer),
            rt: Runtime::new(threads),
            name: String::new(),
            load_ms: 0.0,
            file_bytes: 0,
            ubatch: cfg.ubatch.max(1),
            scratch: None,
            gpu: None,
        }
    }

    /// Another engine over the same weights and tokenizer, with its own
    /// `threads` threads and buffers (for generations on separate threads).
    pub fn fork(&self, threads: usize) -> Engine {
        Engine {
            logits: vec![0.0; self.model.vocab_size()],
            model: Arc::clone(&self.model),
            tokenizer: Arc::clone(&self.tokenizer),
            rt: Runtime::new(threads.max(1)),
            name: self.name.clone(),
            load_ms: self.load_ms,
            file_bytes: self.file_bytes,
            ubatch: self.ubatch,
            scratch: None,
            // The GPU's caches belong to one engine; forks run on the CPU.
            gpu: None,
        }
    }

    pub fn ubatch(&self) -> usize {
        self.ubatch
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

    /// Layers on the GPU (Ollama's `num_gpu`); 0 on the CPU.
    pub fn num_gpu(&self) -> usize {
        self.gpu.as_ref().map_or(0, Offload::num_gpu)
    }

    /// "cpu", or the GPU the first `num_gpu` layers run on.
    pub fn device(&self) -> String {
        match &self.gpu {
            Some(g) => g.describe().to_string(),
            None => "cpu".to_string(),
        }
    }

    /// Makes sure the forward buffers fit prompt chunks for `num_ctx` and
    /// `rows` rows of logits; allocates only when they grow.
    pub(crate) fn ensure_buffers(&mut self, num_ctx: usize, rows: usize) {
        let cfg = self.model.config();
        let chunk = self.ubatch.min(num_ctx).max(rows);
        if self.scratch.as_ref().is_none_or(|s| s.max_rows() < chunk) {
            self.scratch = Some(Scratch::new(
                cfg,
                self.rt.isa,
                chunk,
                self.rt.pool.n_threads(),
            ));
        }
        let need = rows * self.model.vocab_size();
        if self.logits.len() < need {
            self.logits.resize(need, 0.0);
        }
    }

    /// One forward pass of `b` over `caches`; its logits land in the
    /// engine's logits buffer.
    pub(crate) fn forward(&mut self, b: &Batch, caches: &mut [KvCache]) -> Result<()> {
        self.ensure_buffers(b.len(), b.logits_rows.len());
        let scratch = self.scratch.as_mut().expect("ensured");
        match &mut self.gpu {
            Some(gpu) => gpu.forward(&self.model, &self.rt, scratch, b, caches, &mut self.logits),
            None => self
                .model
                .forward(&self.rt, scratch, b, caches, &mut self.logits),
        }
    }

    /// The tokenizer and the first `rows` rows of logits of the last forward.
    pub(crate) fn tokenizer_and_logits(&mut self, rows: usize) -> (&Tokenizer, &mut [f32]) {
        let n = rows * self.model.vocab_size();
        (&self.tokenizer, &mut self.logits[..n])
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

    /// Prompt processing as llama-bench's `pp` test times it: `n` tokens
    /// (ids spread over the vocabulary, not text) through the model from an
    /// empty cache, in batches of `ubatch`, logits for the last one only.
    /// Returns the wall time of the forward passes in milliseconds; no
    /// tokenization or sampling is included.
    pub fn time_prompt(&mut self, n: usize) -> Result<f64> {
        anyhow::ensure!(n > 0, "the prompt must have at least one token");
        let tokens = bench_tokens(n, self.model.vocab_size());
        let mut cache = [KvCache::new(self.model.config(), n, self.ubatch.min(n))];
        self.ensure_buffers(n, 1);
        let t0 = Instant::now();
        self.feed(&tokens, &mut cache, &[n - 1])?;
        Ok(ms(t0))
    }

    /// Generation as llama-bench's `tg` test times it: `n` single-token
    /// forward passes (with logits) from an empty cache. Returns their wall
    /// time in milliseconds; no sampling is included.
    pub fn time_decode(&mut self, n: usize) -> Result<f64> {
        anyhow::ensure!(n > 0, "generate at least one token");
        let tokens = bench_tokens(n, self.model.vocab_size());
        let mut cache = [KvCache::new(self.model.config(), n, 1)];
        self.ensure_buffers(n, 1);
        let t0 = Instant::now();
        for (p, tok) in tokens.iter().enumerate() {
            let b = Batch {
                tokens: std::slice::from_ref(tok),
                positions: &[p],
                seqs: &[0],
                logits_rows: &[0],
                kind: BatchKind::Decode,
            };
            self.forward(&b, &mut cache)?;
        }
        Ok(ms(t0))
    }

    /// Batched generation timed like [`Engine::time_decode`]: `batch`
    /// sequences, each from an empty cache, take `n` decode steps together
    /// (one forward pass per step over one token of each). Returns the wall
    /// time in milliseconds; aggregate throughput is `batch * n` tokens over
    /// it.
    pub fn time_decode_batch(&mut self, batch: usize, n: usize) -> Result<f64> {
        anyhow::ensure!(
            batch > 0 && n > 0,
            "need at least one sequence and one step"
        );
        let tokens = bench_tokens(batch * n, self.model.vocab_size());
        let mut caches: Vec<KvCache> = (0..batch)
            .map(|_| KvCache::new(self.model.config(), n, 1))
            .collect();
        self.ensure_buffers(n, batch);
        let seqs: Vec<usize> = (0..batch).collect();
        let rows = seqs.clone();
        let t0 = Instant::now();
        for p in 0..n {
            let b = Batch {
                tokens: &tokens[p * batch..(p + 1) * batch],
                positions: &vec![p; batch],
                seqs: &seqs,
                logits_rows: &rows,
                kind: BatchKind::Decode,
            };
            self.forward(&b, &mut caches)?;
        }
        Ok(ms(t0))
    }

    /// Feeds `ids` into sequence 0 of `cache` as prompt chunks of `ubatch`,
    /// computing logits at the positions in `want` (ascending); returns them.
    fn feed(
        &mut self,
        ids: &[u32],
        cache: &mut [KvCache],
        want: &[usize],
    ) -> Result<Vec<Vec<f32>>> {
        let vocab = self.model.vocab_size();
        let step = self.ubatch.min(cache[0].num_ctx()).max(1);
        let mut out = Vec::new();
        for (c, chunk) in ids.chunks(step).enumerate() {
            let base = c * step;
            let pos: Vec<usize> = (base..base + chunk.len()).collect();
            let rows: Vec<usize> = want
                .iter()
                .filter(|&&r| r >= base && r < base + chunk.len())
                .map(|r| r - base)
                .collect();
            let b = Batch {
                tokens: chunk,
                positions: &pos,
                seqs: &vec![0; chunk.len()],
                logits_rows: &rows,
                kind: BatchKind::Prompt,
            };
            self.forward(&b, cache)?;
            out.extend(
                self.logits[..rows.len() * vocab]
                    .chunks_exact(vocab)
                    .map(|l| l.to_vec()),
            );
        }
        Ok(out)
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
        let mut cache = [KvCache::new(
            self.model.config(),
            num_ctx,
            self.ubatch.min(num_ctx),
        )];
        let mut want = rows.to_vec();
        want.sort_unstable();
        self.feed(ids, &mut cache, &want)
    }

    /// Generates a completion for `req`, reporting text as it is produced.
    pub fn generate(&mut self, req: &Request, obs: &mut dyn Observer) -> Result<Generation> {
        let mut source = super::batch::Fixed {
            pending: vec![super::batch::Admission {
                id: 0,
                request: req.clone(),
                obs: Box::new(Forward(obs)),
                t_start: Instant::now(),
            }],
            results: vec![None],
        };
        self.schedule(&mut source)?;
        source
            .results
            .pop()
            .flatten()
            .expect("the request finishes")
    }
}

/// Lends a borrowed observer to the scheduler.
struct Forward<'a>(&'a mut dyn Observer);

impl Observer for Forward<'_> {
    fn text(&mut self, piece: &str) {
        self.0.text(piece)
    }
    fn logits(&mut self, logits: &[f32]) {
        self.0.logits(logits)
    }
    fn token(&mut self, n: usize) {
        self.0.token(n)
    }
    fn warning(&mut self, msg: &str) {
        self.0.warning(msg)
    }
}

/// A GGUF file's own tokenizer (its SentencePiece vocabulary, built from
/// the metadata already read). A file without one (test models) may have a
/// `tokenizer.json` beside it; else the error says to pass `--tokenizer`.
fn gguf_tokenizer(file: &GgufFile) -> Result<Tokenizer> {
    if !crate::model::spm::carries_tokenizer(file.metadata()) {
        let beside = file.path().with_file_name("tokenizer.json");
        if beside.is_file() {
            return Tokenizer::from_file(&beside);
        }
    }
    crate::model::spm::load(file)
}

/// Token ids for benchmarks: spread over the vocabulary, away from the
/// special tokens, the same on every run.
fn bench_tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n as u64)
        .map(|i| (1000 + i.wrapping_mul(2_654_435_761) % (vocab as u64 - 1000)) as u32)
        .collect()
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
