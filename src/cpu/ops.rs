//! Element-wise and attention kernels of a Gemma layer, on f32 rows.

use super::Isa;
use half::f16;
use std::sync::OnceLock;

/// `out = x / rms(x) * w`, row by row. The mean of squares is summed in
/// f64, as ggml does, so long rows do not lose precision.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let scale = rms_scale(xr, eps);
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * scale * g;
        }
    }
}

/// In-place version of [`rms_norm`] over rows of `w.len()`.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let n = w.len();
    for xr in x.chunks_exact_mut(n) {
        let scale = rms_scale(xr, eps);
        for (v, &g) in xr.iter_mut().zip(w) {
            *v = *v * scale * g;
        }
    }
}

/// `residual += rms_norm(x) * w`, row by row (Gemma's post-norms).
pub fn rms_norm_add(x: &[f32], w: &[f32], eps: f32, residual: &mut [f32]) {
    let n = w.len();
    for (xr, rr) in x.chunks_exact(n).zip(residual.chunks_exact_mut(n)) {
        let scale = rms_scale(xr, eps);
        for ((r, &v), &g) in rr.iter_mut().zip(xr).zip(w) {
            *r += v * scale * g;
        }
    }
}

#[inline]
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    // As ggml: squares in f32, their sum in f64.
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

/// GELU with the tanh approximation, in f32. `1 + a*x*x` is one fused
/// multiply-add, as GCC contracts it in ggml's table (which decides f16
/// rounding ties in its GELU table).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044_715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (COEF_A * x).mul_add(x, 1.0)).tanh())
}

/// GELU of every f16 value, rounded to f16: the table ggml's CPU backend
/// evaluates GELU with. Using it gives the same activations llama.cpp
/// computes, and a lookup is far cheaper than `tanh`.
fn gelu_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| {
                let x = f16::from_bits(bits).to_f32();
                f16::from_f32(gelu_tanh(x)).to_f32()
            })
            .collect()
    })
}

/// `gate = gelu(gate) * up`, GELU evaluated as ggml does (input and output
/// rounded to f16, identity beyond +-10).
pub fn gelu_mul_inplace(isa: Isa, gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    let n = gate.len().min(up.len());
    let mut bits = [0u16; 64];
    let mut i = 0;
    while i < n {
        let m = (n - i).min(64);
        to_f16_bits(isa, &gate[i..i + m], &mut bits[..m]);
        for j in 0..m {
            let g = gate[i + j];
            let a = if g <= -10.0 {
                0.0
            } else if g >= 10.0 {
                g
            } else {
                table[bits[j] as usize]
            };
            gate[i + j] = a * up[i + j];
        }
        i += m;
    }
}

/// Rounds f32 values to f16 bits.
pub fn to_f16_bits(isa: Isa, x: &[f32], out: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: Avx2 implies F16C (see `Isa::best`).
        unsafe { super::avx2::f32_to_f16(x, out) };
        return;
    }
    let _ = isa;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f16::from_f32(v).to_bits();
    }
}

/// Rounds every value to the nearest f16 (kept as f32).
pub fn round_to_f16(isa: Isa, x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: Avx2 implies F16C (see `Isa::best`).
        unsafe { super::avx2::round_to_f16(x) };
        return;
    }
    let _ = isa;
    for v in x.iter_mut() {
        *v = f16::from_f32(*v).to_f32();
    }
}

/// Rotary-embedding angles for one position, as ggml computes them: the
/// frequency of pair `i` is `base^(-2i/dim)`, built by repeated products.
pub fn rope_cos_sin(
    pos: usize,
    base: f32,
    freq_scale: f32,
    dim: usize,
    cos: &mut [f32],
    sin: &mut [f32],
) {
    let theta_scale = base.powf(-2.0 / dim as f32);
    let mut theta = pos as f32;
    for i in 0..dim / 2 {
        let t = theta * freq_scale;
        cos[i] = t.cos();
        sin[i] = t.sin();
        theta *= theta_scale;
    }
}

/// NEOX-style rotation (pairs `i` and `i + dim/2`) of one head, in place.
#[inline]
pub fn rope_apply(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    let (a, b) = x.split_at_mut(half);
    for i in 0..half {
        let (x0, x1) = (a[i], b[i]);
        // Fused as GCC contracts ggml's `x0*cos - x1*sin` (first product
        // fused, second rounded), so rotated values match to the bit.
        a[i] = x0.mul_add(cos[i], -(x1 * sin[i]));
        b[i] = x0.mul_add(sin[i], x1 * cos[i]);
    }
}

/// Dot product of f32 `q` with an f16 row.
#[inline]
pub fn dot_f16(isa: Isa, q: &[f32], k: &[u16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: see `to_f16_bits`.
        return unsafe { super::avx2::dot_f32_f16(q, k) };
    }
    let _ = isa;
    q.iter()
        .zip(k)
        .map(|(&a, &b)| a * f16::from_bits(b).to_f32())
        .sum()
}

/// `y += alpha * x` for an f16 row `x`.
#[inline]
pub fn axpy_f16(isa: Isa, alpha: f32, x: &[u16], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: see `to_f16_bits`.
        unsafe { super::avx2::axpy_f16(alpha, x, y) };
        return;
    }
    let _ = isa;
    for (o, &b) in y.iter_mut().zip(x) {
        *o += alpha * f16::from_bits(b).to_f32();
    }
}

/// One query's attention over keys and values in f16, with llama.cpp's
/// CPU flash-attention numerics: the query rounded to f16, scores from
/// ggml's f16 dot product, an online softmax, and the weighted values
/// accumulated in an f16 row. Following them bit for bit is what lets our
/// greedy output match llama.cpp's token for token; the cost is a few
/// conversions per key, small next to the matrix products.
pub struct F16Attention<'a> {
    pub isa: Isa,
    /// The query as f16 bits.
    pub q: &'a [u16],
    /// The f16 accumulator, `q.len()` long; scratch.
    pub acc: &'a mut [u16],
}

impl F16Attention<'_> {
    /// Attends over `keys` (each key paired with its value row) and writes
    /// the normalized output into `out`.
    pub fn run<'k>(self, keys: impl Iterator<Item = (&'k [u16], &'k [u16])>, out: &mut [f32]) {
        let isa = self.isa;
        let acc = self.acc;
        acc.fill(0);
        let mut m = f32::NEG_INFINITY;
        let mut sum = 0f32;
        for (k, v) in keys {
            let s = dot_f16_ggml(isa, self.q, k);
            let (mut ms, mut vs) = (1f32, 1f32);
            if s > m {
                let old = m;
                m = s;
                ms = (old - m).exp();
                scale_f16(isa, acc, ms);
            } else {
                vs = (s - m).exp();
            }
            mad_f16(isa, acc, v, vs);
            // One fused multiply-add, as GCC compiles ggml's `S = S*ms + vs`.
            sum = sum.mul_add(ms, vs);
        }
        let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
        for (o, &a) in out.iter_mut().zip(acc.iter()) {
            *o = f16::from_bits(a).to_f32() * inv;
        }
    }
}

/// ggml's AVX2 f16 dot product (see `avx2::dot_f16_ggml`); the scalar
/// path sums in the same lanes and order, so both give identical bits.
pub fn dot_f16_ggml(isa: Isa, x: &[u16], y: &[u16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: Avx2 implies FMA and F16C (see `Isa::best`).
        return unsafe { super::avx2::dot_f16_ggml(x, y) };
    }
    let _ = isa;
    let n = x.len().min(y.len());
    let mut lanes = [0f32; 32];
    let mut i = 0;
    while i + 32 <= n {
        for (l, acc) in lanes.iter_mut().enumerate() {
            let a = f16::from_bits(x[i + l]).to_f32();
            let b = f16::from_bits(y[i + l]).to_f32();
            *acc = a.mul_add(b, *acc);
        }
        i += 32;
    }
    let c: [f32; 8] =
        std::array::from_fn(|l| (lanes[l] + lanes[16 + l]) + (lanes[8 + l] + lanes[24 + l]));
    let t0: [f32; 4] = std::array::from_fn(|l| c[l] + c[4 + l]);
    (t0[0] + t0[1]) + (t0[2] + t0[3])
}

/// `y = f16(y * v)`.
pub fn scale_f16(isa: Isa, y: &mut [u16], v: f32) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: see `dot_f16_ggml`.
        unsafe { super::avx2::scale_f16(y, v) };
        return;
    }
    let _ = isa;
    for a in y.iter_mut() {
        *a = f16::from_f32(f16::from_bits(*a).to_f32() * v).to_bits();
    }
}

/// `y = f16(x * v + y)` with one rounding of the product-sum in f32.
pub fn mad_f16(isa: Isa, y: &mut [u16], x: &[u16], v: f32) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: see `dot_f16_ggml`.
        unsafe { super::avx2::mad_f16(y, x, v) };
        return;
    }
    let _ = isa;
    for (a, &b) in y.iter_mut().zip(x) {
        let r = f16::from_bits(b)
            .to_f32()
            .mul_add(v, f16::from_bits(*a).to_f32());
        *a = f16::from_f32(r).to_bits();
    }
}

/// Keys per tile of the tiled prompt attention (llama.cpp's KV tile).
pub const KV_TILE: usize = 64;

/// ggml's vectorized `expf` approximation (the ARM optimized-routines
/// polynomial), lane for lane: llama.cpp's tiled attention takes its
/// softmax through it, so matching its rounding means using it too.
pub fn expf_ggml(x: f32) -> f32 {
    let r = f32::from_bits(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3fb8_aa3b), r); // log2(e)
    let n = z - r;
    let b = (-n).mul_add(
        f32::from_bits(0x35bf_be8e),                  // 0x1.7f7d1cp-20
        (-n).mul_add(f32::from_bits(0x3f31_7200), x), // 0x1.62e4p-1
    );
    let e = (z.to_bits() as i32).wrapping_shl(23);
    let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits() as i32) as u32);
    let u = b * b;
    let j = f32::from_bits(0x3c07_2010)
        .mul_add(b, f32::from_bits(0x3d2b_9f17))
        .mul_add(
            u,
            f32::from_bits(0x3e2a_af33).mul_add(b, f32::from_bits(0x3eff_fedb)),
        )
        .mul_add(u, f32::from_bits(0x3f7f_fff6) * b);
    if n.abs() <= 126.0 {
        return k.mul_add(j, k);
    }
    let g: i32 = if n <= 0.0 { 0x8200_0000u32 as i32 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000) as u32);
    let s2 = f32::from_bits(e.wrapping_sub(g) as u32);
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// `x[i] = expf_ggml(x[i] - max)`; returns the sum as ggml's
/// `ggml_vec_soft_max_f32` forms it (eight-lane float sums added in f64).
pub fn softmax_tile(isa: Isa, x: &mut [f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: Avx2 implies FMA (see `Isa::best`).
        return unsafe { super::avx2::softmax_tile(x, max) };
    }
    let _ = isa;
    let mut sum = 0f64;
    for c in x.chunks_exact_mut(8) {
        for v in c.iter_mut() {
            *v = expf_ggml(*v - max);
        }
        let t: [f32; 4] = std::array::from_fn(|l| c[4 + l] + c[l]);
        sum += ((t[0] + t[2]) + (t[1] + t[3])) as f64;
    }
    sum
}

/// State of one query row of the tiled attention.
#[derive(Debug, Clone, Copy)]
pub struct TiledRow {
    pub max: f32,
    pub sum: f32,
}

impl Default for TiledRow {
    fn default() -> Self {
        Self {
            max: f32::NEG_INFINITY,
            sum: 0.0,
        }
    }
}

/// One KV tile of llama.cpp's tiled flash attention (prompt batches of 64+
/// queries): f32 queries, scores as sequential fused products, per-tile
/// max and softmax, f32 value accumulation. `kt` is the tile's keys
/// transposed (`hd` x KV_TILE), `vt` its values (KV_TILE x `hd`), both f32;
/// `allowed(i)` says whether key `i` of the tile is visible to this query.
#[allow(clippy::too_many_arguments)]
pub fn tiled_attention_step(
    isa: Isa,
    q: &[f32],
    kt: &[f32],
    vt: &[f32],
    allowed: impl Fn(usize) -> bool,
    kq: &mut [f32; KV_TILE],
    row: &mut TiledRow,
    acc: &mut [f32],
) {
    tiled_attention_group(
        isa,
        [q],
        kt,
        vt,
        |_, i| allowed(i),
        std::slice::from_mut(kq),
        std::slice::from_mut(row),
        [acc],
    );
}

/// [`tiled_attention_step`] for `G` queries (up to four) over the same
/// tile: each key and value is loaded once for all of them, which is what
/// bounds the step (a tile is 2 x 64 KiB at head size 256, beyond L1).
/// Every query's numbers are those [`tiled_attention_step`] gives it.
#[allow(clippy::too_many_arguments)]
pub fn tiled_attention_group<const G: usize>(
    isa: Isa,
    q: [&[f32]; G],
    kt: &[f32],
    vt: &[f32],
    allowed: impl Fn(usize, usize) -> bool,
    kq: &mut [[f32; KV_TILE]],
    rows: &mut [TiledRow],
    mut acc: [&mut [f32]; G],
) {
    let hd = q[0].len();
    scores_group(isa, &q, kt, kq);
    let mut live = [false; G];
    for g in 0..G {
        let (kq, row, acc) = (&mut kq[g], &mut rows[g], &mut *acc[g]);
        for (i, v) in kq.iter_mut().enumerate() {
            if !allowed(g, i) {
                *v = f32::NEG_INFINITY;
            }
        }
        let tile_max = kq
            .iter()
            .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        if tile_max == f32::NEG_INFINITY {
            // Nothing visible: probabilities of zero leave `acc` as it is.
            kq.fill(0.0);
            continue;
        }
        live[g] = true;
        let new_max = row.max.max(tile_max);
        if new_max > row.max {
            let ms = (row.max - new_max).exp();
            acc.iter_mut().for_each(|a| *a *= ms);
            row.sum *= ms;
        }
        row.max = new_max;
        let s = softmax_tile(isa, kq, new_max);
        row.sum = (row.sum as f64 + s) as f32;
    }
    if !live.contains(&true) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 && hd.is_multiple_of(16) {
        // SAFETY: Avx2 implies FMA; `acc[g]` and each value row hold `hd`
        // floats, a multiple of 16; every `kq[g]` holds KV_TILE.
        unsafe {
            super::avx2::values_group::<G>(
                std::array::from_fn(|g| acc[g].as_mut_ptr()),
                vt.as_ptr(),
                hd,
                std::array::from_fn(|g| kq[g].as_ptr()),
            )
        };
        return;
    }
    for g in 0..G {
        for (i, &p) in kq[g].iter().enumerate() {
            if p != 0.0 {
                fma_row(isa, acc[g], &vt[i * hd..(i + 1) * hd], p);
            }
        }
    }
}

/// `kq[g][i] = sum_d q[g][d] * kt[d][i]`, each a chain of fused
/// multiply-adds in `d` order.
fn scores_group<const G: usize>(isa: Isa, q: &[&[f32]; G], kt: &[f32], kq: &mut [[f32; KV_TILE]]) {
    let hd = q[0].len();
    assert!(kt.len() >= hd * KV_TILE && kq.len() >= G);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: see `softmax_tile`; sizes checked above.
        unsafe {
            super::avx2::scores_group::<G>(
                std::array::from_fn(|g| q[g].as_ptr()),
                hd,
                kt.as_ptr(),
                std::array::from_fn(|g| kq[g].as_mut_ptr()),
            )
        };
        return;
    }
    let _ = isa;
    for g in 0..G {
        let kq = &mut kq[g];
        kq.fill(0.0);
        for (d, &qd) in q[g].iter().enumerate() {
            for (i, v) in kq.iter_mut().enumerate() {
                *v = kt[d * KV_TILE + i].mul_add(qd, *v);
            }
        }
    }
}

/// `acc = fma(v, p, acc)` element-wise.
fn fma_row(isa: Isa, acc: &mut [f32], v: &[f32], p: f32) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: see `softmax_tile`.
        unsafe { super::avx2::fma_row(acc, v, p) };
        return;
    }
    let _ = isa;
    for (a, &x) in acc.iter_mut().zip(v) {
        *a = x.mul_add(p, *a);
    }
}

/// Softmax in place; returns nothing, leaves probabilities summing to 1.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_table_tracks_the_formula() {
        for &x in &[-9.5f32, -3.0, -0.5, 0.0, 0.1, 1.0, 2.5, 9.9] {
            let mut out = [x];
            gelu_mul_inplace(Isa::best(), &mut out, &[1.0]);
            let want = gelu_tanh(x);
            assert!(
                (out[0] - want).abs() <= 2e-3 * (1.0 + want.abs()),
                "{x}: {} vs {want}",
                out[0]
            );
        }
        let mut out = [-12.0f32, 12.0];
        gelu_mul_inplace(Isa::best(), &mut out, &[2.0, 2.0]);
        assert_eq!(out, [0.0, 24.0]);
    }

    #[test]
    fn rms_norm_unit_rows() {
        let x = [3.0f32, 4.0, 0.0, 0.0];
        let mut out = [0f32; 4];
        rms_norm(&x, &[1.0, 1.0, 2.0, 1.0], 0.0, &mut out);
        let r = (25.0f32 / 4.0).sqrt();
        assert!((out[0] - 3.0 / r).abs() < 1e-6 && (out[1] - 4.0 / r).abs() < 1e-6);
        let mut res = [1.0f32; 4];
        rms_norm_add(&x, &[1.0; 4], 0.0, &mut res);
        assert!((res[1] - (1.0 + 4.0 / r)).abs() < 1e-6);
    }

    #[test]
    fn rope_rotates_pairs_by_position() {
        let dim = 8;
        let (mut c, mut s) = (vec![0f32; 4], vec![0f32; 4]);
        rope_cos_sin(0, 10000.0, 1.0, dim, &mut c, &mut s);
        let mut x: Vec<f32> = (0..dim).map(|i| i as f32).collect();
        let before = x.clone();
        rope_apply(&mut x, &c, &s);
        assert_eq!(x, before, "position 0 is the identity");
        rope_cos_sin(3, 10000.0, 1.0, dim, &mut c, &mut s);
        rope_apply(&mut x, &c, &s);
        // Pair 0 has frequency 1: rotated by 3 radians; norms are preserved.
        let (a, b) = (before[0], before[4]);
        assert!((x[0] - (a * 3f32.cos() - b * 3f32.sin())).abs() < 1e-5);
        let n0: f32 = before.iter().map(|v| v * v).sum();
        let n1: f32 = x.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-3);
    }

    #[test]
    fn f16_attention_kernels_are_bit_identical_to_scalar() {
        let bits = |seed| -> Vec<u16> {
            crate::cpu::tests::randn(256, seed)
                .iter()
                .map(|&v| f16::from_f32(v).to_bits())
                .collect()
        };
        let (x, y) = (bits(1), bits(2));
        let a = dot_f16_ggml(Isa::Scalar, &x, &y);
        let b = dot_f16_ggml(Isa::best(), &x, &y);
        assert_eq!(a.to_bits(), b.to_bits());
        let exact: f64 = x
            .iter()
            .zip(&y)
            .map(|(&p, &q)| f16::from_bits(p).to_f64() * f16::from_bits(q).to_f64())
            .sum();
        assert!((a as f64 - exact).abs() < 1e-3 * (1.0 + exact.abs()));
        let (mut u, mut w) = (x.clone(), x.clone());
        mad_f16(Isa::Scalar, &mut u, &y, 0.37);
        mad_f16(Isa::best(), &mut w, &y, 0.37);
        assert_eq!(u, w);
        scale_f16(Isa::Scalar, &mut u, 0.61);
        scale_f16(Isa::best(), &mut w, 0.61);
        assert_eq!(u, w);
    }

    #[test]
    fn f16_attention_is_a_softmax_weighted_mean() {
        // Keys that all score the same give the plain mean of the values.
        let hd = 32;
        let q: Vec<u16> = vec![f16::from_f32(0.0).to_bits(); hd];
        let keys: Vec<Vec<u16>> = (0..3)
            .map(|i| vec![f16::from_f32(i as f32).to_bits(); hd])
            .collect();
        let vals: Vec<Vec<u16>> = (0..3)
            .map(|i| vec![f16::from_f32(i as f32 + 1.0).to_bits(); hd])
            .collect();
        for isa in [Isa::Scalar, Isa::best()] {
            let mut acc = vec![0u16; hd];
            let mut out = vec![0f32; hd];
            F16Attention {
                isa,
                q: &q,
                acc: &mut acc,
            }
            .run(
                keys.iter()
                    .map(|k| k.as_slice())
                    .zip(vals.iter().map(|v| v.as_slice())),
                &mut out,
            );
            assert!(out.iter().all(|&o| (o - 2.0).abs() < 1e-3), "{out:?}");
        }
        // A dominant key takes (almost) all the weight.
        let q: Vec<u16> = vec![f16::from_f32(1.0).to_bits(); hd];
        let mut acc = vec![0u16; hd];
        let mut out = vec![0f32; hd];
        F16Attention {
            isa: Isa::best(),
            q: &q,
            acc: &mut acc,
        }
        .run(
            keys.iter()
                .map(|k| k.as_slice())
                .zip(vals.iter().map(|v| v.as_slice())),
            &mut out,
        );
        assert!(out.iter().all(|&o| (o - 3.0).abs() < 1e-2), "{out:?}");
    }

    #[test]
    fn ggml_exp_is_accurate_and_simd_matches_scalar() {
        for &x in &[
            -200.0f32, -130.0, -87.0, -20.5, -3.3, -1.0, -0.1, 0.0, 0.5, 2.0, 10.0, 80.0,
        ] {
            let e = expf_ggml(x) as f64;
            let want = (x as f64).exp();
            assert!(
                (e - want).abs() <= 1e-6 * want.max(1e-30) + 1e-37,
                "{x}: {e} vs {want}"
            );
        }
        assert_eq!(expf_ggml(f32::NEG_INFINITY), 0.0);
        let mut a: Vec<f32> = crate::cpu::tests::randn(64, 8)
            .iter()
            .map(|v| v * 10.0)
            .collect();
        a[3] = f32::NEG_INFINITY;
        let mut b = a.clone();
        let sa = softmax_tile(Isa::Scalar, &mut a, 3.0);
        let sb = softmax_tile(Isa::best(), &mut b, 3.0);
        assert_eq!(sa.to_bits(), sb.to_bits());
        assert_eq!(a, b);
        assert_eq!(a[3], 0.0);
    }

    #[test]
    fn tiled_attention_matches_scalar_and_softmax() {
        let hd = 16;
        let q = crate::cpu::tests::randn(hd, 1);
        let k = crate::cpu::tests::randn(KV_TILE * hd, 2);
        let v = crate::cpu::tests::randn(KV_TILE * hd, 3);
        let mut kt = vec![0f32; hd * KV_TILE];
        for i in 0..KV_TILE {
            for d in 0..hd {
                kt[d * KV_TILE + i] = k[i * hd + d];
            }
        }
        let allowed = |i: usize| !i.is_multiple_of(3);
        let mut outs = Vec::new();
        for isa in [Isa::Scalar, Isa::best()] {
            let mut kq = [0f32; KV_TILE];
            let mut row = TiledRow::default();
            let mut acc = vec![0f32; hd];
            tiled_attention_step(isa, &q, &kt, &v, allowed, &mut kq, &mut row, &mut acc);
            acc.iter_mut().for_each(|a| *a /= row.sum);
            outs.push(acc);
        }
        assert_eq!(outs[0], outs[1]);
        // Against a plain softmax-weighted sum.
        let scores: Vec<f64> = (0..KV_TILE)
            .map(|i| (0..hd).map(|d| (q[d] * k[i * hd + d]) as f64).sum())
            .collect();
        let m = (0..KV_TILE)
            .filter(|&i| allowed(i))
            .map(|i| scores[i])
            .fold(f64::MIN, f64::max);
        let w: Vec<f64> = (0..KV_TILE)
            .map(|i| {
                if allowed(i) {
                    (scores[i] - m).exp()
                } else {
                    0.0
                }
            })
            .collect();
        let z: f64 = w.iter().sum();
        for d in 0..hd {
            let want: f64 = (0..KV_TILE)
                .map(|i| w[i] * v[i * hd + d] as f64)
                .sum::<f64>()
                / z;
            assert!((outs[0][d] as f64 - want).abs() < 1e-4, "{d}");
        }
    }

    #[test]
    fn grouped_tiled_attention_is_bit_identical_to_one_query_at_a_time() {
        let hd = 32;
        let k = crate::cpu::tests::randn(KV_TILE * hd, 12);
        let v = crate::cpu::tests::randn(KV_TILE * hd, 13);
        let mut kt = vec![0f32; hd * KV_TILE];
        for i in 0..KV_TILE {
            for d in 0..hd {
                kt[d * KV_TILE + i] = k[i * hd + d];
            }
        }
        let qs: Vec<Vec<f32>> = (0..4)
            .map(|g| crate::cpu::tests::randn(hd, 20 + g))
            .collect();
        // Causal-like masks of different lengths; query 3 sees nothing.
        let allowed = |g: usize, i: usize| g < 3 && i <= 20 * g + 5;
        for isa in [Isa::Scalar, Isa::best()] {
            // Two tiles in a row, so the running max and rescale are used.
            let mut alone = Vec::new();
            for (g, q) in qs.iter().enumerate() {
                let mut kq = [0f32; KV_TILE];
                let mut row = TiledRow::default();
                let mut acc = vec![0.5f32; hd];
                for _ in 0..2 {
                    tiled_attention_step(
                        isa,
                        q,
                        &kt,
                        &v,
                        |i| allowed(g, i),
                        &mut kq,
                        &mut row,
                        &mut acc,
                    );
                }
                alone.push((row.max.to_bits(), row.sum.to_bits(), acc));
            }
            let mut kq = [[0f32; KV_TILE]; 4];
            let mut rows = [TiledRow::default(); 4];
            let mut accs = vec![vec![0.5f32; hd]; 4];
            for _ in 0..2 {
                let [a0, a1, a2, a3] = &mut accs[..] else {
                    unreachable!()
                };
                tiled_attention_group::<4>(
                    isa,
                    [&qs[0], &qs[1], &qs[2], &qs[3]],
                    &kt,
                    &v,
                    allowed,
                    &mut kq,
                    &mut rows,
                    [a0, a1, a2, a3],
                );
            }
            for g in 0..4 {
                assert_eq!(alone[g].0, rows[g].max.to_bits(), "{isa:?} {g}");
                assert_eq!(alone[g].1, rows[g].sum.to_bits(), "{isa:?} {g}");
                let want: Vec<u32> = alone[g].2.iter().map(|x| x.to_bits()).collect();
                let got: Vec<u32> = accs[g].iter().map(|x| x.to_bits()).collect();
                assert_eq!(want, got, "{isa:?} {g}");
            }
        }
    }

    #[test]
    fn f16_rounding_matches_scalar() {
        let x = crate::cpu::tests::randn(100, 3);
        let mut a = x.clone();
        let mut b = x.clone();
        round_to_f16(Isa::Scalar, &mut a);
        round_to_f16(Isa::best(), &mut b);
        assert_eq!(a, b);
        assert!(
            a.iter().zip(&x).any(|(r, v)| r != v),
            "rounding changes something"
        );
    }

    #[test]
    fn f16_kernels_match_scalar() {
        let q = crate::cpu::tests::randn(256, 5);
        let k: Vec<u16> = crate::cpu::tests::randn(256, 6)
            .iter()
            .map(|&v| f16::from_f32(v).to_bits())
            .collect();
        let a = dot_f16(Isa::Scalar, &q, &k);
        let b = dot_f16(Isa::best(), &q, &k);
        assert!((a - b).abs() < 1e-3 * (1.0 + a.abs()));
        let mut y1 = q.clone();
        let mut y2 = q.clone();
        axpy_f16(Isa::Scalar, 0.3, &k, &mut y1);
        axpy_f16(Isa::best(), 0.3, &k, &mut y2);
        for (u, v) in y1.iter().zip(&y2) {
            assert!((u - v).abs() < 1e-5);
        }
    }
}
