//! Gemma 3 text model: the forward pass.
//!
//! The shape follows the published architecture: embeddings scaled by
//! sqrt(hidden); per layer a pre-norm, attention with RMS-normed queries and
//! keys, NEOX rope (base 10k on sliding layers, the file's base, optionally
//! linearly scaled, on global ones), a post-attention norm added to the
//! residual, then the same sandwich around a GELU-tanh gated MLP; a final
//! norm and an LM head tied to the embeddings unless the file has its own.
//!
//! Built for speed: a forward takes any mix of sequences and positions (a
//! prefill chunk, or one token from each of several sequences), every
//! buffer is allocated once in [`Scratch`], activations are quantized once
//! per matrix input, and logits are computed only for the rows asked for.

use super::config::Config;
use super::kv_cache::KvCache;
use super::weights::TensorSource;
use crate::cpu::matmul::{matmul, matmul_many, Matrix, QuantActs};
use crate::cpu::ops;
use crate::cpu::pool::{split, SharedMut};
use crate::cpu::profile;
use crate::cpu::{Isa, ThreadPool};
use anyhow::{Context, Result};

/// Tokens to run through the model in one forward pass.
pub struct Batch<'a> {
    pub tokens: &'a [u32],
    /// Position of each token in its sequence.
    pub positions: &'a [usize],
    /// Which cache (sequence) each token belongs to.
    pub seqs: &'a [usize],
    /// Rows whose logits are wanted, in the order they are written out.
    pub logits_rows: &'a [usize],
    /// Whether the tokens are one prompt (rounded like llama.cpp's prompt
    /// kernels) or one token of each of several sequences (each rounded as
    /// if decoded alone). A single token is the same either way.
    pub kind: BatchKind,
}

/// See [`Batch::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    Prompt,
    Decode,
}

impl<'a> Batch<'a> {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Where a forward pass runs and the buffers it reuses.
pub struct Runtime {
    pub pool: ThreadPool,
    pub isa: Isa,
}

impl Runtime {
    pub fn new(threads: usize) -> Self {
        Self {
            pool: ThreadPool::new(threads),
            isa: Isa::detect(),
        }
    }
}

struct Mlp {
    gate: Matrix,
    up: Matrix,
    down: Matrix,
}

impl Mlp {
    fn new(src: &dyn TensorSource, p: &str) -> Result<Self> {
        Ok(Self {
            gate: src.matrix(&format!("{p}.ffn_gate.weight"))?,
            up: src.matrix(&format!("{p}.ffn_up.weight"))?,
            down: src.matrix(&format!("{p}.ffn_down.weight"))?,
        })
    }

    /// `s.tmp = down(gelu(gate(s.h)) * up(s.h))` for `n` rows.
    fn forward(&self, rt: &Runtime, s: &mut Scratch, n: usize) {
        let (inter, hidden) = (self.gate.rows, self.down.rows);
        {
            let _p = profile::scope("quantize");
            let fmts = [self.gate.qtype.act_format(), self.up.qtype.act_format()];
            s.acts.prepare(
                &rt.pool,
                &s.h[..n * self.gate.cols],
                n,
                self.gate.cols,
                &fmts,
            );
        }
        {
            let _p = profile::scope("matmul gate+up");
            let (g, u) = (&mut s.gate[..n * inter], &mut s.up[..n * inter]);
            matmul_many(
                &rt.pool,
                rt.isa,
                &s.acts,
                &mut [(&self.gate, g), (&self.up, u)],
            );
        }
        {
            let _p = profile::scope("gelu*up");
            let (gate, up) = (&mut s.gate[..n * inter], &s.up[..n * inter]);
            if n * inter < 1 << 14 {
                // A decode step's few thousand lookups: cheaper than a hand-off.
                ops::gelu_mul_inplace(rt.isa, gate, up);
            } else {
                let g = SharedMut::new(gate);
                rt.pool.for_ranges(n * inter, 64, |r| {
                    // SAFETY: for_ranges hands out disjoint ranges.
                    let out = unsafe { g.slice(r.start, r.len()) };
                    ops::gelu_mul_inplace(rt.isa, out, &up[r]);
                });
            }
        }
        {
            let _p = profile::scope("quantize");
            s.acts.prepare(
                &rt.pool,
                &s.gate[..n * inter],
                n,
                inter,
                &[self.down.qtype.act_format()],
            );
        }
        let _p = profile::scope("matmul down");
        matmul(
            &rt.pool,
            rt.isa,
            &self.down,
            &s.acts,
            &mut s.tmp[..n * hidden],
        );
    }
}

struct Attention {
    q: Matrix,
    k: Matrix,
    v: Matrix,
    o: Matrix,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    sliding: bool,
    window: usize,
    eps: f32,
    scale: f32,
}

impl Attention {
    fn new(cfg: &Config, src: &dyn TensorSource, p: &str, layer: usize) -> Result<Self> {
        let a = Self {
            q: src.matrix(&format!("{p}.attn_q.weight"))?,
            k: src.matrix(&format!("{p}.attn_k.weight"))?,
            v: src.matrix(&format!("{p}.attn_v.weight"))?,
            o: src.matrix(&format!("{p}.attn_output.weight"))?,
            q_norm: src.norm(&format!("{p}.attn_q_norm.weight"), cfg.head_dim)?,
            k_norm: src.norm(&format!("{p}.attn_k_norm.weight"), cfg.head_dim)?,
            n_heads: cfg.num_attention_heads,
            n_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
            sliding: cfg.is_sliding(layer),
            window: cfg.sliding_window,
            eps: cfg.rms_norm_eps,
            scale: cfg.attn_scale(),
        };
        let (h, qd, kd) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim());
        for (m, rows, cols, what) in [
            (&a.q, qd, h, "attn_q"),
            (&a.k, kd, h, "attn_k"),
            (&a.v, kd, h, "attn_v"),
            (&a.o, h, qd, "attn_output"),
        ] {
            anyhow::ensure!(
                m.rows == rows && m.cols == cols,
                "{p}.{what}: expected {rows}x{cols}, found {}x{}",
                m.rows,
                m.cols
            );
        }
        Ok(a)
    }

    /// Attention over `s.h` for the batch; the output projection lands in
    /// `s.tmp`.
    fn forward(
        &self,
        rt: &Runtime,
        s: &mut Scratch,
        b: &Batch,
        caches: &mut [KvCache],
        layer: usize,
    ) {
        let n = b.len();
        let (qd, kd, hd) = (self.q.rows, self.k.rows, self.head_dim);
        let hidden = self.q.cols;
        {
            let _p = profile::scope("quantize");
            let fmts = [
                self.q.qtype.act_format(),
                self.k.qtype.act_format(),
                self.v.qtype.act_format(),
            ];
            s.acts
                .prepare(&rt.pool, &s.h[..n * hidden], n, hidden, &fmts);
        }
        {
            let _p = profile::scope("matmul q+k+v");
            let (q, k, v) = (&mut s.q[..n * qd], &mut s.k[..n * kd], &mut s.v[..n * kd]);
            matmul_many(
                &rt.pool,
                rt.isa,
                &s.acts,
                &mut [(&self.q, q), (&self.k, k), (&self.v, v)],
            );
        }
        let _p = profile::scope("q/k norm, rope, kv store");

        let half = hd / 2;
        let (cos, sin) = if self.sliding {
            (&s.rope_local_cos, &s.rope_local_sin)
        } else {
            (&s.rope_global_cos, &s.rope_global_sin)
        };
        for t in 0..n {
            let (c, sn) = (
                &cos[t * half..(t + 1) * half],
                &sin[t * half..(t + 1) * half],
            );
            for head in s.q[t * qd..(t + 1) * qd].chunks_exact_mut(hd) {
                ops::rms_norm_inplace(head, &self.q_norm, self.eps);
                ops::rope_apply(head, c, sn);
                head.iter_mut().for_each(|v| *v *= self.scale);
            }
            for head in s.k[t * kd..(t + 1) * kd].chunks_exact_mut(hd) {
                ops::rms_norm_inplace(head, &self.k_norm, self.eps);
                ops::rope_apply(head, c, sn);
            }
            let cache = caches[b.seqs[t]].layer_mut(layer);
            let (kr, vr) = cache.rows_mut(b.positions[t]);
            ops::to_f16_bits(rt.isa, &s.k[t * kd..(t + 1) * kd], kr);
            ops::to_f16_bits(rt.isa, &s.v[t * kd..(t + 1) * kd], vr);
        }

        drop(_p);
        let _p = profile::scope("attention");
        let tiled = b.kind == BatchKind::Prompt
            && n >= ops::KV_TILE
            && b.seqs.iter().all(|&q| q == b.seqs[0]);
        if tiled {
            self.attend_tiled(rt, s, b, caches, layer);
        } else {
            self.attend_one_by_one(rt, s, b, caches, layer);
        }

        drop(_p);
        {
            let _p = profile::scope("quantize");
            s.acts.prepare(
                &rt.pool,
                &s.att[..n * qd],
                n,
                qd,
                &[self.o.qtype.act_format()],
            );
        }
        let _p = profile::scope("matmul o");
        matmul(
            &rt.pool,
            rt.isa,
            &self.o,
            &s.acts,
            &mut s.tmp[..n * self.o.rows],
        );
    }
}

impl Attention {
    /// First key position query `t` sees.
    fn lowest_key(&self, pos: usize) -> usize {
        if self.sliding {
            (pos + 1).saturating_sub(self.window)
        } else {
            0
        }
    }

    /// Decode steps and short prompts: one (token, head) at a time over the
    /// f16 cache with llama.cpp's one-query flash-attention numerics.
    fn attend_one_by_one(
        &self,
        rt: &Runtime,
        s: &mut Scratch,
        b: &Batch,
        caches: &[KvCache],
        layer: usize,
    ) {
        let n = b.len();
        let (qd, hd) = (self.q.rows, self.head_dim);
        let items = n * self.n_heads;
        let group = self.n_heads / self.n_kv_heads;
        let out = SharedMut::new(&mut s.att[..n * qd]);
        let tmp = SharedMut::new(&mut s.attn_tmp[..]);
        let per_thread = s.attn_tmp.len() / rt.pool.n_threads();
        let q = &s.q[..n * qd];
        let threads = rt.pool.n_threads();
        rt.pool.run(|tid| {
            // SAFETY: each thread owns its own slice of `attn_tmp`.
            let mine = unsafe { tmp.slice(tid * per_thread, per_thread) };
            let (q16, rest) = mine.split_at_mut(hd);
            let acc = &mut rest[..hd];
            for item in split(items, threads, tid) {
                let (t, head) = (item / self.n_heads, item % self.n_heads);
                let kvh = head / group;
                let pos = b.positions[t];
                let cache = caches[b.seqs[t]].layer(layer);
                ops::to_f16_bits(
                    rt.isa,
                    &q[t * qd + head * hd..t * qd + (head + 1) * hd],
                    q16,
                );
                // SAFETY: (t, head) items are disjoint slices of the output.
                let o = unsafe { out.slice(t * qd + head * hd, hd) };
                let kv = (self.lowest_key(pos)..=pos).map(|j| {
                    (
                        &cache.k_row(j)[kvh * hd..(kvh + 1) * hd],
                        &cache.v_row(j)[kvh * hd..(kvh + 1) * hd],
                    )
                });
                ops::F16Attention {
                    isa: rt.isa,
                    q: q16,
                    acc: &mut *acc,
                }
                .run(kv, o);
            }
        });
    }

    /// Prompt chunks of 64+ tokens of one sequence: llama.cpp's tiled
    /// flash attention, one head per work item, keys in tiles of 64.
    fn attend_tiled(
        &self,
        rt: &Runtime,
        s: &mut Scratch,
        b: &Batch,
        caches: &[KvCache],
        layer: usize,
    ) {
        let n = b.len();
        let (qd, hd) = (self.q.rows, self.head_dim);
        let group = self.n_heads / self.n_kv_heads;
        let tile = ops::KV_TILE;
        let out = SharedMut::new(&mut s.att[..n * qd]);
        let kvbuf = SharedMut::new(&mut s.tiled_kv[..]);
        let rowbuf = SharedMut::new(&mut s.tiled_rows[..]);
        let kv_per_thread = 2 * tile * hd;
        let rows_per_thread = s.max_rows;
        let q = &s.q[..n * qd];
        let cache = caches[b.seqs[0]].layer(layer);
        let first = b
            .positions
            .iter()
            .map(|&p| self.lowest_key(p))
            .min()
            .unwrap_or(0);
        let last = b.positions.iter().copied().max().unwrap_or(0);
        let threads = rt.pool.n_threads();
        rt.pool.run(|tid| {
            // SAFETY: each thread owns its own slices of the tile buffers.
            let (kt, vt) =
                unsafe { kvbuf.slice(tid * kv_per_thread, kv_per_thread) }.split_at_mut(tile * hd);
            let rows = unsafe { rowbuf.slice(tid * rows_per_thread, n) };
            let mut kq = [[0f32; ops::KV_TILE]; 4];
            for head in split(self.n_heads, threads, tid) {
                let kvh = head / group;
                rows.fill(ops::TiledRow::default());
                for t in 0..n {
                    // SAFETY: heads are split between threads; rows of a head are ours.
                    unsafe { out.slice(t * qd + head * hd, hd) }.fill(0.0);
                }
                let mut start = first / tile * tile;
                while start <= last {
                    // Keys transposed (dimension-major) and values, in f32.
                    for i in 0..tile {
                        let j = start + i;
                        if j >= first && j <= last {
                            let (kr, vr) = (
                                &cache.k_row(j)[kvh * hd..(kvh + 1) * hd],
                                &cache.v_row(j)[kvh * hd..(kvh + 1) * hd],
                            );
                            for d in 0..hd {
                                kt[d * tile + i] = half::f16::from_bits(kr[d]).to_f32();
                            }
                            for (v, &x) in vt[i * hd..(i + 1) * hd].iter_mut().zip(vr) {
                                *v = half::f16::from_bits(x).to_f32();
                            }
                        } else {
                            for d in 0..hd {
                                kt[d * tile + i] = 0.0;
                            }
                            vt[i * hd..(i + 1) * hd].fill(0.0);
                        }
                    }
                    // Queries that see this tile, four at a time.
                    let mut pending = [0usize; 4];
                    let mut np = 0;
                    for t in 0..=n {
                        if t < n {
                            let pos = b.positions[t];
                            if start > pos || start + tile <= self.lowest_key(pos) {
                                continue;
                            }
                            pending[np] = t;
                            np += 1;
                            if np < 4 {
                                continue;
                            }
                        }
                        // SAFETY: as above; the pending rows are distinct.
                        unsafe {
                            match np {
                                4 => self.tile_group::<4>(
                                    rt, &pending, head, q, b, start, kt, vt, &mut kq, rows, &out,
                                ),
                                3 => self.tile_group::<3>(
                                    rt, &pending, head, q, b, start, kt, vt, &mut kq, rows, &out,
                                ),
                                2 => self.tile_group::<2>(
                                    rt, &pending, head, q, b, start, kt, vt, &mut kq, rows, &out,
                                ),
                                1 => self.tile_group::<1>(
                                    rt, &pending, head, q, b, start, kt, vt, &mut kq, rows, &out,
                                ),
                                _ => {}
                            }
                        }
                        np = 0;
                    }
                    start += tile;
                }
                for (t, row) in rows.iter().enumerate() {
                    let inv = if row.sum == 0.0 { 0.0 } else { 1.0 / row.sum };
                    // SAFETY: as above.
                    unsafe { out.slice(t * qd + head * hd, hd) }
                        .iter_mut()
                        .for_each(|v| *v *= inv);
                }
            }
        });
    }

    /// One KV tile for the queries `ts[..G]` of one head (see `attend_tiled`).
    ///
    /// # Safety
    /// The rows `ts[..G]` of head `head` in `out` belong to this thread and
    /// are distinct.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_group<const G: usize>(
        &self,
        rt: &Runtime,
        ts: &[usize; 4],
        head: usize,
        q: &[f32],
        b: &Batch,
        start: usize,
        kt: &[f32],
        vt: &[f32],
        kq: &mut [[f32; ops::KV_TILE]; 4],
        rows: &mut [ops::TiledRow],
        out: &SharedMut<f32>,
    ) {
        let (qd, hd) = (self.q.rows, self.head_dim);
        let mut state: [ops::TiledRow; G] = std::array::from_fn(|g| rows[ts[g]]);
        let bounds: [(usize, usize); G] = std::array::from_fn(|g| {
            let pos = b.positions[ts[g]];
            (self.lowest_key(pos), pos)
        });
        ops::tiled_attention_group::<G>(
            rt.isa,
            std::array::from_fn(|g| &q[ts[g] * qd + head * hd..ts[g] * qd + (head + 1) * hd]),
            kt,
            vt,
            |g, i| (bounds[g].0..=bounds[g].1).contains(&(start + i)),
            &mut kq[..G],
            &mut state,
            std::array::from_fn(|g| out.slice(ts[g] * qd + head * hd, hd)),
        );
        for g in 0..G {
            rows[ts[g]] = state[g];
        }
    }
}

struct DecoderLayer {
    attn_norm: Vec<f32>,
    post_attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    post_ffn_norm: Vec<f32>,
    attn: Attention,
    mlp: Mlp,
    eps: f32,
}

impl DecoderLayer {
    fn new(cfg: &Config, src: &dyn TensorSource, layer: usize) -> Result<Self> {
        let p = format!("blk.{layer}");
        let h = cfg.hidden_size;
        let mlp = Mlp::new(src, &p)?;
        let i = cfg.intermediate_size;
        for (m, rows, cols, what) in [
            (&mlp.gate, i, h, "ffn_gate"),
            (&mlp.up, i, h, "ffn_up"),
            (&mlp.down, h, i, "ffn_down"),
        ] {
            anyhow::ensure!(
                m.rows == rows && m.cols == cols,
                "{p}.{what}: expected {rows}x{cols}, found {}x{}",
                m.rows,
                m.cols
            );
        }
        Ok(Self {
            attn_norm: src.norm(&format!("{p}.attn_norm.weight"), h)?,
            post_attn_norm: src.norm(&format!("{p}.post_attention_norm.weight"), h)?,
            ffn_norm: src.norm(&format!("{p}.ffn_norm.weight"), h)?,
            post_ffn_norm: src.norm(&format!("{p}.post_ffw_norm.weight"), h)?,
            attn: Attention::new(cfg, src, &p, layer)?,
            mlp,
            eps: cfg.rms_norm_eps,
        })
    }

    fn forward(
        &self,
        rt: &Runtime,
        s: &mut Scratch,
        b: &Batch,
        caches: &mut [KvCache],
        layer: usize,
        keep: Option<&[usize]>,
    ) -> usize {
        let n = b.len();
        let h = self.attn_norm.len();
        {
            let _p = profile::scope("norms");
            ops::rms_norm(&s.x[..n * h], &self.attn_norm, self.eps, &mut s.h[..n * h]);
        }
        self.attn.forward(rt, s, b, caches, layer);
        // In the last layer only the rows whose logits are wanted go on:
        // their keys and values are already cached, the rest would be
        // computed for nothing (llama.cpp prunes at the same point).
        let n = match keep {
            Some(rows) => {
                gather_rows(&mut s.x, &mut s.h, rows, h);
                gather_rows(&mut s.tmp, &mut s.up, rows, h);
                rows.len()
            }
            None => n,
        };
        if n == 0 {
            return 0;
        }
        {
            let _p = profile::scope("norms");
            ops::rms_norm_add(
                &s.tmp[..n * h],
                &self.post_attn_norm,
                self.eps,
                &mut s.x[..n * h],
            );
            ops::rms_norm(&s.x[..n * h], &self.ffn_norm, self.eps, &mut s.h[..n * h]);
        }
        self.mlp.forward(rt, s, n);
        let _p = profile::scope("norms");
        ops::rms_norm_add(
            &s.tmp[..n * h],
            &self.post_ffn_norm,
            self.eps,
            &mut s.x[..n * h],
        );
        n
    }
}

/// Moves rows `rows` of `x` (width `w`) to its front, in that order, using
/// `tmp` as scratch.
fn gather_rows(x: &mut [f32], tmp: &mut [f32], rows: &[usize], w: usize) {
    for (i, &r) in rows.iter().enumerate() {
        tmp[i * w..(i + 1) * w].copy_from_slice(&x[r * w..(r + 1) * w]);
    }
    x[..rows.len() * w].copy_from_slice(&tmp[..rows.len() * w]);
}

/// Buffers for one forward pass of up to `max_rows` tokens, allocated once.
pub struct Scratch {
    max_rows: usize,
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    tmp: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    /// Per thread: an f16 query and an f16 attention accumulator.
    attn_tmp: Vec<u16>,
    /// Per thread: a tile of keys and one of values, f32 (tiled attention).
    tiled_kv: Vec<f32>,
    /// Per thread and row: softmax state (tiled attention).
    tiled_rows: Vec<ops::TiledRow>,
    rope_local_cos: Vec<f32>,
    rope_local_sin: Vec<f32>,
    rope_global_cos: Vec<f32>,
    rope_global_sin: Vec<f32>,
    acts: QuantActs,
}

impl Scratch {
    /// Buffers for forwards of up to `max_rows` tokens on `threads` threads.
    pub fn new(cfg: &Config, isa: Isa, max_rows: usize, threads: usize) -> Self {
        let r = max_rows.max(1);
        let hd2 = cfg.head_dim / 2;
        let widest = cfg.hidden_size.max(cfg.intermediate_size).max(cfg.q_dim());
        Self {
            max_rows: r,
            x: vec![0.0; r * cfg.hidden_size],
            h: vec![0.0; r * cfg.hidden_size],
            q: vec![0.0; r * cfg.q_dim()],
            k: vec![0.0; r * cfg.kv_dim()],
            v: vec![0.0; r * cfg.kv_dim()],
            att: vec![0.0; r * cfg.q_dim()],
            tmp: vec![0.0; r * cfg.hidden_size],
            gate: vec![0.0; r * cfg.intermediate_size],
            up: vec![0.0; r * cfg.intermediate_size],
            attn_tmp: vec![0; threads.max(1) * 2 * cfg.head_dim],
            tiled_kv: vec![0.0; threads.max(1) * 2 * ops::KV_TILE * cfg.head_dim],
            tiled_rows: vec![ops::TiledRow::default(); threads.max(1) * r],
            rope_local_cos: vec![0.0; r * hd2],
            rope_local_sin: vec![0.0; r * hd2],
            rope_global_cos: vec![0.0; r * hd2],
            rope_global_sin: vec![0.0; r * hd2],
            acts: QuantActs::new(isa, r, widest),
        }
    }

    /// See [`crate::cpu::QuantActs::set_prompt_batch`].
    pub fn set_prompt_batch(&mut self, prompt: bool) {
        self.acts.set_prompt_batch(prompt);
    }

    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// The hidden state: `rows` x hidden, row-major (for backends that run
    /// some layers elsewhere and hand the state back).
    pub fn hidden_mut(&mut self, rows: usize, hidden: usize) -> &mut [f32] {
        &mut self.x[..rows * hidden]
    }
}

/// A loaded Gemma 3 model.
pub struct Gemma3 {
    cfg: Config,
    embed: Matrix,
    embed_scale: f32,
    layers: Vec<DecoderLayer>,
    final_norm: Vec<f32>,
    /// `None` when tied to the embeddings.
    lm_head: Option<Matrix>,
}

impl Gemma3 {
    pub fn new(cfg: Config, src: &dyn TensorSource) -> Result<Self> {
        cfg.validate()?;
        let embed = src.matrix("token_embd.weight")?;
        anyhow::ensure!(
            embed.cols == cfg.hidden_size,
            "token_embd: expected width {}, found {}",
            cfg.hidden_size,
            embed.cols
        );
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| DecoderLayer::new(&cfg, src, l).with_context(|| format!("loading layer {l}")))
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if src.has("output.weight") {
            Some(src.matrix("output.weight")?)
        } else {
            None
        };
        Ok(Self {
            embed_scale: (cfg.hidden_size as f32).sqrt(),
            final_norm: src.norm("output_norm.weight", cfg.hidden_size)?,
            cfg,
            embed,
            layers,
            lm_head,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn vocab_size(&self) -> usize {
        self.lm_head().rows
    }

    fn lm_head(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Bytes of weights a decode step reads.
    pub fn weight_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                let a = &l.attn;
                let m = &l.mlp;
                [&a.q, &a.k, &a.v, &a.o, &m.gate, &m.up, &m.down]
                    .iter()
                    .map(|w| w.size_bytes())
                    .sum::<usize>()
            })
            .sum();
        layers + self.lm_head().size_bytes()
    }

    /// Runs `batch` through the model, appending its keys and values to the
    /// caches, and writes `batch.logits_rows.len()` rows of logits.
    pub fn forward(
        &self,
        rt: &Runtime,
        s: &mut Scratch,
        b: &Batch,
        caches: &mut [KvCache],
        logits: &mut [f32],
    ) -> Result<()> {
        let _p = profile::scope("forward (total)");
        let advance = self.check(s, b, caches, logits)?;
        s.acts.set_prompt_batch(b.kind == BatchKind::Prompt);
        {
            let _p = profile::scope("embed + rope angles");
            self.embed(s, b);
        }
        let m = self.run_layers(rt, s, b, caches, 0..self.layers.len());
        for (seq, added) in advance {
            caches[seq].advance(added);
        }
        self.head(rt, s, m, logits);
        Ok(())
    }

    /// Validates a batch against the caches and buffers; returns, per
    /// sequence, how many positions the batch adds (for [`KvCache::advance`]
    /// once all layers have run).
    pub fn check(
        &self,
        s: &Scratch,
        b: &Batch,
        caches: &[KvCache],
        logits: &[f32],
    ) -> Result<Vec<(usize, usize)>> {
        let n = b.len();
        anyhow::ensure!(n > 0, "empty batch");
        anyhow::ensure!(
            n <= s.max_rows,
            "batch of {n} tokens exceeds the scratch size {}",
            s.max_rows
        );
        anyhow::ensure!(
            b.positions.len() == n && b.seqs.len() == n,
            "batch arrays differ in length"
        );
        anyhow::ensure!(
            logits.len() >= b.logits_rows.len() * self.vocab_size(),
            "logits buffer too small"
        );
        for &row in b.logits_rows {
            anyhow::ensure!(row < n, "logits row {row} is outside the batch");
        }
        // Positions must continue each sequence's cache without gaps.
        let mut added: Vec<(usize, usize)> = Vec::new();
        for t in 0..n {
            let seq = b.seqs[t];
            anyhow::ensure!(seq < caches.len(), "sequence {seq} has no cache");
            let k = match added.iter_mut().find(|(s2, _)| *s2 == seq) {
                Some((_, k)) => k,
                None => {
                    added.push((seq, 0));
                    &mut added.last_mut().expect("just pushed").1
                }
            };
            let expect = caches[seq].len() + *k;
            *k += 1;
            anyhow::ensure!(
                b.positions[t] == expect,
                "token {t} of sequence {seq} is at position {}, expected {expect}",
                b.positions[t]
            );
            anyhow::ensure!(
                b.positions[t] < caches[seq].num_ctx(),
                "position {} is beyond the context of {} tokens",
                b.positions[t],
                caches[seq].num_ctx()
            );
            anyhow::ensure!(
                (b.tokens[t] as usize) < self.embed.rows,
                "token id {} out of range",
                b.tokens[t]
            );
        }
        for &(seq, k) in &added {
            anyhow::ensure!(
                k <= caches[seq].max_chunk(),
                "{k} tokens of sequence {seq} in one forward exceed its cache's chunk size {}",
                caches[seq].max_chunk()
            );
        }
        Ok(added)
    }

    /// Scaled token embeddings into the hidden state, and the rope angles of
    /// the batch's positions (shared by every layer).
    pub fn embed(&self, s: &mut Scratch, b: &Batch) {
        let h = self.cfg.hidden_size;
        for (t, &tok) in b.tokens.iter().enumerate() {
            let row = &mut s.x[t * h..(t + 1) * h];
            self.embed.dequantize_row(tok as usize, row);
            row.iter_mut().for_each(|v| *v *= self.embed_scale);
        }
        let hd = self.cfg.head_dim;
        let half = hd / 2;
        for (t, &pos) in b.positions.iter().enumerate() {
            let r = t * half..(t + 1) * half;
            let (c, sn) = (
                &mut s.rope_local_cos[r.clone()],
                &mut s.rope_local_sin[r.clone()],
            );
            ops::rope_cos_sin(pos, self.cfg.rope_local_base_freq, 1.0, hd, c, sn);
            let (c, sn) = (&mut s.rope_global_cos[r.clone()], &mut s.rope_global_sin[r]);
            ops::rope_cos_sin(
                pos,
                self.cfg.rope_theta,
                1.0 / self.cfg.rope_scaling_factor,
                hd,
                c,
                sn,
            );
        }
    }

    /// Runs layers `layers` over the hidden state in `s`. When the range
    /// ends at the last layer only the batch's logits rows come out of it,
    /// moved to the front; returns how many rows the hidden state holds.
    pub fn run_layers(
        &self,
        rt: &Runtime,
        s: &mut Scratch,
        b: &Batch,
        caches: &mut [KvCache],
        layers: std::ops::Range<usize>,
    ) -> usize {
        let last = self.layers.len() - 1;
        let mut m = b.len();
        for l in layers {
            let keep = (l == last).then_some(b.logits_rows);
            m = self.layers[l].forward(rt, s, b, caches, l, keep);
        }
        m
    }

    /// Final norm and LM head over the first `m` rows of the hidden state.
    pub fn head(&self, rt: &Runtime, s: &mut Scratch, m: usize, logits: &mut [f32]) {
        if m == 0 {
            return;
        }
        let h = self.cfg.hidden_size;
        let vocab = self.vocab_size();
        let head = self.lm_head();
        {
            let _p = profile::scope("norms");
            s.h[..m * h].copy_from_slice(&s.x[..m * h]);
            ops::rms_norm_inplace(&mut s.h[..m * h], &self.final_norm, self.cfg.rms_norm_eps);
        }
        {
            let _p = profile::scope("quantize");
            s.acts
                .prepare(&rt.pool, &s.h[..m * h], m, h, &[head.qtype.act_format()]);
        }
        let _p = profile::scope("matmul lm head");
        matmul(&rt.pool, rt.isa, head, &s.acts, &mut logits[..m * vocab]);
    }
}
