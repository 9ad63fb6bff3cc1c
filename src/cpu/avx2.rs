//! AVX2 + FMA + F16C kernels. Every function here is `unsafe` because it
//! must only run after `is_x86_feature_detected!` said yes (see
//! `cpu::Isa::detect`); each has a scalar twin in `quant.rs` or `ops.rs`
//! that the tests compare it against.
#![allow(clippy::missing_safety_doc)]

use super::quant::{Q8K_BYTES, Q8_0_BYTES, QK_K};
use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_load(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Signed bytes times signed bytes, summed in pairs then quads: 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8(x: __m256i, y: __m256i) -> __m256i {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
}

/// 32 nibbles of 16 bytes: low nibbles first, then high nibbles.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles_32(p: *const u8) -> __m256i {
    let tmp = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_insertf128_si256(_mm256_castsi128_si256(tmp), _mm_srli_epi16(tmp, 4), 1);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

/// Spreads 32 bits into 32 bytes: 0xff where the bit is set.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bits_to_bytes(x: u32) -> __m256i {
    let x32 = _mm256_set1_epi32(x as i32);
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0x0000000000000000,
    );
    let bytes = _mm256_shuffle_epi8(x32, shuf);
    let mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, mask), _mm256_set1_epi64x(-1))
}

// ---------------------------------------------------------------------------
// Activation quantization.

/// Q8_0 quantization, bit-identical to `quant::quantize_q8_0_ref`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    let nb = x.len() / 32;
    debug_assert!(out.len() >= nb * Q8_0_BYTES);
    let sign = _mm256_set1_ps(-0.0);
    for i in 0..nb {
        let p = x.as_ptr().add(i * 32);
        let v0 = _mm256_loadu_ps(p);
        let v1 = _mm256_loadu_ps(p.add(8));
        let v2 = _mm256_loadu_ps(p.add(16));
        let v3 = _mm256_loadu_ps(p.add(24));
        let m = _mm256_max_ps(
            _mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
            _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)),
        );
        let m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        let amax = _mm_cvtss_f32(m4);
        let d = amax / 127.0;
        let o = out.as_mut_ptr().add(i * Q8_0_BYTES);
        let dh =
            _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(d), _MM_FROUND_TO_NEAREST_INT), 0) as u16;
        (o as *mut u16).write_unaligned(dh);
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        const R: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, id), R));
        let i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, id), R));
        let i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, id), R));
        let i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, id), R));
        // Packing interleaves 128-bit lanes; the permute puts them back in order.
        let p01 = _mm256_packs_epi32(i0, i1);
        let p23 = _mm256_packs_epi32(i2, i3);
        let packed = _mm256_packs_epi16(p01, p23);
        let fixed = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(o.add(2) as *mut __m256i, fixed);
    }
}

// ---------------------------------------------------------------------------
// Dot products: one weight row against one activation row, `nb` blocks.

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q8_0(w: &[u8], a: &[u8], nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    for i in 0..nb {
        let wb = wp.add(i * 34);
        let ab = ap.add(i * Q8_0_BYTES);
        let d = _mm256_set1_ps(f16_load(wb) * f16_load(ab));
        let qx = _mm256_loadu_si256(wb.add(2) as *const __m256i);
        let qy = _mm256_loadu_si256(ab.add(2) as *const __m256i);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(qx, qy)), acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4_0(w: &[u8], a: &[u8], nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let off = _mm256_set1_epi8(8);
    for i in 0..nb {
        let wb = wp.add(i * 18);
        let ab = ap.add(i * Q8_0_BYTES);
        let d = _mm256_set1_ps(f16_load(wb) * f16_load(ab));
        let qx = _mm256_sub_epi8(nibbles_32(wb.add(2)), off);
        let qy = _mm256_loadu_si256(ab.add(2) as *const __m256i);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(qx, qy)), acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5_0(w: &[u8], a: &[u8], nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let f0 = _mm256_set1_epi8(0xf0u8 as i8);
    for i in 0..nb {
        let wb = wp.add(i * 22);
        let ab = ap.add(i * Q8_0_BYTES);
        let d = _mm256_set1_ps(f16_load(wb) * f16_load(ab));
        let qh = (wb.add(2) as *const u32).read_unaligned();
        // (nibble | high << 4) - 16 is the nibble itself when the high bit is
        // set and the nibble with 0xf0 (as a negative byte) when it is not.
        let hi = _mm256_andnot_si256(bits_to_bytes(qh), f0);
        let qx = _mm256_or_si256(nibbles_32(wb.add(6)), hi);
        let qy = _mm256_loadu_si256(ab.add(2) as *const __m256i);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(qx, qy)), acc);
    }
    hsum_ps(acc)
}

/// The eight 6-bit scales and mins of a Q4_K/Q5_K block.
#[inline]
unsafe fn k4_scales(s: *const u8) -> ([u8; 8], [u8; 8]) {
    let q = std::slice::from_raw_parts(s, 12);
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        let (a, b) = super::quant::scale_min_k4(j, q);
        sc[j] = a;
        mn[j] = b;
    }
    (sc, mn)
}

/// Adds `-dmin * mins . bsums` to the four lanes of `acc_m` the way ggml's
/// AVX2 k-quant dots do (pairs of sub-blocks per lane), so the float
/// rounding matches llama.cpp's.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn q8k_mins(acc_m: __m128, ab: *const u8, mins: &[u8; 8], dmin: f32) -> __m128 {
    let bs = ab.add(4 + QK_K) as *const i16;
    let mut prod = [0i32; 4];
    for (k, p) in prod.iter_mut().enumerate() {
        for j in [2 * k, 2 * k + 1] {
            let pair =
                bs.add(2 * j).read_unaligned() as i32 + bs.add(2 * j + 1).read_unaligned() as i32;
            *p += mins[j] as i32 * pair;
        }
    }
    let prod = _mm_cvtepi32_ps(_mm_loadu_si128(prod.as_ptr() as *const __m128i));
    _mm_fmadd_ps(_mm_set1_ps(-dmin), prod, acc_m)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum_ps4(v: __m128) -> f32 {
    let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Q4_K rows. llama.cpp runs Q4_K through its repacked x86 kernels, which
/// add each block's exact integer total to one float accumulator (and the
/// mins to another); summing the same way gives its results to the bit.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4k(w: &[u8], a: &[u8], nb: usize) -> f32 {
    let mut acc = 0f32;
    let mut acc_m = 0f32;
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let m4 = _mm256_set1_epi8(0x0f);
    for i in 0..nb {
        let wb = wp.add(i * 144);
        let ab = ap.add(i * Q8K_BYTES);
        let ad = (ab as *const f32).read_unaligned();
        let (sc, mn) = k4_scales(wb.add(4));
        let mut sumi = _mm256_setzero_si256();
        let qs = wb.add(16);
        let q8 = ab.add(4);
        for j in 0..4 {
            let bits = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
            let lo = _mm256_and_si256(bits, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            let yl = _mm256_loadu_si256(q8.add(64 * j) as *const __m256i);
            let yh = _mm256_loadu_si256(q8.add(64 * j + 32) as *const __m256i);
            let pl = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, yl),
                _mm256_set1_epi16(sc[2 * j] as i16),
            );
            let ph = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, yh),
                _mm256_set1_epi16(sc[2 * j + 1] as i16),
            );
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        let total = hsum_epi32(sumi);
        acc = (total as f32).mul_add(f16_load(wb) * ad, acc);
        acc_m = (q8k_min_total(ab, &mn) as f32).mul_add(f16_load(wb.add(2)) * ad, acc_m);
    }
    acc - acc_m
}

/// Q4_K rows as llama.cpp's repacked GEMM (activation rows in groups of
/// four) sums them: one float step per 64 elements instead of per block.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q4k_grouped(w: &[u8], a: &[u8], nb: usize) -> f32 {
    let mut acc = 0f32;
    let mut acc_m = 0f32;
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let m4 = _mm256_set1_epi8(0x0f);
    for i in 0..nb {
        let wb = wp.add(i * 144);
        let ab = ap.add(i * Q8K_BYTES);
        let ad = (ab as *const f32).read_unaligned();
        let (d, dmin) = (f16_load(wb) * ad, f16_load(wb.add(2)) * ad);
        let (sc, mn) = k4_scales(wb.add(4));
        let bs = ab.add(4 + QK_K) as *const i16;
        let qs = wb.add(16);
        let q8 = ab.add(4);
        for j in 0..4 {
            let bits = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
            let lo = _mm256_and_si256(bits, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            let yl = _mm256_loadu_si256(q8.add(64 * j) as *const __m256i);
            let yh = _mm256_loadu_si256(q8.add(64 * j + 32) as *const __m256i);
            let pl = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, yl),
                _mm256_set1_epi16(sc[2 * j] as i16),
            );
            let ph = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, yh),
                _mm256_set1_epi16(sc[2 * j + 1] as i16),
            );
            let isb = hsum_epi32(_mm256_add_epi32(pl, ph));
            acc = (isb as f32).mul_add(d, acc);
            let msb: i32 = [2 * j, 2 * j + 1]
                .iter()
                .map(|&k| {
                    let pair = bs.add(2 * k).read_unaligned() as i32
                        + bs.add(2 * k + 1).read_unaligned() as i32;
                    mn[k] as i32 * pair
                })
                .sum();
            acc_m = (msb as f32).mul_add(dmin, acc_m);
        }
    }
    acc - acc_m
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// `mins . bsums` of one Q8_K block (exact integer).
#[inline]
unsafe fn q8k_min_total(ab: *const u8, mins: &[u8; 8]) -> i32 {
    let bs = ab.add(4 + QK_K) as *const i16;
    (0..8)
        .map(|j| {
            let pair =
                bs.add(2 * j).read_unaligned() as i32 + bs.add(2 * j + 1).read_unaligned() as i32;
            mins[j] as i32 * pair
        })
        .sum()
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q5k(w: &[u8], a: &[u8], nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let m4 = _mm256_set1_epi8(0x0f);
    let bit = _mm256_set1_epi8(0x10);
    for i in 0..nb {
        let wb = wp.add(i * 176);
        let ab = ap.add(i * Q8K_BYTES);
        let ad = (ab as *const f32).read_unaligned();
        let d = ad * f16_load(wb);
        let dmin = ad * f16_load(wb.add(2));
        let (sc, mn) = k4_scales(wb.add(4));
        acc_m = q8k_mins(acc_m, ab, &mn, dmin);
        let hbits = _mm256_loadu_si256(wb.add(16) as *const __m256i);
        let qs = wb.add(48);
        let q8 = ab.add(4);
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let bits = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
            // High bit of chunk j's first half is bit 2j of qh, second half bit 2j+1.
            let hl = _mm256_and_si256(
                _mm256_slli_epi16(_mm256_srl_epi16(hbits, _mm_cvtsi32_si128(2 * j as i32)), 4),
                bit,
            );
            let hh = _mm256_and_si256(
                _mm256_slli_epi16(
                    _mm256_srl_epi16(hbits, _mm_cvtsi32_si128(2 * j as i32 + 1)),
                    4,
                ),
                bit,
            );
            let lo = _mm256_or_si256(_mm256_and_si256(bits, m4), hl);
            let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), hh);
            let yl = _mm256_loadu_si256(q8.add(64 * j) as *const __m256i);
            let yh = _mm256_loadu_si256(q8.add(64 * j + 32) as *const __m256i);
            let pl = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, yl),
                _mm256_set1_epi16(sc[2 * j] as i16),
            );
            let ph = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, yh),
                _mm256_set1_epi16(sc[2 * j + 1] as i16),
            );
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) + hsum_ps4(acc_m)
}

/// Q6_K rows. The -32 offset is taken off at the end through the block's
/// 16-element sums, lane by lane, as ggml's AVX2 kernel does; the integer
/// totals are the same either way but their split over the eight float
/// lanes, and so the rounding, is not.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q6k(w: &[u8], a: &[u8], nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x30);
    for i in 0..nb {
        let wb = wp.add(i * 210);
        let ab = ap.add(i * Q8K_BYTES);
        let d = (ab as *const f32).read_unaligned() * f16_load(wb.add(208));
        let scales = wb.add(192) as *const i8;
        let q8 = ab.add(4);
        let bsums = _mm256_loadu_si256(ab.add(4 + QK_K) as *const __m256i);
        let scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(scales as *const __m128i));
        let offset = _mm256_slli_epi32(_mm256_madd_epi16(bsums, scales16), 5);
        let mut sumi = _mm256_setzero_si256();
        for n in 0..2 {
            let ql = wb.add(64 * n);
            let qh = _mm256_loadu_si256(wb.add(128 + 32 * n) as *const __m256i);
            let b1 = _mm256_loadu_si256(ql as *const __m256i);
            let b2 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
            let h0 = _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2);
            let h1 = _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2);
            let h2 = _mm256_and_si256(qh, m2);
            let h3 = _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2);
            let q = [
                _mm256_or_si256(_mm256_and_si256(b1, m4), h0),
                _mm256_or_si256(_mm256_and_si256(b2, m4), h1),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b1, 4), m4), h2),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b2, 4), m4), h3),
            ];
            let mut p = [_mm256_setzero_si256(); 4];
            for (k, qk) in q.iter().enumerate() {
                let y = _mm256_loadu_si256(q8.add(128 * n + 32 * k) as *const __m256i);
                let s0 = *scales.add(8 * n + 2 * k) as i16;
                let s1 = *scales.add(8 * n + 2 * k + 1) as i16;
                let sv = _mm256_setr_m128i(_mm_set1_epi16(s0), _mm_set1_epi16(s1));
                p[k] = _mm256_madd_epi16(sv, _mm256_maddubs_epi16(*qk, y));
            }
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p[0], p[1]));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p[2], p[3]));
        }
        let sumi = _mm256_sub_epi32(sumi, offset);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

/// Q6_K rows as llama.cpp's tiled K-quant GEMM (batches of 8+ rows) sums
/// them: per block, the exact integer total times the weight scale, then
/// one fused multiply-add with the activation scale.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_q6k_tiled(w: &[u8], a: &[u8], nb: usize) -> f32 {
    let mut acc = 0f32;
    let (wp, ap) = (w.as_ptr(), a.as_ptr());
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x30);
    for i in 0..nb {
        let wb = wp.add(i * 210);
        let ab = ap.add(i * Q8K_BYTES);
        let scales = wb.add(192) as *const i8;
        let q8 = ab.add(4);
        let bsums = _mm256_loadu_si256(ab.add(4 + QK_K) as *const __m256i);
        let scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(scales as *const __m128i));
        let offset = _mm256_slli_epi32(_mm256_madd_epi16(bsums, scales16), 5);
        let mut sumi = _mm256_setzero_si256();
        for n in 0..2 {
            let ql = wb.add(64 * n);
            let qh = _mm256_loadu_si256(wb.add(128 + 32 * n) as *const __m256i);
            let b1 = _mm256_loadu_si256(ql as *const __m256i);
            let b2 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(b1, m4),
                    _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(b2, m4),
                    _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(b1, 4), m4),
                    _mm256_and_si256(qh, m2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(b2, 4), m4),
                    _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2),
                ),
            ];
            for (k, qk) in q.iter().enumerate() {
                let y = _mm256_loadu_si256(q8.add(128 * n + 32 * k) as *const __m256i);
                let s0 = *scales.add(8 * n + 2 * k) as i16;
                let s1 = *scales.add(8 * n + 2 * k + 1) as i16;
                let sv = _mm256_setr_m128i(_mm_set1_epi16(s0), _mm_set1_epi16(s1));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(sv, _mm256_maddubs_epi16(*qk, y)));
            }
        }
        let total = hsum_epi32(_mm256_sub_epi32(sumi, offset));
        let res = f16_load(wb.add(208)) * total as f32;
        acc = res.mul_add((ab as *const f32).read_unaligned(), acc);
    }
    acc
}

// ---------------------------------------------------------------------------
// Float kernels for attention and float weights.

#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
        acc1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i + 8)),
            _mm256_loadu_ps(pb.add(i + 8)),
            acc1,
        );
        i += 16;
    }
    let mut s = hsum_ps(_mm256_add_ps(acc0, acc1));
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

/// Dot product of f32 `a` with f16 `b` (given as raw bits).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f32_f16(a: &[f32], b: &[u16]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        let b0 = _mm256_cvtph_ps(_mm_loadu_si128(pb.add(i) as *const __m128i));
        let b1 = _mm256_cvtph_ps(_mm_loadu_si128(pb.add(i + 8) as *const __m128i));
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), b0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), b1, acc1);
        i += 16;
    }
    let mut s = hsum_ps(_mm256_add_ps(acc0, acc1));
    while i < n {
        s += a[i] * half::f16::from_bits(b[i]).to_f32();
        i += 1;
    }
    s
}

/// `y += alpha * x` with f16 `x` (raw bits).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy_f16(alpha: f32, x: &[u16], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let va = _mm256_set1_ps(alpha);
    let mut i = 0;
    while i + 8 <= n {
        let xv = _mm256_cvtph_ps(_mm_loadu_si128(px.add(i) as *const __m128i));
        let yv = _mm256_loadu_ps(py.add(i));
        _mm256_storeu_ps(py.add(i), _mm256_fmadd_ps(va, xv, yv));
        i += 8;
    }
    while i < n {
        y[i] += alpha * half::f16::from_bits(x[i]).to_f32();
        i += 1;
    }
}

/// Rounds f32 to f16 bits (round to nearest even).
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn f32_to_f16(x: &[f32], out: &mut [u16]) {
    let n = x.len().min(out.len());
    let mut i = 0;
    while i + 8 <= n {
        let h = _mm256_cvtps_ph(
            _mm256_loadu_ps(x.as_ptr().add(i)),
            _MM_FROUND_TO_NEAREST_INT,
        );
        _mm_storeu_si128(out.as_mut_ptr().add(i) as *mut __m128i, h);
        i += 8;
    }
    while i < n {
        out[i] = half::f16::from_f32(x[i]).to_bits();
        i += 1;
    }
}

/// Rounds f32 values to the nearest f16 in place.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn round_to_f16(x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let mut i = 0;
    while i + 8 <= n {
        let h = _mm256_cvtps_ph(_mm256_loadu_ps(p.add(i)), _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_ps(p.add(i), _mm256_cvtph_ps(h));
        i += 8;
    }
    while i < n {
        x[i] = half::f16::from_f32(x[i]).to_f32();
        i += 1;
    }
}

/// Dot product of two f16 rows exactly as ggml's AVX2 `ggml_vec_dot_f16`
/// sums it: four 8-lane accumulators over 32-element steps, reduced
/// pairwise, then horizontally with two `hadd`s. `n` must be a multiple
/// of 32.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f16_ggml(x: &[u16], y: &[u16]) -> f32 {
    let n = x.len().min(y.len());
    debug_assert!(n.is_multiple_of(32));
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let mut sum = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, s) in sum.iter_mut().enumerate() {
            let ax = _mm256_cvtph_ps(_mm_loadu_si128(px.add(i + 8 * j) as *const __m128i));
            let ay = _mm256_cvtph_ps(_mm_loadu_si128(py.add(i + 8 * j) as *const __m128i));
            *s = _mm256_fmadd_ps(ax, ay, *s);
        }
        i += 32;
    }
    let a = _mm256_add_ps(sum[0], sum[2]);
    let b = _mm256_add_ps(sum[1], sum[3]);
    let c = _mm256_add_ps(a, b);
    let t0 = _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps(c, 1));
    let t1 = _mm_hadd_ps(t0, t0);
    _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
}

/// `y = f16(y * v)` for an f16 row.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scale_f16(y: &mut [u16], v: f32) {
    let n = y.len();
    debug_assert!(n.is_multiple_of(8));
    let p = y.as_mut_ptr();
    let vv = _mm256_set1_ps(v);
    let mut i = 0;
    while i + 8 <= n {
        let a = _mm256_cvtph_ps(_mm_loadu_si128(p.add(i) as *const __m128i));
        let r = _mm256_cvtps_ph(_mm256_mul_ps(a, vv), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128(p.add(i) as *mut __m128i, r);
        i += 8;
    }
}

/// `y = f16(fma(x, v, y))` for f16 rows, as ggml's `ggml_vec_mad_f16`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn mad_f16(y: &mut [u16], x: &[u16], v: f32) {
    let n = y.len().min(x.len());
    debug_assert!(n.is_multiple_of(8));
    let (py, px) = (y.as_mut_ptr(), x.as_ptr());
    let vv = _mm256_set1_ps(v);
    let mut i = 0;
    while i + 8 <= n {
        let a = _mm256_cvtph_ps(_mm_loadu_si128(py.add(i) as *const __m128i));
        let b = _mm256_cvtph_ps(_mm_loadu_si128(px.add(i) as *const __m128i));
        let r = _mm256_cvtps_ph(_mm256_fmadd_ps(b, vv, a), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128(py.add(i) as *mut __m128i, r);
        i += 8;
    }
}

/// Eight lanes of `ops::expf_ggml`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn expf_ggml8(x: __m256) -> __m256 {
    let r = _mm256_set1_ps(f32::from_bits(0x4b40_0000));
    let z = _mm256_fmadd_ps(x, _mm256_set1_ps(f32::from_bits(0x3fb8_aa3b)), r);
    let n = _mm256_sub_ps(z, r);
    let b = _mm256_fnmadd_ps(
        n,
        _mm256_set1_ps(f32::from_bits(0x35bf_be8e)),
        _mm256_fnmadd_ps(n, _mm256_set1_ps(f32::from_bits(0x3f31_7200)), x),
    );
    let e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    let k = _mm256_castsi256_ps(_mm256_add_epi32(
        e,
        _mm256_castps_si256(_mm256_set1_ps(1.0)),
    ));
    let absn = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let c = _mm256_cmp_ps(absn, _mm256_set1_ps(126.0), _CMP_GT_OQ);
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_set1_ps(f32::from_bits(0x3c07_2010)),
                b,
                _mm256_set1_ps(f32::from_bits(0x3d2b_9f17)),
            ),
            u,
            _mm256_fmadd_ps(
                _mm256_set1_ps(f32::from_bits(0x3e2a_af33)),
                b,
                _mm256_set1_ps(f32::from_bits(0x3eff_fedb)),
            ),
        ),
        u,
        _mm256_mul_ps(_mm256_set1_ps(f32::from_bits(0x3f7f_fff6)), b),
    );
    if _mm256_movemask_ps(c) == 0 {
        return _mm256_fmadd_ps(j, k, k);
    }
    let g = _mm256_and_si256(
        _mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
        _mm256_set1_epi32(0x8200_0000u32 as i32),
    );
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let d = _mm256_cmp_ps(absn, _mm256_set1_ps(192.0), _CMP_GT_OQ);
    _mm256_or_ps(
        _mm256_and_ps(d, _mm256_mul_ps(s1, s1)),
        _mm256_andnot_ps(
            d,
            _mm256_or_ps(
                _mm256_and_ps(c, _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                _mm256_andnot_ps(c, _mm256_fmadd_ps(k, j, k)),
            ),
        ),
    )
}

/// See `ops::softmax_tile`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn softmax_tile(x: &mut [f32], max: f32) -> f64 {
    let mut sum = 0f64;
    let mv = _mm256_set1_ps(max);
    let p = x.as_mut_ptr();
    let mut i = 0;
    while i + 8 <= x.len() {
        let val = expf_ggml8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mv));
        _mm256_storeu_ps(p.add(i), val);
        let v2 = _mm_add_ps(_mm256_extractf128_ps(val, 1), _mm256_castps256_ps128(val));
        let v2 = _mm_add_ps(v2, _mm_movehl_ps(v2, v2));
        let v2 = _mm_add_ss(v2, _mm_movehdup_ps(v2));
        sum += _mm_cvtss_f32(v2) as f64;
        i += 8;
    }
    sum
}

/// See `ops::scores_group`: sixteen keys of `G` queries at a time, so each
/// key vector is loaded once for all of them.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn scores_group<const G: usize>(
    q: [*const f32; G],
    hd: usize,
    kt: *const f32,
    kq: [*mut f32; G],
) {
    for j in 0..4 {
        let mut acc = [[_mm256_setzero_ps(); 2]; G];
        for d in 0..hd {
            let k0 = _mm256_loadu_ps(kt.add(d * 64 + 16 * j));
            let k1 = _mm256_loadu_ps(kt.add(d * 64 + 16 * j + 8));
            for g in 0..G {
                let qv = _mm256_broadcast_ss(&*q[g].add(d));
                acc[g][0] = _mm256_fmadd_ps(k0, qv, acc[g][0]);
                acc[g][1] = _mm256_fmadd_ps(k1, qv, acc[g][1]);
            }
        }
        for g in 0..G {
            _mm256_storeu_ps(kq[g].add(16 * j), acc[g][0]);
            _mm256_storeu_ps(kq[g].add(16 * j + 8), acc[g][1]);
        }
    }
}

/// `acc[g] = fma(v[i], p[g][i], acc[g])` over the tile's 64 values in
/// order, sixteen columns of `G` queries at a time. A key no query sees is
/// skipped; a zero probability leaves its accumulator as it was.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn values_group<const G: usize>(
    acc: [*mut f32; G],
    vt: *const f32,
    hd: usize,
    p: [*const f32; G],
) {
    let mut c = 0;
    while c + 16 <= hd {
        let mut a = [[_mm256_setzero_ps(); 2]; G];
        for g in 0..G {
            a[g] = [
                _mm256_loadu_ps(acc[g].add(c)),
                _mm256_loadu_ps(acc[g].add(c + 8)),
            ];
        }
        for i in 0..64 {
            if (0..G).all(|g| *p[g].add(i) == 0.0) {
                continue;
            }
            let v0 = _mm256_loadu_ps(vt.add(i * hd + c));
            let v1 = _mm256_loadu_ps(vt.add(i * hd + c + 8));
            for g in 0..G {
                let pg = *p[g].add(i);
                if pg != 0.0 {
                    let pb = _mm256_set1_ps(pg);
                    a[g][0] = _mm256_fmadd_ps(v0, pb, a[g][0]);
                    a[g][1] = _mm256_fmadd_ps(v1, pb, a[g][1]);
                }
            }
        }
        for g in 0..G {
            _mm256_storeu_ps(acc[g].add(c), a[g][0]);
            _mm256_storeu_ps(acc[g].add(c + 8), a[g][1]);
        }
        c += 16;
    }
}

/// `acc = fma(v, p, acc)` element-wise.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn fma_row(acc: &mut [f32], v: &[f32], p: f32) {
    let n = acc.len().min(v.len());
    let (pa, pv) = (acc.as_mut_ptr(), v.as_ptr());
    let pp = _mm256_set1_ps(p);
    let mut i = 0;
    while i + 8 <= n {
        _mm256_storeu_ps(
            pa.add(i),
            _mm256_fmadd_ps(_mm256_loadu_ps(pv.add(i)), pp, _mm256_loadu_ps(pa.add(i))),
        );
        i += 8;
    }
    while i < n {
        acc[i] = v[i].mul_add(p, acc[i]);
        i += 1;
    }
}
