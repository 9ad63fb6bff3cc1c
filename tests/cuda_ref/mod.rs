//! CPU references for the CUDA kernels that the CPU engine has no single
//! function for: the f16 KV cache in the kernels' layout (sequences x
//! slots, ring slots on sliding layers), attention over it with a window
//! and grouped heads (llama.cpp's f16 numerics through
//! `cpu::ops::F16Attention`, and exact f64), and the per-head norm + rope
//! of Q and K composed from `cpu::ops`. Shared by tests/cuda_kernels.rs
//! (GPU against these) and tests/cuda_reference.rs (these against each
//! other, no GPU needed).
#![allow(dead_code)]

use chimera::cpu::{ops, Isa};
use half::f16;

/// SplitMix64: deterministic test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Roughly normal (sum of uniforms), mean 0, deviation `scale`.
    pub fn normal(&mut self, scale: f32) -> f32 {
        let s: f32 = (0..4).map(|_| self.unit()).sum::<f32>() - 2.0;
        s * scale * 1.732
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal(scale)).collect()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Keys and values as `kv_append_f16` stores them: f16 bits,
/// [sequence][slot][kv_dim], position p of a sequence in slot p % cap.
pub struct RefCache {
    pub seqs: usize,
    pub cap: usize,
    pub kv_dim: usize,
    pub k: Vec<u16>,
    pub v: Vec<u16>,
}

impl RefCache {
    pub fn new(seqs: usize, cap: usize, kv_dim: usize) -> Self {
        Self {
            seqs,
            cap,
            kv_dim,
            k: vec![0; seqs * cap * kv_dim],
            v: vec![0; seqs * cap * kv_dim],
        }
    }

    fn at(&self, seq: usize, pos: usize) -> usize {
        (seq * self.cap + pos % self.cap) * self.kv_dim
    }

    /// Appends rows of keys and values (rows x kv_dim) at `pos`/`seq`.
    pub fn append(&mut self, k: &[f32], v: &[f32], pos: &[usize], seq: &[usize]) {
        let d = self.kv_dim;
        for r in 0..pos.len() {
            let at = self.at(seq[r], pos[r]);
            for c in 0..d {
                self.k[at + c] = f16::from_f32(k[r * d + c]).to_bits();
                self.v[at + c] = f16::from_f32(v[r * d + c]).to_bits();
            }
        }
    }

    pub fn k_row(&self, seq: usize, pos: usize) -> &[u16] {
        let at = self.at(seq, pos);
        &self.k[at..at + self.kv_dim]
    }

    pub fn v_row(&self, seq: usize, pos: usize) -> &[u16] {
        let at = self.at(seq, pos);
        &self.v[at..at + self.kv_dim]
    }
}

/// The attention problem the kernels solve.
#[derive(Debug, Clone, Copy)]
pub struct AttnCase {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// 0 = global.
    pub window: usize,
}

impl AttnCase {
    /// First key position a query at `pos` sees (as `model::gemma3`).
    pub fn lowest_key(&self, pos: usize) -> usize {
        if self.window > 0 {
            (pos + 1).saturating_sub(self.window)
        } else {
            0
        }
    }
}

/// llama.cpp's CPU numerics (`cpu::ops::F16Attention`, as the CPU engine
/// runs decode steps): each row's query (rows x n_heads*hd, already
/// scaled) over its sequence's keys `lowest_key(p)..=p`.
pub fn attention_f16(
    q: &[f32],
    cache: &RefCache,
    pos: &[usize],
    seq: &[usize],
    c: &AttnCase,
) -> Vec<f32> {
    let (hd, nq) = (c.head_dim, c.n_heads);
    let group = nq / c.n_kv_heads;
    let mut out = vec![0f32; q.len()];
    let (mut q16, mut acc) = (vec![0u16; hd], vec![0u16; hd]);
    for r in 0..pos.len() {
        for h in 0..nq {
            let kvh = h / group;
            let at = (r * nq + h) * hd;
            ops::to_f16_bits(Isa::best(), &q[at..at + hd], &mut q16);
            let keys = (c.lowest_key(pos[r])..=pos[r]).map(|j| {
                (
                    &cache.k_row(seq[r], j)[kvh * hd..(kvh + 1) * hd],
                    &cache.v_row(seq[r], j)[kvh * hd..(kvh + 1) * hd],
                )
            });
            ops::F16Attention {
                isa: Isa::best(),
                q: &q16,
                acc: &mut acc,
            }
            .run(keys, &mut out[at..at + hd]);
        }
    }
    out
}

/// The same attention in f64, from the f16-rounded query, keys and values
/// (what an f32-accumulating kernel approximates).
pub fn attention_f64(
    q: &[f32],
    cache: &RefCache,
    pos: &[usize],
    seq: &[usize],
    c: &AttnCase,
) -> Vec<f32> {
    let (hd, nq) = (c.head_dim, c.n_heads);
    let group = nq / c.n_kv_heads;
    let h16 = |b: u16| f16::from_bits(b).to_f64();
    let mut out = vec![0f32; q.len()];
    for r in 0..pos.len() {
        for h in 0..nq {
            let kvh = h / group;
            let at = (r * nq + h) * hd;
            let qr: Vec<f64> = q[at..at + hd]
                .iter()
                .map(|&x| f16::from_f32(x).to_f64())
                .collect();
            let keys: Vec<usize> = (c.lowest_key(pos[r])..=pos[r]).collect();
            let scores: Vec<f64> = keys
                .iter()
                .map(|&j| {
                    let k = &cache.k_row(seq[r], j)[kvh * hd..(kvh + 1) * hd];
                    qr.iter().zip(k).map(|(&a, &b)| a * h16(b)).sum()
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let z: f64 = w.iter().sum();
            for d in 0..hd {
                let mut a = 0f64;
                for (i, &j) in keys.iter().enumerate() {
                    a += w[i] * h16(cache.v_row(seq[r], j)[kvh * hd + d]);
                }
                out[at + d] = (a / z) as f32;
            }
        }
    }
    out
}

/// Rotary embedding of one layer, as the CPU engine does it.
#[derive(Debug, Clone, Copy)]
pub struct RopeCase<'a> {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub base: f32,
    pub freq_scale: f32,
    pub q_scale: f32,
    pub q_norm: Option<&'a [f32]>,
    pub k_norm: Option<&'a [f32]>,
    pub norm_offset: f32,
    pub eps: f32,
}

impl RopeCase<'_> {
    pub fn theta_scale(&self) -> f32 {
        self.base.powf(-2.0 / self.head_dim as f32)
    }
}

/// `model::gemma3`'s per-head steps, composed from `cpu::ops`: RMSNorm of
/// each head (weight + offset), NEOX rotation at the row's position,
/// queries scaled afterwards.
pub fn rope(q: &mut [f32], k: &mut [f32], pos: &[usize], c: &RopeCase) {
    let hd = c.head_dim;
    let half = hd / 2;
    let with_offset =
        |w: Option<&[f32]>| w.map(|w| w.iter().map(|x| x + c.norm_offset).collect::<Vec<f32>>());
    let (qn, kn) = (with_offset(c.q_norm), with_offset(c.k_norm));
    let (mut cos, mut sin) = (vec![0f32; half], vec![0f32; half]);
    for (r, &p) in pos.iter().enumerate() {
        ops::rope_cos_sin(p, c.base, c.freq_scale, hd, &mut cos, &mut sin);
        for head in q[r * c.n_heads * hd..(r + 1) * c.n_heads * hd].chunks_exact_mut(hd) {
            if let Some(w) = &qn {
                ops::rms_norm_inplace(head, w, c.eps);
            }
            ops::rope_apply(head, &cos, &sin);
            head.iter_mut().for_each(|v| *v *= c.q_scale);
        }
        for head in k[r * c.n_kv_heads * hd..(r + 1) * c.n_kv_heads * hd].chunks_exact_mut(hd) {
            if let Some(w) = &kn {
                ops::rms_norm_inplace(head, w, c.eps);
            }
            ops::rope_apply(head, &cos, &sin);
        }
    }
}

/// Largest |a - b| / (1 + |b|).
pub fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f32::max)
}

/// Distance in units in the last place (0 for equal bits; NaN-free input).
pub fn ulps(a: f32, b: f32) -> u32 {
    let key = |x: f32| {
        let b = x.to_bits() as i32;
        if b < 0 {
            i32::MIN - b
        } else {
            b
        }
    };
    key(a).abs_diff(key(b))
}
