//! Micro-benchmarks of the hot CPU kernels at the shapes of Gemma 3 270M:
//! each quantized matrix-vector product (decode) and matrix-matrix product
//! (prompt batches), with the GB/s of weights streamed next to this
//! machine's measured read bandwidth.
//!
//! `cargo bench --bench kernels` (threads: `CHIMERA_THREADS`, default all
//! cores; `CHIMERA_BENCH_QUICK=1` for fewer repetitions).

use chimera::cpu::matmul::{matmul, AlignedBytes, Bytes};
use chimera::cpu::{ActFormat, Isa, Matrix, QType, QuantActs, ThreadPool};
use std::sync::Arc;
use std::time::Instant;

fn random_matrix(t: QType, rows: usize, cols: usize) -> Matrix {
    let mut bytes = AlignedBytes::zeroed(t.row_bytes(cols) * rows);
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    for b in bytes.as_bytes_mut().iter_mut() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        *b = s as u8;
    }
    // Sane f16 scales so no block holds NaN or infinity.
    let scale = half::f16::from_f32(0.01).to_bits().to_le_bytes();
    for blk in bytes.as_bytes_mut().chunks_exact_mut(t.block_bytes()) {
        match t {
            QType::Q4_0 | QType::Q5_0 | QType::Q8_0 => blk[..2].copy_from_slice(&scale),
            QType::Q4K | QType::Q5K => {
                blk[..2].copy_from_slice(&scale);
                blk[2..4].copy_from_slice(&scale);
            }
            QType::Q6K => blk[208..210].copy_from_slice(&scale),
            _ => {}
        }
    }
    Matrix::new(t, rows, cols, Bytes::Owned(Arc::new(bytes))).unwrap()
}

fn time<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t0 = Instant::now();
        f();
        best = best.min(t0.elapsed().as_secs_f64());
    }
    best
}

/// Wrapping sum of `v`: four 256-bit accumulators with AVX2 where the CPU
/// has it, else eight scalar lanes (which the compiler vectorizes with
/// SSE2), so the loads, not the additions, set the pace.
fn sum_u64(v: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present, checked just above.
            return unsafe { sum_u64_avx2(v) };
        }
    }
    let mut acc = [0u64; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(*x);
        }
    }
    acc.iter().chain(rest).fold(0, |a, &b| a.wrapping_add(b))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_u64_avx2(v: &[u64]) -> u64 {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi64, _mm256_loadu_si256, _mm256_setzero_si256, _mm256_storeu_si256,
    };
    let mut acc = [_mm256_setzero_si256(); 4];
    let chunks = v.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        let p = c.as_ptr().cast::<__m256i>();
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `c` holds 16 u64, four unaligned 256-bit loads.
            *a = _mm256_add_epi64(*a, unsafe { _mm256_loadu_si256(p.add(k)) });
        }
    }
    let s = _mm256_add_epi64(
        _mm256_add_epi64(acc[0], acc[1]),
        _mm256_add_epi64(acc[2], acc[3]),
    );
    let mut lanes = [0u64; 4];
    // SAFETY: `lanes` is 32 bytes.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast::<__m256i>(), s) };
    lanes.iter().chain(rest).fold(0, |a, &b| a.wrapping_add(b))
}

/// Read bandwidth of `threads` threads summing a buffer far larger than the
/// caches with wide loads (the limit a memory-bound decode step runs into).
fn read_bandwidth(pool: &ThreadPool) -> f64 {
    let n = 32 << 20; // 256 MiB of u64
    let buf: Vec<u64> = (0..n as u64).collect();
    let secs = time(5, || {
        let total = std::sync::atomic::AtomicU64::new(0);
        pool.for_ranges(n, 8192, |r| {
            total.fetch_add(sum_u64(&buf[r]), std::sync::atomic::Ordering::Relaxed);
        });
        std::hint::black_box(total.into_inner());
    });
    (n * 8) as f64 / secs / 1e9
}

fn main() {
    let quick = std::env::var("CHIMERA_BENCH_QUICK").is_ok_and(|v| v == "1");
    let threads = std::env::var("CHIMERA_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
    let pool = ThreadPool::new(threads);
    let isa = Isa::detect();
    let reps = if quick { 2 } else { 10 };
    let bw = read_bandwidth(&pool);
    println!(
        "kernels: {threads} threads, {} kernels; measured read bandwidth {bw:.1} GB/s",
        isa.name()
    );
    println!();
    println!("| tensor (270M) | type | rows x cols | decode ms | decode GB/s | % of bandwidth | batch 64 ms | batch 64 GB/s-equiv |");
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    let shapes = [
        ("lm head", QType::Q8_0, 262_144, 640),
        ("attn_q", QType::Q5_0, 1024, 640),
        ("ffn_gate/up", QType::Q5_0, 2048, 640),
        ("attn_v", QType::Q8_0, 256, 640),
        ("attn_output", QType::Q4K, 640, 1024),
        ("ffn_down", QType::Q4K, 640, 2048),
        ("ffn_down", QType::Q6K, 640, 2048),
        ("(Q4_0 file)", QType::Q4_0, 2048, 640),
        ("(Q5_K file)", QType::Q5K, 640, 2048),
    ];
    for (name, t, rows, cols) in shapes {
        let w = random_matrix(t, rows, cols);
        let batch = 64;
        let x: Vec<f32> = (0..batch * cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let fmts: [ActFormat; 1] = [t.act_format()];
        let mut acts = QuantActs::new(isa, batch, cols);
        let mut out = vec![0f32; batch * rows];
        acts.prepare(&pool, &x, 1, cols, &fmts);
        let big = rows > 100_000;
        let r = if big { reps.min(5) } else { reps * 20 };
        let dec = time(r, || matmul(&pool, isa, &w, &acts, &mut out[..rows]));
        acts.prepare(&pool, &x, batch, cols, &fmts);
        let bat = if big {
            f64::NAN
        } else {
            time(reps, || matmul(&pool, isa, &w, &acts, &mut out))
        };
        let gb = w.size_bytes() as f64 / 1e9;
        println!(
            "| {name} | {} | {rows} x {cols} | {:.3} | {:.1} | {:.0}% | {:.3} | {:.1} |",
            t.name(),
            dec * 1e3,
            gb / dec,
            100.0 * gb / dec / bw,
            bat * 1e3,
            gb * batch as f64 / bat
        );
    }
}
