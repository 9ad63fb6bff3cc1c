//! GGML block formats and their scalar reference code.
//!
//! Weights stay in the bytes of the memory-mapped GGUF file; these functions
//! read them in place. Activations are quantized once per step to the format
//! each weight type dots against (Q8_0 for the 32-wide types, Q8_K for the
//! 256-wide k-quants), the same pairing llama.cpp uses, so integer dot
//! products give the same sums it does. The scalar code here is the
//! reference every SIMD kernel is tested against.

use half::f16;

pub const QK8_0: usize = 32;
pub const QK_K: usize = 256;

/// The weight encodings the CPU kernels read directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum QType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q5_0,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

/// Which activation format a weight type is multiplied with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActFormat {
    /// Plain f32 activations (float weights).
    F32,
    /// 32-element blocks, f16 scale.
    Q8_0,
    /// 256-element blocks, f32 scale and 16-element sums.
    Q8K,
}

impl QType {
    /// Elements per block.
    pub fn block_elems(self) -> usize {
        match self {
            QType::F32 | QType::F16 | QType::BF16 => 1,
            QType::Q4_0 | QType::Q5_0 | QType::Q8_0 => 32,
            QType::Q4K | QType::Q5K | QType::Q6K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QType::F32 => 4,
            QType::F16 | QType::BF16 => 2,
            QType::Q4_0 => 18,
            QType::Q5_0 => 22,
            QType::Q8_0 => 34,
            QType::Q4K => 144,
            QType::Q5K => 176,
            QType::Q6K => 210,
        }
    }

    pub fn act_format(self) -> ActFormat {
        match self {
            QType::F32 | QType::F16 | QType::BF16 => ActFormat::F32,
            QType::Q4_0 | QType::Q5_0 | QType::Q8_0 => ActFormat::Q8_0,
            QType::Q4K | QType::Q5K | QType::Q6K => ActFormat::Q8K,
        }
    }

    /// Bytes of one row of `cols` elements.
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_elems() * self.block_bytes()
    }

    pub fn name(self) -> &'static str {
        match self {
            QType::F32 => "F32",
            QType::F16 => "F16",
            QType::BF16 => "BF16",
            QType::Q4_0 => "Q4_0",
            QType::Q5_0 => "Q5_0",
            QType::Q8_0 => "Q8_0",
            QType::Q4K => "Q4_K",
            QType::Q5K => "Q5_K",
            QType::Q6K => "Q6_K",
        }
    }
}

impl ActFormat {
    pub fn block_elems(self) -> usize {
        match self {
            ActFormat::F32 => 1,
            ActFormat::Q8_0 => QK8_0,
            ActFormat::Q8K => QK_K,
        }
    }

    pub fn block_bytes(self) -> usize {
        match self {
            ActFormat::F32 => 4,
            ActFormat::Q8_0 => Q8_0_BYTES,
            ActFormat::Q8K => Q8K_BYTES,
        }
    }

    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_elems() * self.block_bytes()
    }
}

/// Q8_0 block: f16 scale, 32 signed bytes.
pub const Q8_0_BYTES: usize = 34;
/// Q8_K block: f32 scale, 256 signed bytes, 16 i16 sums of 16 values each.
pub const Q8K_BYTES: usize = 4 + QK_K + 2 * (QK_K / 16);

#[inline]
pub fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

#[inline]
fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn i16_at(b: &[u8], at: usize) -> i32 {
    i16::from_le_bytes([b[at], b[at + 1]]) as i32
}

// ---------------------------------------------------------------------------
// Activation quantization (scalar references).

/// Quantizes `x` (a multiple of 32 long) into Q8_0 blocks the way ggml's
/// x86 code does: scale `amax / 127`, values rounded half to even.
pub fn quantize_q8_0_ref(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(QK8_0).zip(out.chunks_exact_mut(Q8_0_BYTES)) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        ob[..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        for (o, v) in ob[2..].iter_mut().zip(xb) {
            *o = (v * id).round_ties_even() as i8 as u8;
        }
    }
}

/// Quantizes `x` (a multiple of 256 long) into Q8_K blocks, as ggml's
/// `quantize_row_q8_K_ref` does: the scale comes from the signed value of
/// largest magnitude, which maps to -127.
pub fn quantize_q8k_ref(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(Q8K_BYTES)) {
        let mut max = 0f32;
        let mut amax = 0f32;
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            ob.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        let mut q = [0i8; QK_K];
        for (qi, &v) in q.iter_mut().zip(xb) {
            *qi = nearest_int(iscale * v).min(127) as i8;
        }
        ob[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        for (o, &qi) in ob[4..4 + QK_K].iter_mut().zip(&q) {
            *o = qi as u8;
        }
        for (g, chunk) in q.chunks_exact(16).enumerate() {
            let s: i16 = chunk.iter().map(|&v| v as i16).sum();
            let at = 4 + QK_K + 2 * g;
            ob[at..at + 2].copy_from_slice(&s.to_le_bytes());
        }
    }
}

/// ggml's `nearest_int`: round half to even through the float magic number.
#[inline]
fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12582912.0;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

// ---------------------------------------------------------------------------
// Dequantization (scalar). Used for embeddings rows and as test oracles.

/// Dequantizes one row (`out.len()` elements) of type `t` from `row`.
pub fn dequantize_row(t: QType, row: &[u8], out: &mut [f32]) {
    let be = t.block_elems();
    let bb = t.block_bytes();
    match t {
        QType::F32 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        QType::F16 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        QType::BF16 => {
            for (o, c) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        _ => {
            for (b, o) in row.chunks_exact(bb).zip(out.chunks_exact_mut(be)) {
                match t {
                    QType::Q4_0 => deq_q4_0(b, o),
                    QType::Q5_0 => deq_q5_0(b, o),
                    QType::Q8_0 => deq_q8_0(b, o),
                    QType::Q4K => deq_q4k(b, o),
                    QType::Q5K => deq_q5k(b, o),
                    QType::Q6K => deq_q6k(b, o),
                    QType::F32 | QType::F16 | QType::BF16 => unreachable!(),
                }
            }
        }
    }
}

fn deq_q8_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    for (v, &q) in o.iter_mut().zip(&b[2..34]) {
        *v = d * (q as i8) as f32;
    }
}

fn deq_q4_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        o[j] = d * ((qs[j] & 0x0f) as i32 - 8) as f32;
        o[j + 16] = d * ((qs[j] >> 4) as i32 - 8) as f32;
    }
}

#[inline]
pub fn q5_0_values(b: &[u8]) -> [i8; 32] {
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    let mut v = [0i8; 32];
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        v[j] = (((qs[j] & 0x0f) | h0) as i32 - 16) as i8;
        v[j + 16] = (((qs[j] >> 4) | h1) as i32 - 16) as i8;
    }
    v
}

fn deq_q5_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    for (v, q) in o.iter_mut().zip(q5_0_values(b)) {
        *v = d * q as f32;
    }
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K block.
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Unsigned 4-bit values of a Q4_K block, in element order.
#[inline]
fn q4k_values(b: &[u8]) -> [u8; QK_K] {
    let qs = &b[16..144];
    let mut v = [0u8; QK_K];
    for c in 0..4 {
        for l in 0..32 {
            v[c * 64 + l] = qs[c * 32 + l] & 0x0f;
            v[c * 64 + 32 + l] = qs[c * 32 + l] >> 4;
        }
    }
    v
}

fn deq_q4k(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let v = q4k_values(b);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, scales);
        let (d1, m1) = (d * sc as f32, dmin * m as f32);
        for l in 0..32 {
            o[j * 32 + l] = d1 * v[j * 32 + l] as f32 - m1;
        }
    }
}

#[inline]
fn q5k_values(b: &[u8]) -> [u8; QK_K] {
    let qh = &b[16..48];
    let qs = &b[48..176];
    let mut v = [0u8; QK_K];
    for c in 0..4 {
        let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
        for l in 0..32 {
            let hi0 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let hi1 = if qh[l] & u2 != 0 { 16 } else { 0 };
            v[c * 64 + l] = (qs[c * 32 + l] & 0x0f) + hi0;
            v[c * 64 + 32 + l] = (qs[c * 32 + l] >> 4) + hi1;
        }
    }
    v
}

fn deq_q5k(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let v = q5k_values(b);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, scales);
        let (d1, m1) = (d * sc as f32, dmin * m as f32);
        for l in 0..32 {
            o[j * 32 + l] = d1 * v[j * 32 + l] as f32 - m1;
        }
    }
}

/// Signed 6-bit values (-32..31) of a Q6_K block, in element order.
#[inline]
fn q6k_values(b: &[u8]) -> [i8; QK_K] {
    let mut v = [0i8; QK_K];
    for n in 0..2 {
        let ql = &b[n * 64..n * 64 + 64];
        let qh = &b[128 + n * 32..128 + n * 32 + 32];
        let o = &mut v[n * 128..n * 128 + 128];
        for l in 0..32 {
            o[l] = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i8 - 32;
            o[l + 32] = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            o[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            o[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    v
}

fn deq_q6k(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 208);
    let v = q6k_values(b);
    for (i, out) in o.iter_mut().enumerate() {
        let sc = b[192 + i / 16] as i8 as f32;
        *out = d * sc * v[i] as f32;
    }
}

// ---------------------------------------------------------------------------
// Dot products of one weight row with one quantized activation row (scalar
// references). `w` and `a` hold the same number of elements.

/// Dot product of a weight row of type `t` with an activation row already
/// in `t.act_format()`, scalar code.
pub fn vec_dot_ref(t: QType, w: &[u8], a: &[u8]) -> f32 {
    match t {
        QType::F32 | QType::F16 | QType::BF16 => {
            let n = a.len() / 4;
            let mut wf = vec![0f32; n];
            dequantize_row(t, w, &mut wf);
            wf.iter()
                .enumerate()
                .map(|(i, &x)| x * f32_at(a, 4 * i))
                .sum()
        }
        QType::Q8_0 | QType::Q4_0 | QType::Q5_0 => {
            let bb = t.block_bytes();
            let mut sum = 0f32;
            for (wb, ab) in w.chunks_exact(bb).zip(a.chunks_exact(Q8_0_BYTES)) {
                let vals: [i8; 32] = match t {
                    QType::Q8_0 => std::array::from_fn(|i| wb[2 + i] as i8),
                    QType::Q4_0 => std::array::from_fn(|i| {
                        let q = wb[2 + i % 16];
                        (if i < 16 { q & 0x0f } else { q >> 4 }) as i8 - 8
                    }),
                    _ => q5_0_values(wb),
                };
                let s: i32 = vals
                    .iter()
                    .zip(&ab[2..34])
                    .map(|(&x, &y)| x as i32 * (y as i8) as i32)
                    .sum();
                sum += s as f32 * (f16_at(wb, 0) * f16_at(ab, 0));
            }
            sum
        }
        QType::Q4K | QType::Q5K => {
            let bb = t.block_bytes();
            let mut sum = 0f32;
            for (wb, ab) in w.chunks_exact(bb).zip(a.chunks_exact(Q8K_BYTES)) {
                let vals = if t == QType::Q4K {
                    q4k_values(wb)
                } else {
                    q5k_values(wb)
                };
                let scales = &wb[4..16];
                let mut sumi = 0i32;
                let mut sumi_mins = 0i32;
                for j in 0..8 {
                    let (sc, m) = scale_min_k4(j, scales);
                    let s: i32 = (0..32)
                        .map(|l| vals[j * 32 + l] as i32 * (ab[4 + j * 32 + l] as i8) as i32)
                        .sum();
                    sumi += sc as i32 * s;
                    let bs = i16_at(ab, 4 + QK_K + 4 * j) + i16_at(ab, 4 + QK_K + 4 * j + 2);
                    sumi_mins += m as i32 * bs;
                }
                let ad = f32_at(ab, 0);
                sum += f16_at(wb, 0) * ad * sumi as f32 - f16_at(wb, 2) * ad * sumi_mins as f32;
            }
            sum
        }
        QType::Q6K => {
            let mut sum = 0f32;
            for (wb, ab) in w.chunks_exact(210).zip(a.chunks_exact(Q8K_BYTES)) {
                let vals = q6k_values(wb);
                let mut sumi = 0i32;
                for g in 0..16 {
                    let s: i32 = (0..16)
                        .map(|l| vals[g * 16 + l] as i32 * (ab[4 + g * 16 + l] as i8) as i32)
                        .sum();
                    sumi += (wb[192 + g] as i8) as i32 * s;
                }
                sum += f16_at(wb, 208) * f32_at(ab, 0) * sumi as f32;
            }
            sum
        }
    }
}

/// Quantizes an activation row into the format `fmt` (scalar reference).
pub fn quantize_ref(fmt: ActFormat, x: &[f32], out: &mut [u8]) {
    match fmt {
        ActFormat::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        ActFormat::Q8_0 => quantize_q8_0_ref(x, out),
        ActFormat::Q8K => quantize_q8k_ref(x, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::k_quants::{self as kq, GgmlType};

    /// Random block bytes with a sane f16 scale at `scale_at` offsets.
    fn blocks(t: QType, nb: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        let mut v: Vec<u8> = (0..nb * t.block_bytes())
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect();
        let scale = f16::from_f32(0.0123).to_bits().to_le_bytes();
        for b in v.chunks_exact_mut(t.block_bytes()) {
            let at: &[usize] = match t {
                QType::Q4K | QType::Q5K => &[0, 2],
                QType::Q6K => &[208],
                _ => &[0],
            };
            for &a in at {
                b[a..a + 2].copy_from_slice(&scale);
            }
        }
        v
    }

    fn candle_dequant<B: GgmlType>(bytes: &[u8], n: usize) -> Vec<f32> {
        let nb = bytes.len() / std::mem::size_of::<B>();
        let mut blocks: Vec<B> = (0..nb).map(|_| B::zeros()).collect();
        // SAFETY: the block types are repr(C) byte layouts of exactly this size.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                blocks.as_mut_ptr() as *mut u8,
                bytes.len(),
            );
        }
        let mut out = vec![0f32; n];
        B::to_float(&blocks, &mut out);
        out
    }

    /// Our reading of each block layout agrees with candle's (and so with
    /// ggml's) dequantization.
    #[test]
    fn dequantization_matches_candle() {
        for t in [
            QType::Q4_0,
            QType::Q5_0,
            QType::Q8_0,
            QType::Q4K,
            QType::Q5K,
            QType::Q6K,
        ] {
            let nb = 4;
            let n = nb * t.block_elems();
            let bytes = blocks(t, nb, 11);
            let want = match t {
                QType::Q4_0 => candle_dequant::<kq::BlockQ4_0>(&bytes, n),
                QType::Q5_0 => candle_dequant::<kq::BlockQ5_0>(&bytes, n),
                QType::Q8_0 => candle_dequant::<kq::BlockQ8_0>(&bytes, n),
                QType::Q4K => candle_dequant::<kq::BlockQ4K>(&bytes, n),
                QType::Q5K => candle_dequant::<kq::BlockQ5K>(&bytes, n),
                QType::Q6K => candle_dequant::<kq::BlockQ6K>(&bytes, n),
                _ => unreachable!(),
            };
            let mut got = vec![0f32; n];
            dequantize_row(t, &bytes, &mut got);
            for i in 0..n {
                assert!(
                    (got[i] - want[i]).abs() <= 1e-6 * (1.0 + want[i].abs()),
                    "{t:?} element {i}: {} vs {}",
                    got[i],
                    want[i]
                );
            }
        }
    }

    /// Our activation quantization and integer dot products agree with
    /// candle's `vec_dot` (ggml's algorithm) on the same bytes.
    #[test]
    fn dot_products_match_candle() {
        fn check<B: GgmlType>(t: QType) {
            let nb = 4;
            let n = nb * t.block_elems();
            let w = blocks(t, nb, 5);
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                .collect();
            let nwb = w.len() / std::mem::size_of::<B>();
            let mut wb: Vec<B> = (0..nwb).map(|_| B::zeros()).collect();
            unsafe {
                std::ptr::copy_nonoverlapping(w.as_ptr(), wb.as_mut_ptr() as *mut u8, w.len())
            };
            let na = n / B::VecDotType::BLCK_SIZE;
            let mut ab: Vec<B::VecDotType> = (0..na).map(|_| B::VecDotType::zeros()).collect();
            B::VecDotType::from_float(&x, &mut ab);
            let want = B::vec_dot(n, &wb, &ab);
            let fmt = t.act_format();
            let mut a = vec![0u8; fmt.row_bytes(n)];
            quantize_ref(fmt, &x, &mut a);
            let got = vec_dot_ref(t, &w, &a);
            assert!(
                (got - want).abs() <= 2e-3 * (1.0 + want.abs()),
                "{t:?}: {got} vs candle {want}"
            );
        }
        check::<kq::BlockQ4_0>(QType::Q4_0);
        check::<kq::BlockQ5_0>(QType::Q5_0);
        check::<kq::BlockQ8_0>(QType::Q8_0);
        check::<kq::BlockQ4K>(QType::Q4K);
        check::<kq::BlockQ5K>(QType::Q5K);
        check::<kq::BlockQ6K>(QType::Q6K);
    }
}
