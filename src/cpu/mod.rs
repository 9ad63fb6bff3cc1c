//! CPU kernels: block formats, SIMD dot products, the thread pool and the
//! element-wise operations of a transformer layer.
//!
//! SIMD code is chosen at run time ([`Isa::detect`]) so one binary runs on
//! any x86-64 and uses AVX2 where the machine has it. `CHIMERA_ISA=scalar`
//! forces the portable path (tests use it to compare the two).

#[cfg(target_arch = "x86_64")]
pub mod avx2;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod profile;
pub mod quant;
#[cfg(target_arch = "x86_64")]
pub mod tiles;

pub use matmul::{Matrix, QuantActs};
pub use pool::ThreadPool;
pub use quant::{ActFormat, QType};

/// The instruction set the kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Isa {
    Scalar,
    /// AVX2 with FMA and F16C.
    Avx2,
}

impl Isa {
    /// The best instruction set this machine supports, unless the
    /// environment variable `CHIMERA_ISA=scalar` asks for the portable code.
    pub fn detect() -> Isa {
        if std::env::var("CHIMERA_ISA").is_ok_and(|v| v.eq_ignore_ascii_case("scalar")) {
            return Isa::Scalar;
        }
        Self::best()
    }

    /// The best instruction set this machine supports.
    pub fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
        }
    }
}

/// Dot product of one weight row with one activation row of `blocks` blocks.
pub type DotFn = fn(&[u8], &[u8], usize) -> f32;

/// The dot-product kernel for weight type `t` on `isa`.
pub fn dot_fn(isa: Isa, t: QType) -> DotFn {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY (all arms): `Isa::Avx2` is only produced after the CPU
        // reported AVX2, FMA and F16C.
        return match t {
            QType::Q8_0 => |w, a, nb| unsafe { avx2::dot_q8_0(w, a, nb) },
            QType::Q4_0 => |w, a, nb| unsafe { avx2::dot_q4_0(w, a, nb) },
            QType::Q5_0 => |w, a, nb| unsafe { avx2::dot_q5_0(w, a, nb) },
            QType::Q4K => |w, a, nb| unsafe { avx2::dot_q4k(w, a, nb) },
            QType::Q5K => |w, a, nb| unsafe { avx2::dot_q5k(w, a, nb) },
            QType::Q6K => |w, a, nb| unsafe { avx2::dot_q6k(w, a, nb) },
            QType::F32 => |w, a, nb| unsafe { avx2::dot_f32(as_f32(w, nb), as_f32(a, nb)) },
            QType::F16 => |w, a, nb| unsafe { avx2::dot_f32_f16(as_f32(a, nb), as_u16(w, nb)) },
            QType::BF16 => scalar_dot(t),
        };
    }
    let _ = isa;
    scalar_dot(t)
}

/// The kernel for activation row `row` of a product over `rows` rows.
///
/// llama.cpp picks different CPU kernels by batch size, and they round
/// differently: Q4_K goes through its repacked GEMM for rows in groups of
/// four (GEMV for the rest), Q6_K through its tiled GEMM from eight rows
/// up. Choosing the same way keeps prompt evaluation bit-identical to
/// llama.cpp's; the integer work is the same, only the float accumulation
/// order differs.
pub fn dot_fn_for(isa: Isa, t: QType, rows: usize, row: usize) -> DotFn {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        let grouped = rows > 3 && row < rows - rows % 4;
        // SAFETY (both arms): see `dot_fn`.
        match t {
            QType::Q4K if grouped => return |w, a, nb| unsafe { avx2::dot_q4k_grouped(w, a, nb) },
            QType::Q6K if rows >= 8 => return |w, a, nb| unsafe { avx2::dot_q6k_tiled(w, a, nb) },
            _ => {}
        }
    }
    let _ = (rows, row);
    dot_fn(isa, t)
}

fn scalar_dot(t: QType) -> DotFn {
    macro_rules! reference {
        ($t:expr) => {
            |w, a, nb| {
                let t = $t;
                let wlen = nb * t.block_bytes();
                let alen = nb * t.block_elems() / t.act_format().block_elems()
                    * t.act_format().block_bytes();
                quant::vec_dot_ref(t, &w[..wlen], &a[..alen])
            }
        };
    }
    match t {
        QType::F32 => reference!(QType::F32),
        QType::F16 => reference!(QType::F16),
        QType::BF16 => reference!(QType::BF16),
        QType::Q4_0 => reference!(QType::Q4_0),
        QType::Q5_0 => reference!(QType::Q5_0),
        QType::Q8_0 => reference!(QType::Q8_0),
        QType::Q4K => reference!(QType::Q4K),
        QType::Q5K => reference!(QType::Q5K),
        QType::Q6K => reference!(QType::Q6K),
    }
}

/// Quantizes one activation row into `fmt`.
pub fn quantize_row(isa: Isa, fmt: ActFormat, x: &[f32], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 && fmt == ActFormat::Q8_0 {
        // SAFETY: see `dot_fn`.
        unsafe { avx2::quantize_q8_0(x, out) };
        return;
    }
    let _ = isa;
    quant::quantize_ref(fmt, x, out);
}

fn as_f32(b: &[u8], n: usize) -> &[f32] {
    assert!(
        b.len() >= 4 * n && (b.as_ptr() as usize).is_multiple_of(4),
        "misaligned f32 data"
    );
    // SAFETY: length and alignment checked above; every bit pattern is an f32.
    unsafe { std::slice::from_raw_parts(b.as_ptr() as *const f32, n) }
}

fn as_u16(b: &[u8], n: usize) -> &[u16] {
    assert!(
        b.len() >= 2 * n && (b.as_ptr() as usize).is_multiple_of(2),
        "misaligned f16 data"
    );
    // SAFETY: as above.
    unsafe { std::slice::from_raw_parts(b.as_ptr() as *const u16, n) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random floats (xorshift), spread like activations.
    pub(crate) fn randn(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    /// Random bytes for a weight row, with the f16 scales made finite and sane.
    fn random_row(t: QType, cols: usize, seed: u64) -> Vec<u8> {
        let mut bytes: Vec<u8> = randn(t.row_bytes(cols), seed)
            .iter()
            .map(|v| (v * 1000.0) as i32 as u8)
            .collect();
        let scale = half::f16::from_f32(0.01).to_bits().to_le_bytes();
        let bb = t.block_bytes();
        for b in bytes.chunks_exact_mut(bb) {
            match t {
                QType::Q4_0 | QType::Q5_0 | QType::Q8_0 | QType::Q4K | QType::Q5K => {
                    b[..2].copy_from_slice(&scale);
                    if matches!(t, QType::Q4K | QType::Q5K) {
                        b[2..4].copy_from_slice(&scale);
                    }
                }
                QType::Q6K => b[208..210].copy_from_slice(&scale),
                QType::F16 => b.copy_from_slice(&scale),
                QType::BF16 => {
                    b.copy_from_slice(&half::bf16::from_f32(0.5).to_bits().to_le_bytes())
                }
                QType::F32 => b.copy_from_slice(&0.25f32.to_le_bytes()),
            }
        }
        bytes
    }

    #[test]
    fn simd_quantize_matches_reference() {
        let isa = Isa::best();
        for fmt in [ActFormat::Q8_0, ActFormat::Q8K] {
            for seed in 0..8 {
                let mut x = randn(512, seed);
                x[5] = 0.0;
                if seed == 3 {
                    x[..32].fill(0.0);
                }
                let mut a = vec![0u8; fmt.row_bytes(512)];
                let mut b = vec![0u8; fmt.row_bytes(512)];
                quantize_row(isa, fmt, &x, &mut a);
                quant::quantize_ref(fmt, &x, &mut b);
                assert_eq!(a, b, "{fmt:?} seed {seed}");
            }
        }
    }

    #[test]
    fn simd_dots_match_reference_for_every_type() {
        let isa = Isa::best();
        let cols = 1024;
        for t in [
            QType::F32,
            QType::F16,
            QType::BF16,
            QType::Q4_0,
            QType::Q5_0,
            QType::Q8_0,
            QType::Q4K,
            QType::Q5K,
            QType::Q6K,
        ] {
            for seed in 0..4 {
                let w = random_row(t, cols, seed + 100);
                let x = randn(cols, seed);
                let fmt = t.act_format();
                let mut a = vec![0u8; fmt.row_bytes(cols)];
                quant::quantize_ref(fmt, &x, &mut a);
                let nb = cols / t.block_elems();
                let got = dot_fn(isa, t)(&w, &a, nb);
                let want = quant::vec_dot_ref(t, &w, &a);
                let tol = 1e-4 * (1.0 + want.abs());
                assert!(
                    (got - want).abs() <= tol,
                    "{t:?}: simd {got} vs reference {want}"
                );
            }
        }
    }

    #[test]
    fn quantized_dot_approximates_float_dot() {
        // The reference itself must agree with plain float math on the
        // dequantized weights, up to activation quantization error.
        let cols = 512;
        for t in [
            QType::Q4_0,
            QType::Q5_0,
            QType::Q8_0,
            QType::Q4K,
            QType::Q5K,
            QType::Q6K,
        ] {
            let w = random_row(t, cols, 7);
            let x = randn(cols, 9);
            let mut wf = vec![0f32; cols];
            quant::dequantize_row(t, &w, &mut wf);
            let exact: f32 = wf.iter().zip(&x).map(|(a, b)| a * b).sum();
            let mut a = vec![0u8; t.act_format().row_bytes(cols)];
            quant::quantize_ref(t.act_format(), &x, &mut a);
            let q = quant::vec_dot_ref(t, &w, &a);
            let norm: f32 = wf.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
            assert!((q - exact).abs() <= 0.02 * norm, "{t:?}: {q} vs {exact}");
        }
    }
}
