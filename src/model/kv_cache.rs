//! Per-sequence key/value cache, allocated once for `num_ctx` positions.
//!
//! Entries are stored as f16, as llama.cpp stores them by default: half the
//! memory traffic of f32 and the same rounding the reference outputs saw.
//! Global layers keep every position; sliding layers keep a ring of their
//! window plus one prefill chunk, because a chunk writes all its keys
//! before its first query reads the window behind it.

use super::config::Config;

pub struct LayerCache {
    /// Slots in the ring; position `p` lives in slot `p % cap`.
    cap: usize,
    kv_dim: usize,
    k: Vec<u16>,
    v: Vec<u16>,
}

impl LayerCache {
    pub fn cap(&self) -> usize {
        self.cap
    }

    #[inline]
    pub fn k_row(&self, pos: usize) -> &[u16] {
        let s = (pos % self.cap) * self.kv_dim;
        &self.k[s..s + self.kv_dim]
    }

    #[inline]
    pub fn v_row(&self, pos: usize) -> &[u16] {
        let s = (pos % self.cap) * self.kv_dim;
        &self.v[s..s + self.kv_dim]
    }

    #[inline]
    pub fn rows_mut(&mut self, pos: usize) -> (&mut [u16], &mut [u16]) {
        let s = (pos % self.cap) * self.kv_dim;
        (
            &mut self.k[s..s + self.kv_dim],
            &mut self.v[s..s + self.kv_dim],
        )
    }
}

pub struct KvCache {
    layers: Vec<LayerCache>,
    num_ctx: usize,
    /// Most tokens one forward may add (sizes the sliding rings).
    max_chunk: usize,
    /// Positions written so far; the next token goes at this position.
    len: usize,
}

impl KvCache {
    /// A cache for `num_ctx` positions fed in chunks of at most `max_chunk`.
    pub fn new(cfg: &Config, num_ctx: usize, max_chunk: usize) -> Self {
        let kv_dim = cfg.kv_dim();
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let cap = if cfg.is_sliding(l) {
                    (cfg.sliding_window + max_chunk.max(1) - 1).min(num_ctx)
                } else {
                    num_ctx
                };
                LayerCache {
                    cap,
                    kv_dim,
                    k: vec![0; cap * kv_dim],
                    v: vec![0; cap * kv_dim],
                }
            })
            .collect();
        Self {
            layers,
            num_ctx,
            max_chunk: max_chunk.max(1),
            len: 0,
        }
    }

    pub fn num_ctx(&self) -> usize {
        self.num_ctx
    }

    pub fn max_chunk(&self) -> usize {
        self.max_chunk
    }

    /// Positions written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything (the buffers stay allocated).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    pub fn layer(&self, l: usize) -> &LayerCache {
        &self.layers[l]
    }

    pub fn layer_mut(&mut self, l: usize) -> &mut LayerCache {
        &mut self.layers[l]
    }

    pub fn size_bytes(&self) -> usize {
        self.layers.iter().map(|l| 2 * 2 * l.k.len()).sum()
    }
}
