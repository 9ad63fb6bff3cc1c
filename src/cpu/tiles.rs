//! AVX2 matrix-product tiles: several weight rows against several
//! activation rows per pass, so each weight block is decoded once and each
//! activation block loaded once for the whole tile.
//!
//! Every (row, activation) pair is summed exactly as the single-row kernel
//! in `avx2.rs` sums it (same integer lanes, same float steps in the same
//! order), so tiling changes speed, never results. The tests compare the two.
#![allow(clippy::missing_safety_doc, clippy::needless_range_loop)]

use super::quant::{Q8K_BYTES, Q8_0_BYTES, QK_K};
use std::arch::x86_64::*;

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline(always)]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[inline(always)]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// Software prefetch of the weights a later tile will read: `pf` advances
/// `step` bytes per block, one or more cache lines at a time. The hardware
/// prefetcher alone does not keep several interleaved row streams ahead of
/// these kernels; with this a single thread streams about 90% of its read
/// bandwidth instead of half of it.
#[inline(always)]
unsafe fn prefetch(pf: *const u8, step: usize, b: usize) {
    if pf.is_null() {
        return;
    }
    let p = pf.wrapping_add(b * step);
    let mut off = 0;
    while off < step {
        _mm_prefetch(p.wrapping_add(off) as *const i8, _MM_HINT_T0);
        off += 64;
    }
}

/// A 32-element block type whose values are signed bytes times one f16
/// scale, dotted with Q8_0 activations (Q8_0, Q5_0, Q4_0).
pub trait Block32 {
    const BYTES: usize;
    /// The block's scale and its 32 signed values.
    unsafe fn decode(p: *const u8) -> (f32, __m256i);
}

pub struct Q8_0;
pub struct Q5_0;
pub struct Q4_0;

impl Block32 for Q8_0 {
    const BYTES: usize = 34;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> (f32, __m256i) {
        (f16_at(p), _mm256_loadu_si256(p.add(2) as *const __m256i))
    }
}

#[inline(always)]
unsafe fn nibbles_32(p: *const u8) -> __m256i {
    let tmp = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_insertf128_si256(_mm256_castsi128_si256(tmp), _mm_srli_epi16(tmp, 4), 1);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

impl Block32 for Q4_0 {
    const BYTES: usize = 18;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> (f32, __m256i) {
        (
            f16_at(p),
            _mm256_sub_epi8(nibbles_32(p.add(2)), _mm256_set1_epi8(8)),
        )
    }
}

/// Q5_0's fifth bits as a byte mask: byte `i` is all ones where bit `i`
/// of the block's 32-bit `qh` is set.
#[inline(always)]
unsafe fn q5_0_high_bits(p: *const u8) -> __m256i {
    let qh = (p.add(2) as *const u32).read_unaligned();
    let x32 = _mm256_set1_epi32(qh as i32);
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0,
    );
    let bytes = _mm256_or_si256(
        _mm256_shuffle_epi8(x32, shuf),
        _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe),
    );
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

impl Block32 for Q5_0 {
    const BYTES: usize = 22;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> (f32, __m256i) {
        // (q | bit << 4) - 16 as a signed byte: 0xf0 where the bit is clear.
        let hi = _mm256_andnot_si256(q5_0_high_bits(p), _mm256_set1_epi8(0xf0u8 as i8));
        (f16_at(p), _mm256_or_si256(nibbles_32(p.add(6)), hi))
    }
}

/// A [`Block32`] type whose values are stored as unsigned bytes minus a
/// fixed offset (Q5_0: q - 16, Q4_0: q - 8), so `vpdpbusd` can take the
/// stored bytes directly and the offset is paid once per activation block.
pub trait Block32U: Block32 {
    /// `16 / OFFSET` as a shift: the activation sums are kept for 16.
    const SHIFT: i32;
    /// The block's scale and its 32 stored (unsigned) values.
    unsafe fn decode_unsigned(p: *const u8) -> (f32, __m256i);
}

impl Block32U for Q4_0 {
    const SHIFT: i32 = 1;
    #[inline(always)]
    unsafe fn decode_unsigned(p: *const u8) -> (f32, __m256i) {
        (f16_at(p), nibbles_32(p.add(2)))
    }
}

impl Block32U for Q5_0 {
    const SHIFT: i32 = 0;
    #[inline(always)]
    unsafe fn decode_unsigned(p: *const u8) -> (f32, __m256i) {
        let hi = _mm256_and_si256(q5_0_high_bits(p), _mm256_set1_epi8(0x10));
        (f16_at(p), _mm256_or_si256(nibbles_32(p.add(6)), hi))
    }
}

/// For one Q8_0 activation row of `nb` blocks: each block's scale as f32
/// (`scales[b * stride]`) and `-16` times each lane's sum of four values
/// (`sums[b]`), the correction [`tile_b32u_vnni`] starts every block from.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub unsafe fn q8_0_block_sums(
    row: *const u8,
    nb: usize,
    sums: *mut __m256i,
    scales: *mut f32,
    stride: usize,
) {
    let sixteen = _mm256_set1_epi8(16);
    for b in 0..nb {
        let p = row.add(b * Q8_0_BYTES);
        let y = _mm256_loadu_si256(p.add(2) as *const __m256i);
        let s = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), sixteen, y);
        _mm256_storeu_si256(sums.add(b), _mm256_sub_epi32(_mm256_setzero_si256(), s));
        *scales.add(b * stride) = f16_at(p);
    }
}

/// [`tile_b32_vnni`] for offset types over prepared activations: `a[c]`
/// the Q8_0 rows, `sums[c]` their [`q8_0_block_sums`], `scales` their
/// block scales at `scales[b * stride + c]` (eight readable from each).
/// Each pair costs one `vpdpbusd` seeded with the offset correction, a
/// conversion and an FMA whose scale product was formed for all `C`
/// activations at once; the integer lanes and the float steps are those
/// of the other kernels, so results are identical.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile_b32u_vnni<B: Block32U, const R: usize, const C: usize>(
    w: &[*const u8; R],
    a: &[*const u8; C],
    sums: &[*const __m256i; C],
    scales: *const f32,
    stride: usize,
    nb: usize,
    out: &mut [[f32; C]; R],
    pf: *const u8,
    step: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut prod = [[0f32; 8]; R];
    for b in 0..nb {
        prefetch(pf, step, b);
        let da = _mm256_loadu_ps(scales.add(b * stride));
        for r in 0..R {
            let (dw, q) = B::decode_unsigned(w[r].add(b * B::BYTES));
            _mm256_storeu_ps(prod[r].as_mut_ptr(), _mm256_mul_ps(_mm256_set1_ps(dw), da));
            for c in 0..C {
                let corr = _mm256_loadu_si256(sums[c].add(b));
                let corr = if B::SHIFT > 0 {
                    _mm256_srai_epi32::<1>(corr)
                } else {
                    corr
                };
                let ya = _mm256_loadu_si256(a[c].add(b * Q8_0_BYTES + 2) as *const __m256i);
                let s = _mm256_dpbusd_avx_epi32(corr, q, ya);
                acc[r][c] = _mm256_fmadd_ps(
                    _mm256_broadcast_ss(&*prod[r].as_ptr().add(c)),
                    _mm256_cvtepi32_ps(s),
                    acc[r][c],
                );
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            out[r][c] = hsum_ps(acc[r][c]);
        }
    }
}

macro_rules! tile_b32_body {
    ($dot:expr, $w:ident, $a:ident, $nb:ident, $out:ident, $pf:ident, $step:ident) => {{
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        for b in 0..$nb {
            prefetch($pf, $step, b);
            // Each (row, activation) pair sums d_w * d_a * int lanes, with the
            // scale product rounded first as ggml does; forming it lane-wise
            // from broadcast factors rounds identically and saves a step.
            let mut ya = [_mm256_setzero_si256(); C];
            let mut da = [_mm256_setzero_ps(); C];
            for c in 0..C {
                let p = $a[c].add(b * Q8_0_BYTES);
                da[c] = _mm256_set1_ps(f16_at(p));
                ya[c] = _mm256_loadu_si256(p.add(2) as *const __m256i);
            }
            for r in 0..R {
                let (dw, wq) = B::decode($w[r].add(b * B::BYTES));
                let dw = _mm256_set1_ps(dw);
                let aw = _mm256_sign_epi8(wq, wq);
                for c in 0..C {
                    let s = $dot(aw, _mm256_sign_epi8(ya[c], wq));
                    acc[r][c] =
                        _mm256_fmadd_ps(_mm256_mul_ps(dw, da[c]), _mm256_cvtepi32_ps(s), acc[r][c]);
                }
            }
        }
        for r in 0..R {
            for c in 0..C {
                $out[r][c] = hsum_ps(acc[r][c]);
            }
        }
    }};
}

/// `R` weight rows of a 32-element block type against `C` Q8_0 activation
/// rows: `out[r][c]`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile_b32<B: Block32, const R: usize, const C: usize>(
    w: &[*const u8; R],
    a: &[*const u8; C],
    nb: usize,
    out: &mut [[f32; C]; R],
    pf: *const u8,
    step: usize,
) {
    let ones = _mm256_set1_epi16(1);
    tile_b32_body!(
        |x, y| _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), ones),
        w,
        a,
        nb,
        out,
        pf,
        step
    )
}

/// [`tile_b32`] with AVX-VNNI: one `vpdpbusd` does the multiply and the
/// four-way sum. The pair sums never reach the 16-bit saturation the AVX2
/// path could hit (weights and activations are within +-128 and +-127), so
/// the integer lanes, and the results, are identical.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub unsafe fn tile_b32_vnni<B: Block32, const R: usize, const C: usize>(
    w: &[*const u8; R],
    a: &[*const u8; C],
    nb: usize,
    out: &mut [[f32; C]; R],
    pf: *const u8,
    step: usize,
) {
    tile_b32_body!(
        |x, y| _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), x, y),
        w,
        a,
        nb,
        out,
        pf,
        step
    )
}

/// Whether this CPU has AVX-VNNI (and `CHIMERA_NO_VNNI` does not say no).
pub fn has_vnni() -> bool {
    static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VNNI.get_or_init(|| {
        is_x86_feature_detected!("avxvnni") && std::env::var_os("CHIMERA_NO_VNNI").is_none()
    })
}

/// The eight 6-bit scales and mins of a Q4_K block (12 packed bytes), with
/// word operations instead of eight `scale_min_k4` calls.
#[inline(always)]
unsafe fn k4_scales(q: *const u8) -> ([u8; 8], [u8; 8]) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let p = q as *const u32;
    let (u0, u1, u2) = (
        p.read_unaligned(),
        p.add(1).read_unaligned(),
        p.add(2).read_unaligned(),
    );
    let sc_lo = u0 & LOW6;
    let sc_hi = (u2 & LOW4) | (((u0 >> 6) & LOW2) << 4);
    let mn_lo = u1 & LOW6;
    let mn_hi = ((u2 >> 4) & LOW4) | (((u1 >> 6) & LOW2) << 4);
    let sc = (sc_lo as u64 | (sc_hi as u64) << 32).to_le_bytes();
    let mn = (mn_lo as u64 | (mn_hi as u64) << 32).to_le_bytes();
    (sc, mn)
}

/// One Q4_K weight row against `C` Q8_K activation rows. `GROUPED` selects
/// llama.cpp's repacked-GEMM rounding (a float step per 64 elements)
/// instead of its GEMV rounding (a float step per block).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile_q4k<const C: usize, const GROUPED: bool>(
    w: *const u8,
    a: &[*const u8; C],
    nb: usize,
    out: &mut [f32; C],
    pf: *const u8,
) {
    let mut acc = [0f32; C];
    let mut acc_m = [0f32; C];
    let m4 = _mm256_set1_epi8(0x0f);
    for i in 0..nb {
        prefetch(pf, 144, i);
        let wb = w.add(i * 144);
        let (dw, dminw) = (f16_at(wb), f16_at(wb.add(2)));
        let (sc, mn) = k4_scales(wb.add(4));
        let mut lo = [_mm256_setzero_si256(); 4];
        let mut hi = [_mm256_setzero_si256(); 4];
        for j in 0..4 {
            let bits = _mm256_loadu_si256(wb.add(16 + 32 * j) as *const __m256i);
            lo[j] = _mm256_and_si256(bits, m4);
            hi[j] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
        }
        for c in 0..C {
            let ab = a[c].add(i * Q8K_BYTES);
            let ad = (ab as *const f32).read_unaligned();
            let (d, dmin) = (dw * ad, dminw * ad);
            let q8 = ab.add(4);
            let bs = ab.add(4 + QK_K) as *const i16;
            let pair = |k: usize| {
                bs.add(2 * k).read_unaligned() as i32 + bs.add(2 * k + 1).read_unaligned() as i32
            };
            let mut sumi = _mm256_setzero_si256();
            for j in 0..4 {
                let yl = _mm256_loadu_si256(q8.add(64 * j) as *const __m256i);
                let yh = _mm256_loadu_si256(q8.add(64 * j + 32) as *const __m256i);
                let pl = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(lo[j], yl),
                    _mm256_set1_epi16(sc[2 * j] as i16),
                );
                let ph = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(hi[j], yh),
                    _mm256_set1_epi16(sc[2 * j + 1] as i16),
                );
                if GROUPED {
                    let isb = hsum_epi32(_mm256_add_epi32(pl, ph));
                    acc[c] = (isb as f32).mul_add(d, acc[c]);
                    let msb =
                        mn[2 * j] as i32 * pair(2 * j) + mn[2 * j + 1] as i32 * pair(2 * j + 1);
                    acc_m[c] = (msb as f32).mul_add(dmin, acc_m[c]);
                } else {
                    sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
                }
            }
            if !GROUPED {
                acc[c] = (hsum_epi32(sumi) as f32).mul_add(dw * ad, acc[c]);
                let mt: i32 = (0..8).map(|k| mn[k] as i32 * pair(k)).sum();
                acc_m[c] = (mt as f32).mul_add(dminw * ad, acc_m[c]);
            }
        }
    }
    for c in 0..C {
        out[c] = acc[c] - acc_m[c];
    }
}

/// Sums of each of eight vectors, as the lanes of one (lane `r` = `v[r]`).
/// Integer sums are exact, so this equals eight horizontal sums, at about
/// one instruction per vector instead of six.
#[inline(always)]
unsafe fn hsum8_epi32(v: &[__m256i; 8]) -> __m256i {
    let t0 = _mm256_hadd_epi32(v[0], v[1]);
    let t1 = _mm256_hadd_epi32(v[2], v[3]);
    let t2 = _mm256_hadd_epi32(v[4], v[5]);
    let t3 = _mm256_hadd_epi32(v[6], v[7]);
    let u0 = _mm256_hadd_epi32(t0, t1);
    let u1 = _mm256_hadd_epi32(t2, t3);
    _mm256_add_epi32(
        _mm256_permute2x128_si256(u0, u1, 0x20),
        _mm256_permute2x128_si256(u0, u1, 0x31),
    )
}

/// Eight Q4_K weight rows against `C` Q8_K activation rows with the
/// grouped rounding of [`tile_q4k`] (`GROUPED = true`): the same float
/// operations in the same order, with the eight rows in the lanes of one
/// vector, as llama.cpp's repacked 8-row GEMM keeps them. Each 64-element
/// integer sum then costs one vector reduction for all eight rows, which is
/// what makes this kernel about twice as fast per row as the one-row tile.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile8_q4k_grouped<const C: usize>(
    w: &[*const u8; 8],
    a: &[*const u8; C],
    nb: usize,
    out: &mut [[f32; C]; 8],
) {
    let mut acc = [_mm256_setzero_ps(); C];
    let mut acc_m = [_mm256_setzero_ps(); C];
    let m4 = _mm256_set1_epi8(0x0f);
    // One block of the eight rows, unpacked: nibbles per row and 32-element
    // sub-block, and each sub-block's scale broadcast to 16-bit lanes.
    let mut q = [[_mm256_setzero_si256(); 8]; 8];
    let mut sc = [[_mm256_setzero_si256(); 8]; 8];
    for i in 0..nb {
        let mut dw = [0f32; 8];
        let mut dminw = [0f32; 8];
        let mut mins = [[0i32; 8]; 4];
        for r in 0..8 {
            let wb = w[r].add(i * 144);
            dw[r] = f16_at(wb);
            dminw[r] = f16_at(wb.add(2));
            let (s, m) = k4_scales(wb.add(4));
            for j in 0..4 {
                let bits = _mm256_loadu_si256(wb.add(16 + 32 * j) as *const __m256i);
                q[r][2 * j] = _mm256_and_si256(bits, m4);
                q[r][2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
                mins[j][r] = m[2 * j] as i32 | (m[2 * j + 1] as i32) << 16;
            }
            for k in 0..8 {
                sc[r][k] = _mm256_set1_epi16(s[k] as i16);
            }
        }
        let dw = _mm256_loadu_ps(dw.as_ptr());
        let dminw = _mm256_loadu_ps(dminw.as_ptr());
        let mins = mins.map(|m| _mm256_loadu_si256(m.as_ptr() as *const __m256i));
        for c in 0..C {
            let ab = a[c].add(i * Q8K_BYTES);
            let ad = _mm256_set1_ps((ab as *const f32).read_unaligned());
            let (d, dmin) = (_mm256_mul_ps(dw, ad), _mm256_mul_ps(dminw, ad));
            let q8 = ab.add(4);
            // Sums of adjacent pairs of the 16-element sums: the activation
            // side of each 32-element sub-block's min term.
            let bs = _mm256_loadu_si256(ab.add(4 + QK_K) as *const __m256i);
            let mut pairs = [0i32; 8];
            _mm256_storeu_si256(
                pairs.as_mut_ptr() as *mut __m256i,
                _mm256_madd_epi16(bs, _mm256_set1_epi16(1)),
            );
            for j in 0..4 {
                let yl = _mm256_loadu_si256(q8.add(64 * j) as *const __m256i);
                let yh = _mm256_loadu_si256(q8.add(64 * j + 32) as *const __m256i);
                let v: [__m256i; 8] = std::array::from_fn(|r| {
                    let pl = _mm256_madd_epi16(_mm256_maddubs_epi16(q[r][2 * j], yl), sc[r][2 * j]);
                    let ph = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(q[r][2 * j + 1], yh),
                        sc[r][2 * j + 1],
                    );
                    _mm256_add_epi32(pl, ph)
                });
                let isb = hsum8_epi32(&v);
                acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isb), d, acc[c]);
                // Both sub-blocks' pair sums (each within +-4064) in one
                // word, against each row's two mins.
                let pw = _mm256_set1_epi32((pairs[2 * j] & 0xffff) | pairs[2 * j + 1] << 16);
                let msb = _mm256_madd_epi16(mins[j], pw);
                acc_m[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(msb), dmin, acc_m[c]);
            }
        }
    }
    for c in 0..C {
        let mut o = [0f32; 8];
        _mm256_storeu_ps(o.as_mut_ptr(), _mm256_sub_ps(acc[c], acc_m[c]));
        for r in 0..8 {
            out[r][c] = o[r];
        }
    }
}

/// One Q6_K weight row against `C` Q8_K activation rows. `TILED` selects
/// llama.cpp's tiled-GEMM rounding (per block: integer total times the
/// weight scale, then one fused step with the activation scale) instead of
/// its `vec_dot` rounding (eight float lanes).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tile_q6k<const C: usize, const TILED: bool>(
    w: *const u8,
    a: &[*const u8; C],
    nb: usize,
    out: &mut [f32; C],
    pf: *const u8,
) {
    let mut acc = [_mm256_setzero_ps(); C];
    let mut acc_s = [0f32; C];
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x30);
    for i in 0..nb {
        prefetch(pf, 210, i);
        let wb = w.add(i * 210);
        let dw = f16_at(wb.add(208));
        let scales = wb.add(192) as *const i8;
        let scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(scales as *const __m128i));
        let mut q = [_mm256_setzero_si256(); 8];
        let mut sv = [_mm256_setzero_si256(); 8];
        for n in 0..2 {
            let ql = wb.add(64 * n);
            let qh = _mm256_loadu_si256(wb.add(128 + 32 * n) as *const __m256i);
            let b1 = _mm256_loadu_si256(ql as *const __m256i);
            let b2 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
            q[4 * n] = _mm256_or_si256(
                _mm256_and_si256(b1, m4),
                _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2),
            );
            q[4 * n + 1] = _mm256_or_si256(
                _mm256_and_si256(b2, m4),
                _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2),
            );
            q[4 * n + 2] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(b1, 4), m4),
                _mm256_and_si256(qh, m2),
            );
            q[4 * n + 3] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(b2, 4), m4),
                _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2),
            );
            for k in 0..4 {
                let s0 = *scales.add(8 * n + 2 * k) as i16;
                let s1 = *scales.add(8 * n + 2 * k + 1) as i16;
                sv[4 * n + k] = _mm256_setr_m128i(_mm_set1_epi16(s0), _mm_set1_epi16(s1));
            }
        }
        for c in 0..C {
            let ab = a[c].add(i * Q8K_BYTES);
            let q8 = ab.add(4);
            let bsums = _mm256_loadu_si256(ab.add(4 + QK_K) as *const __m256i);
            let offset = _mm256_slli_epi32(_mm256_madd_epi16(bsums, scales16), 5);
            let mut sumi = _mm256_setzero_si256();
            for n in 0..2 {
                let mut p = [_mm256_setzero_si256(); 4];
                for k in 0..4 {
                    let y = _mm256_loadu_si256(q8.add(128 * n + 32 * k) as *const __m256i);
                    p[k] = _mm256_madd_epi16(sv[4 * n + k], _mm256_maddubs_epi16(q[4 * n + k], y));
                }
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p[0], p[1]));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p[2], p[3]));
            }
            let sumi = _mm256_sub_epi32(sumi, offset);
            let ad = (ab as *const f32).read_unaligned();
            if TILED {
                acc_s[c] = (dw * hsum_epi32(sumi) as f32).mul_add(ad, acc_s[c]);
            } else {
                acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(ad * dw), _mm256_cvtepi32_ps(sumi), acc[c]);
            }
        }
    }
    for c in 0..C {
        out[c] = if TILED { acc_s[c] } else { hsum_ps(acc[c]) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::quant::{quantize_q8k_ref, scale_min_k4};

    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect()
    }

    /// Q4_K rows of random bits with finite, varied block scales.
    fn q4k_rows(rows: usize, nb: usize, seed: u64) -> Vec<u8> {
        let mut w = bytes(rows * nb * 144, seed);
        for (k, blk) in w.chunks_exact_mut(144).enumerate() {
            let d = half::f16::from_f32(0.001 + (k % 7) as f32 * 0.0013);
            let m = half::f16::from_f32(0.002 + (k % 5) as f32 * 0.0007);
            blk[..2].copy_from_slice(&d.to_bits().to_le_bytes());
            blk[2..4].copy_from_slice(&m.to_bits().to_le_bytes());
        }
        w
    }

    /// Rows of a 32-element block type: random bits, finite f16 scales.
    fn b32_rows(bytes_per_block: usize, blocks: usize, seed: u64) -> Vec<u8> {
        let mut w = bytes(blocks * bytes_per_block, seed);
        for (k, blk) in w.chunks_exact_mut(bytes_per_block).enumerate() {
            let d = half::f16::from_f32(0.0007 + (k % 11) as f32 * 0.0009);
            blk[..2].copy_from_slice(&d.to_bits().to_le_bytes());
        }
        w
    }

    /// The offset-type tile against the signed one on the same blocks:
    /// identical bits for every tile shape the dispatcher uses.
    fn offset_tile_matches<B: Block32U>() {
        if !has_vnni() {
            eprintln!("skipped: no AVX-VNNI");
            return;
        }
        let nb = 20;
        let (rows, toks) = (2, 4);
        let w = b32_rows(B::BYTES, rows * nb, 7);
        let mut a = b32_rows(Q8_0_BYTES, toks * nb, 9);
        // Q8_0 quantization gives -127..=127: -128 is never an activation.
        for blk in a.chunks_exact_mut(Q8_0_BYTES) {
            for v in &mut blk[2..] {
                if *v == 0x80 {
                    *v = 0x81;
                }
            }
        }
        let mut sums = vec![unsafe { std::mem::zeroed::<__m256i>() }; toks * nb];
        let mut scales = vec![0f32; nb * toks + 8];
        for t in 0..toks {
            // SAFETY: VNNI detected; buffers sized for toks x nb blocks.
            unsafe {
                q8_0_block_sums(
                    a.as_ptr().add(t * nb * Q8_0_BYTES),
                    nb,
                    sums.as_mut_ptr().add(t * nb),
                    scales.as_mut_ptr().add(t),
                    toks,
                )
            };
        }
        let wp: [*const u8; 2] = std::array::from_fn(|r| w[r * nb * B::BYTES..].as_ptr());
        let ap: [*const u8; 4] = std::array::from_fn(|t| a[t * nb * Q8_0_BYTES..].as_ptr());
        let sp: [*const __m256i; 4] = std::array::from_fn(|t| sums[t * nb..].as_ptr());
        let (mut want, mut got) = ([[0f32; 4]; 2], [[0f32; 4]; 2]);
        let null = std::ptr::null();
        // SAFETY: as above; every pointer has nb blocks behind it.
        unsafe {
            tile_b32::<B, 2, 4>(&wp, &ap, nb, &mut want, null, 0);
            tile_b32u_vnni::<B, 2, 4>(&wp, &ap, &sp, scales.as_ptr(), toks, nb, &mut got, null, 0);
        }
        assert_eq!(
            want.map(|r| r.map(f32::to_bits)),
            got.map(|r| r.map(f32::to_bits))
        );
        let mut one = [[0f32; 3]; 1];
        // SAFETY: as above.
        unsafe {
            tile_b32u_vnni::<B, 1, 3>(
                &[wp[1]],
                &[ap[1], ap[2], ap[3]],
                &[sp[1], sp[2], sp[3]],
                scales.as_ptr().add(1),
                toks,
                nb,
                &mut one,
                null,
                0,
            )
        };
        assert_eq!(
            one[0].map(f32::to_bits),
            [1, 2, 3].map(|t| want[1][t].to_bits())
        );
    }

    #[test]
    fn offset_tiles_are_bit_identical_to_the_signed_tiles() {
        offset_tile_matches::<Q5_0>();
        offset_tile_matches::<Q4_0>();
    }

    #[test]
    fn packed_scales_unpack_like_the_reference() {
        for seed in 0..200 {
            let q = bytes(12, seed);
            // SAFETY: 12 readable bytes.
            let (sc, mn) = unsafe { k4_scales(q.as_ptr()) };
            for j in 0..8 {
                assert_eq!((sc[j], mn[j]), scale_min_k4(j, &q), "seed {seed} j {j}");
            }
        }
    }

    #[test]
    fn eight_row_q4k_kernel_is_bit_identical_to_the_row_kernel() {
        if crate::cpu::Isa::detect() != crate::cpu::Isa::Avx2 {
            eprintln!("skipped: no AVX2");
            return;
        }
        let nb = 4;
        let w = q4k_rows(8, nb, 7);
        let toks = 8;
        let mut a = vec![0u8; toks * nb * Q8K_BYTES];
        for t in 0..toks {
            let x = crate::cpu::tests::randn(nb * QK_K, 100 + t as u64);
            quantize_q8k_ref(&x, &mut a[t * nb * Q8K_BYTES..(t + 1) * nb * Q8K_BYTES]);
        }
        let wp: [*const u8; 8] = std::array::from_fn(|r| w[r * nb * 144..].as_ptr());
        let ap = |t: usize| a[t * nb * Q8K_BYTES..].as_ptr();
        // SAFETY: AVX2 checked above; every pointer has `nb` blocks behind it.
        unsafe {
            let mut got4 = [[0f32; 4]; 8];
            tile8_q4k_grouped::<4>(&wp, &std::array::from_fn(&ap), nb, &mut got4);
            let mut got8 = [[0f32; 8]; 8];
            tile8_q4k_grouped::<8>(&wp, &std::array::from_fn(ap), nb, &mut got8);
            for r in 0..8 {
                let mut want = [0f32; 1];
                for t in 0..toks {
                    tile_q4k::<1, true>(wp[r], &[ap(t)], nb, &mut want, std::ptr::null());
                    assert_eq!(got8[r][t].to_bits(), want[0].to_bits(), "row {r} token {t}");
                    if t < 4 {
                        assert_eq!(got4[r][t].to_bits(), want[0].to_bits(), "row {r} token {t}");
                    }
                }
            }
        }
    }
}
