//! Several sequences at once over one loaded model.
//!
//! Every running sequence has its own KV cache, position, sampler and stop
//! state. A decode step feeds one token of every decoding sequence through
//! a single forward pass, so the weights are read once for all of them; a
//! sequence that finishes leaves, and a new one may join at any step. A
//! joining sequence's prompt is fed in chunks of the engine's `ubatch`
//! between decode steps, so the others keep going while it fills.
//!
//! Batching never changes what a sequence generates: prompt chunks run on
//! their own (never mixed with other sequences' tokens), and in a decode
//! batch every row is summed exactly as a lone row would be (see
//! `BatchKind::Decode`). The tests check token ids against lone runs.

use super::generate::{Engine, Generation, Observer, Request};
use super::sequence::{Phase, Seq};
use crate::model::gemma3::{Batch, BatchKind};
use crate::model::KvCache;
use anyhow::Result;
use serde::Serialize;
use std::sync::mpsc;
use std::time::Instant;

/// What a scheduler run measured as a whole (each sequence's own metrics
/// are in its [`Generation`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BatchMetrics {
    /// Decode steps (forward passes over one token of each decoding
    /// sequence).
    pub steps: usize,
    /// Tokens the decode steps produced, all sequences together.
    pub decode_tokens: usize,
    /// Wall time of the decode steps (forward pass and sampling).
    pub decode_ms: f64,
    /// `decode_tokens / decode_ms`, per second.
    pub aggregate_tokens_per_s: f64,
    /// Mean number of sequences per decode step.
    pub mean_batch_size: f64,
    /// Prompt tokens fed, all sequences together, and the time it took.
    pub prompt_tokens: usize,
    pub prompt_ms: f64,
    /// From the first request to the last token of the last sequence.
    pub wall_ms: f64,
}

/// A request in the scheduler's queue with its observer.
pub(crate) struct Admission<'o> {
    pub id: usize,
    pub request: Request,
    pub obs: Box<dyn Observer + 'o>,
    pub t_start: Instant,
}

/// Where requests come from and where results go.
pub(crate) trait Source<'o> {
    /// Requests to start now. With `idle` (nothing running) it may block
    /// until one arrives; an empty answer then means there will be no more.
    fn poll(&mut self, idle: bool) -> Vec<Admission<'o>>;
    fn done(&mut self, id: usize, result: Result<Generation>);
}

struct Slot<'o> {
    id: usize,
    seq: Seq<'o>,
}

impl Engine {
    /// Runs requests from `source` until it has no more and every sequence
    /// is finished.
    pub(crate) fn schedule<'o>(&mut self, source: &mut dyn Source<'o>) -> Result<BatchMetrics> {
        let mut slots: Vec<Option<Slot<'o>>> = Vec::new();
        let mut caches: Vec<KvCache> = Vec::new();
        let mut stats = BatchMetrics::default();
        let mut batch_sizes = 0usize;
        let t0 = Instant::now();
        let mut open = true;
        loop {
            let running = slots.iter().any(|s| s.is_some());
            if open {
                let arrivals = source.poll(!running);
                if arrivals.is_empty() && !running {
                    open = false;
                }
                for a in arrivals {
                    match self.admit(a.request, a.obs, a.t_start) {
                        Ok(seq) => {
                            let at = slots.iter().position(|s| s.is_none()).unwrap_or_else(|| {
                                slots.push(None);
                                slots.len() - 1
                            });
                            self.cache_for(&mut caches, at, seq.options.num_ctx);
                            slots[at] = Some(Slot { id: a.id, seq });
                        }
                        Err(e) => source.done(a.id, Err(e)),
                    }
                }
            }
            if !slots.iter().any(|s| s.is_some()) {
                if open {
                    continue;
                }
                break;
            }

            // One prompt chunk of the first sequence still filling...
            if let Some(i) = slots.iter().position(|s| {
                matches!(
                    s,
                    Some(Slot {
                        seq: Seq {
                            phase: Phase::Prefill { .. },
                            ..
                        },
                        ..
                    })
                )
            }) {
                let fed = self.prefill_chunk(
                    slots[i].as_mut().map(|s| &mut s.seq).expect("some"),
                    i,
                    &mut caches,
                )?;
                stats.prompt_tokens += fed.0;
                stats.prompt_ms += fed.1;
            }
            // ...then one decode step for everyone decoding.
            let decoding: Vec<usize> = (0..slots.len())
                .filter(|&i| {
                    matches!(
                        slots[i],
                        Some(Slot {
                            seq: Seq {
                                phase: Phase::Decode { .. },
                                ..
                            },
                            ..
                        })
                    )
                })
                .collect();
            if !decoding.is_empty() {
                let t = Instant::now();
                self.decode_step(&mut slots, &decoding, &mut caches)?;
                stats.decode_ms += t.elapsed().as_secs_f64() * 1000.0;
                stats.steps += 1;
                stats.decode_tokens += decoding.len();
                batch_sizes += decoding.len();
            }
            // Finished sequences leave.
            for slot in slots.iter_mut() {
                if matches!(
                    slot,
                    Some(Slot {
                        seq: Seq {
                            phase: Phase::Done(_),
                            ..
                        },
                        ..
                    })
                ) {
                    let s = slot.take().expect("checked");
                    let g = s.seq.finish(self.name());
                    source.done(s.id, Ok(g));
                }
            }
        }
        stats.wall_ms = t0.elapsed().as_secs_f64() * 1000.0;
        stats.aggregate_tokens_per_s = super::metrics::rate(stats.decode_tokens, stats.decode_ms);
        if stats.steps > 0 {
            stats.mean_batch_size = batch_sizes as f64 / stats.steps as f64;
        }
        Ok(stats)
    }

    /// Validates and tokenizes a request into a sequence ready to prefill.
    fn admit<'o>(
        &mut self,
        req: Request,
        obs: Box<dyn Observer + 'o>,
        t_start: Instant,
    ) -> Result<Seq<'o>> {
        let mut options = req.options;
        options.validate(self.model().config().max_position_embeddings)?;
        if options.seed.is_none() {
            options.seed = Some(rand::random::<u32>() as u64);
        }
        let num_ctx = options.num_ctx;
        let (ids, truncated) = self.tokenize(&req.prompt, num_ctx, options.generation_reserve())?;
        let mut obs = obs;
        if truncated > 0 {
            obs.warning(&format!(
                "prompt truncated: dropped {truncated} tokens from the front of the user text to fit num_ctx {num_ctx}"
            ));
        }
        self.ensure_buffers(num_ctx, 1);
        Ok(Seq::new(
            obs,
            options,
            ids,
            truncated,
            self.load_ms(),
            t_start,
        ))
    }

    /// Gives slot `at` an empty cache of `num_ctx` positions, reusing the
    /// one it had when it fits.
    fn cache_for(&self, caches: &mut Vec<KvCache>, at: usize, num_ctx: usize) {
        let chunk = self.ubatch().min(num_ctx);
        let cfg = self.model().config();
        if at == caches.len() {
            caches.push(KvCache::new(cfg, num_ctx, chunk));
        } else if caches[at].num_ctx() != num_ctx || caches[at].max_chunk() < chunk {
            caches[at] = KvCache::new(cfg, num_ctx, chunk);
        }
        caches[at].clear();
    }

    /// Feeds the next prompt chunk of the sequence in slot `i`; samples its
    /// first token when the prompt is complete. Returns (tokens fed, ms).
    fn prefill_chunk(
        &mut self,
        seq: &mut Seq,
        i: usize,
        caches: &mut [KvCache],
    ) -> Result<(usize, f64)> {
        let Phase::Prefill { fed } = seq.phase else {
            return Ok((0, 0.0));
        };
        let step = self.ubatch().min(seq.options.num_ctx);
        let end = (fed + step).min(seq.prompt.len());
        let chunk = &seq.prompt[fed..end];
        let pos: Vec<usize> = (fed..end).collect();
        let seqs = vec![i; chunk.len()];
        let last = [chunk.len() - 1];
        let complete = end == seq.prompt.len();
        let rows: &[usize] = if complete { &last } else { &[] };
        let t = Instant::now();
        let b = Batch {
            tokens: chunk,
            positions: &pos,
            seqs: &seqs,
            logits_rows: rows,
            kind: BatchKind::Prompt,
        };
        self.forward(&b, caches)?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        seq.add_prompt_time(ms);
        seq.phase = Phase::Prefill { fed: end };
        if complete {
            let cache_len = caches[i].len();
            let (tok, logits) = self.tokenizer_and_logits(1);
            seq.accept(&mut logits[..], tok, cache_len)?;
        }
        Ok((end - fed, ms))
    }

    /// One forward pass over the pending token of every sequence in
    /// `decoding`, then a sampling step for each.
    fn decode_step(
        &mut self,
        slots: &mut [Option<Slot>],
        decoding: &[usize],
        caches: &mut [KvCache],
    ) -> Result<()> {
        let mut tokens = Vec::with_capacity(decoding.len());
        let mut pos = Vec::with_capacity(decoding.len());
        for &i in decoding {
            let seq = &slots[i].as_ref().expect("decoding").seq;
            let Phase::Decode { next } = seq.phase else {
                unreachable!()
            };
            tokens.push(next);
            pos.push(caches[i].len());
        }
        let rows: Vec<usize> = (0..decoding.len()).collect();
        let b = Batch {
            tokens: &tokens,
            positions: &pos,
            seqs: decoding,
            logits_rows: &rows,
            kind: BatchKind::Decode,
        };
        self.forward(&b, caches)?;
        let vocab = self.model().vocab_size();
        for (r, &i) in decoding.iter().enumerate() {
            let seq = &mut slots[i].as_mut().expect("decoding").seq;
            let cache_len = caches[i].len();
            let (tok, logits) = self.tokenizer_and_logits(decoding.len());
            seq.accept(&mut logits[r * vocab..(r + 1) * vocab], tok, cache_len)?;
        }
        Ok(())
    }
}

/// A request sent to a serving engine, with where to send its result.
pub struct Job {
    pub request: Request,
    pub reply: mpsc::Sender<Result<Generation>>,
}

/// Submits requests to an engine running [`Engine::serve`]; cloneable and
/// usable from any thread. Each call blocks until its generation is done.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Job>,
}

/// The receiving end for [`Engine::serve`].
pub struct Inbox {
    rx: mpsc::Receiver<Job>,
}

/// A client and the inbox of the engine that will serve it.
pub fn channel() -> (Client, Inbox) {
    let (tx, rx) = mpsc::channel();
    (Client { tx }, Inbox { rx })
}

impl Client {
    pub fn generate(&self, request: Request) -> Result<Generation> {
        let (reply, rx) = mpsc::channel();
        self.tx
            .send(Job { request, reply })
            .map_err(|_| anyhow::anyhow!("the engine stopped serving"))?;
        rx.recv()
            .map_err(|_| anyhow::anyhow!("the engine stopped before answering"))?
    }
}

/// Served jobs print warnings only (their callers are on other threads).
struct WarningsOnly;
impl Observer for WarningsOnly {}

struct Served {
    inbox: Inbox,
    replies: Vec<(usize, mpsc::Sender<Result<Generation>>)>,
    next_id: usize,
}

impl<'o> Source<'o> for Served {
    fn poll(&mut self, idle: bool) -> Vec<Admission<'o>> {
        let mut jobs = Vec::new();
        if idle {
            match self.inbox.rx.recv() {
                Ok(j) => jobs.push(j),
                Err(_) => return Vec::new(),
            }
        }
        while let Ok(j) = self.inbox.rx.try_recv() {
            jobs.push(j);
        }
        jobs.into_iter()
            .map(|j| {
                let id = self.next_id;
                self.next_id += 1;
                self.replies.push((id, j.reply));
                Admission {
                    id,
                    request: j.request,
                    obs: Box::new(WarningsOnly),
                    t_start: Instant::now(),
                }
            })
            .collect()
    }

    fn done(&mut self, id: usize, result: Result<Generation>) {
        if let Some(at) = self.replies.iter().position(|(i, _)| *i == id) {
            let (_, tx) = self.replies.swap_remove(at);
            // A caller that gave up waiting is not an error here.
            let _ = tx.send(result);
        }
    }
}

impl Engine {
    /// Serves requests from clients (see [`channel`]) until every client is
    /// dropped and all sequences are done, decoding concurrent requests in
    /// shared forward passes.
    pub fn serve(&mut self, inbox: Inbox) -> Result<BatchMetrics> {
        let mut source = Served {
            inbox,
            replies: Vec::new(),
            next_id: 0,
        };
        self.schedule(&mut source)
    }

    /// Runs several requests together and returns their generations in
    /// order, with the batch's own metrics.
    pub fn generate_batch<'o>(
        &mut self,
        requests: Vec<(Request, Box<dyn Observer + 'o>)>,
    ) -> Result<(Vec<Generation>, BatchMetrics)> {
        let n = requests.len();
        let mut source = Fixed {
            pending: requests
                .into_iter()
                .enumerate()
                .map(|(id, (request, obs))| Admission {
                    id,
                    request,
                    obs,
                    t_start: Instant::now(),
                })
                .collect(),
            results: (0..n).map(|_| None).collect(),
        };
        let stats = self.schedule(&mut source)?;
        let results = source
            .results
            .into_iter()
            .map(|r| r.expect("every request finishes"))
            .collect::<Result<Vec<_>>>()?;
        Ok((results, stats))
    }
}

/// A fixed set of requests, all started at once.
pub(crate) struct Fixed<'o> {
    pub pending: Vec<Admission<'o>>,
    pub results: Vec<Option<Result<Generation>>>,
}

impl<'o> Source<'o> for Fixed<'o> {
    fn poll(&mut self, _idle: bool) -> Vec<Admission<'o>> {
        std::mem::take(&mut self.pending)
    }

    fn done(&mut self, id: usize, result: Result<Generation>) {
        self.results[id] = Some(result);
    }
}
