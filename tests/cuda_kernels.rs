//! Our CUDA kernels against their CPU references, on random inputs, and
//! the GPU layers against the CPU model on a tiny random Gemma 3. Every
//! test prints "skipped: no CUDA device" and passes where no GPU is usable
//! (CI builds and runs them against a stub driver).
#![cfg(feature = "cuda")]

mod common;
mod cuda_ref;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use chimera::cpu::ops;
use chimera::cuda::kernels::{AttnShape, RopeArgs};
use chimera::cuda::{CudaGemma3, DeviceSamplerParams, Kernels};
use chimera::engine::sampler::Sampler;
use chimera::engine::Options;
use chimera::model::gemma3::{Batch, BatchKind, Runtime, Scratch};
use chimera::model::{load_gguf, Config, KvCache};
use common::tiny::Tiny;
use cuda_ref::*;

/// The first GPU with our kernels loaded, or `None` (and a note) when
/// there is none.
fn gpu() -> Option<Kernels> {
    let dev = match chimera::cuda::device_count().and_then(|_| chimera::cuda::open(0)) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            return None;
        }
    };
    Some(Kernels::new(&dev).expect("our kernels load on a usable GPU"))
}

fn up(v: &[f32], dev: &Device) -> Tensor {
    Tensor::from_slice(v, v.len(), dev).unwrap()
}

fn up_u32(v: &[usize], dev: &Device) -> Tensor {
    let v: Vec<u32> = v.iter().map(|&x| x as u32).collect();
    Tensor::from_slice(&v, v.len(), dev).unwrap()
}

fn down(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn rms_norm_matches_the_cpu_to_the_ulp() {
    let Some(k) = gpu() else { return };
    let dev = k.device();
    let mut rng = Rng(10);
    for (rows, n) in [(1, 64), (3, 1152), (5, 2560), (2, 5376), (7, 256)] {
        for offset in [0.0f32, 1.0] {
            let x = rng.vec(rows * n, 2.0);
            let w = rng.vec(n, 0.5);
            let w_off: Vec<f32> = w.iter().map(|v| v + offset).collect();
            let (xt, wt) = (up(&x, dev), up(&w, dev));
            // Plain.
            let out = Tensor::zeros(rows * n, DType::F32, dev).unwrap();
            k.rms_norm(&xt, &wt, offset, 1e-6, &out, false).unwrap();
            let mut want = vec![0f32; rows * n];
            ops::rms_norm(&x, &w_off, 1e-6, &mut want);
            let got = down(&out);
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| ulps(*a, *b))
                .max()
                .unwrap();
            assert!(
                worst <= 1,
                "rms_norm {rows}x{n} offset {offset}: {worst} ulps"
            );
            // Added to a residual.
            let res = rng.vec(rows * n, 1.0);
            let rt = up(&res, dev);
            k.rms_norm(&xt, &wt, offset, 1e-6, &rt, true).unwrap();
            let mut want = res.clone();
            ops::rms_norm_add(&x, &w_off, 1e-6, &mut want);
            let got = down(&rt);
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| ulps(*a, *b))
                .max()
                .unwrap();
            assert!(worst <= 1, "rms_norm_add {rows}x{n}: {worst} ulps");
        }
    }
}

#[test]
fn gelu_mul_matches_the_tanh_formula() {
    let Some(k) = gpu() else { return };
    let dev = k.device();
    let mut rng = Rng(11);
    let n = 100_003;
    let mut g = rng.vec(n, 3.0);
    g[..6].copy_from_slice(&[0.0, -0.0, 12.0, -12.0, 1e-20, -30.0]);
    let u = rng.vec(n, 1.0);
    let (gt, ut) = (up(&g, dev), up(&u, dev));
    k.gelu_mul(&gt, &ut, &gt).unwrap();
    let got = down(&gt);
    // tanhf on the GPU is within 2 ulps of the host's: a few ulps in all.
    for i in 0..n {
        let want = ops::gelu_tanh(g[i]) * u[i];
        assert!(
            (got[i] - want).abs() <= 1e-6 * want.abs() + 1e-30,
            "gelu({}) * {}: {} vs {want}",
            g[i],
            u[i],
            got[i]
        );
    }
    // ggml's f16 table (the CPU engine's GELU) agrees to f16 precision.
    let mut table = g.clone();
    ops::gelu_mul_inplace(chimera::cpu::Isa::best(), &mut table, &u);
    assert!(max_rel(&got, &table) < 4e-3);
}

#[test]
fn rope_matches_the_cpu_ops() {
    let Some(k) = gpu() else { return };
    let dev = k.device();
    let mut rng = Rng(12);
    for (hd, nq, nk, base, freq_scale, norms) in [
        (256, 8, 4, 1_000_000.0f32, 0.125f32, true),
        (256, 4, 1, 10_000.0, 1.0, true),
        (128, 4, 4, 10_000.0, 1.0, false),
        (32, 4, 2, 10_000.0, 1.0, true),
    ] {
        let pos = [0usize, 1, 17, 511, 4095, 100_000, 131_071];
        let rows = pos.len();
        let qn = rng.vec(hd, 0.3);
        let kn = rng.vec(hd, 0.3);
        let case = RopeCase {
            n_heads: nq,
            n_kv_heads: nk,
            head_dim: hd,
            base,
            freq_scale,
            q_scale: 1.0 / (hd as f32).sqrt(),
            q_norm: norms.then_some(&qn[..]),
            k_norm: norms.then_some(&kn[..]),
            norm_offset: 1.0,
            eps: 1e-6,
        };
        let q = rng.vec(rows * nq * hd, 1.0);
        let kk = rng.vec(rows * nk * hd, 1.0);
        let (qt, kt, pt) = (up(&q, dev), up(&kk, dev), up_u32(&pos, dev));
        let (qnt, knt) = (up(&qn, dev), up(&kn, dev));
        k.rope_qk(
            &qt,
            &kt,
            &pt,
            &RopeArgs {
                n_heads: nq,
                n_kv_heads: nk,
                head_dim: hd,
                theta_scale: case.theta_scale(),
                freq_scale,
                q_scale: case.q_scale,
                q_norm: norms.then_some(&qnt),
                k_norm: norms.then_some(&knt),
                norm_offset: 1.0,
                eps: 1e-6,
            },
        )
        .unwrap();
        let (mut wq, mut wk) = (q.clone(), kk.clone());
        rope(&mut wq, &mut wk, &pos, &case);
        // Angles as the reference builds them; cosf/sinf within 2 ulps.
        let (eq, ek) = (max_rel(&down(&qt), &wq), max_rel(&down(&kt), &wk));
        assert!(eq < 2e-6 && ek < 2e-6, "hd {hd}: q {eq}, k {ek}");
    }
}

#[test]
fn kv_append_writes_the_ring_slots() {
    let Some(k) = gpu() else { return };
    let dev = k.device();
    let mut rng = Rng(13);
    let (seqs, cap, kd) = (3, 9, 64);
    let mut cache = RefCache::new(seqs, cap, kd);
    let kc = Tensor::zeros(seqs * cap * kd, DType::F16, dev).unwrap();
    let vc = Tensor::zeros(seqs * cap * kd, DType::F16, dev).unwrap();
    // A prompt chunk of sequence 1 that wraps the ring, then a decode step
    // of every sequence.
    for (pos, seq) in [
        ((3..14).collect::<Vec<usize>>(), vec![1usize; 11]),
        (vec![20, 14, 0], vec![0, 1, 2]),
    ] {
        let rows = pos.len();
        let (kk, v) = (rng.vec(rows * kd, 1.0), rng.vec(rows * kd, 1.0));
        // Rows of one sequence beyond `cap` overwrite each other in order;
        // the kernel writes rows in parallel, so keep chunks within cap.
        let distinct = pos.len() <= cap;
        assert!(distinct);
        cache.append(&kk, &v, &pos, &seq);
        k.kv_append(
            &up(&kk, dev),
            &up(&v, dev),
            &kc,
            &vc,
            &up_u32(&pos, dev),
            &up_u32(&seq, dev),
            cap,
        )
        .unwrap();
    }
    let bits = |t: &Tensor| -> Vec<u16> {
        t.to_vec1::<half::f16>()
            .unwrap()
            .iter()
            .map(|h| h.to_bits())
            .collect()
    };
    assert_eq!(bits(&kc), cache.k);
    assert_eq!(bits(&vc), cache.v);
}

#[test]
fn attention_matches_the_references() {
    let Some(k) = gpu() else { return };
    let dev = k.device();
    let mut rng = Rng(14);
    // (case, cap, history per sequence, rows as (seq, pos))
    type Case = (AttnCase, usize, Vec<usize>, Vec<(usize, usize)>);
    let cases: Vec<Case> = vec![
        // Long global decode: several splits.
        (
            AttnCase {
                n_heads: 4,
                n_kv_heads: 1,
                head_dim: 256,
                window: 0,
            },
            4096,
            vec![4000],
            vec![(0, 3999)],
        ),
        // Sliding ring, GQA, three sequences at different positions.
        (
            AttnCase {
                n_heads: 8,
                n_kv_heads: 4,
                head_dim: 256,
                window: 512,
            },
            512 + 63,
            vec![2000, 300, 1],
            vec![(0, 1999), (1, 299), (2, 0)],
        ),
        // A prompt chunk of one sequence (each row sees its own prefix).
        (
            AttnCase {
                n_heads: 4,
                n_kv_heads: 2,
                head_dim: 128,
                window: 32,
            },
            32 + 15,
            vec![40],
            (24..40).map(|p| (0, p)).collect(),
        ),
        (
            AttnCase {
                n_heads: 2,
                n_kv_heads: 1,
                head_dim: 64,
                window: 0,
            },
            70,
            vec![70],
            vec![(0, 69), (0, 3)],
        ),
        (
            AttnCase {
                n_heads: 4,
                n_kv_heads: 2,
                head_dim: 32,
                window: 8,
            },
            8,
            vec![8],
            vec![(0, 7)],
        ),
    ];
    for (case, cap, lens, rows) in cases {
        let kd = case.n_kv_heads * case.head_dim;
        let seqs = lens.len();
        let mut cache = RefCache::new(seqs, cap, kd);
        for (s, &len) in lens.iter().enumerate() {
            let (kk, v) = (rng.vec(len * kd, 1.0), rng.vec(len * kd, 1.0));
            cache.append(&kk, &v, &(0..len).collect::<Vec<_>>(), &vec![s; len]);
        }
        let to_t = |b: &[u16]| {
            let h: Vec<half::f16> = b.iter().map(|&x| half::f16::from_bits(x)).collect();
            Tensor::from_slice(&h, h.len(), dev).unwrap()
        };
        let (kc, vc) = (to_t(&cache.k), to_t(&cache.v));
        let pos: Vec<usize> = rows.iter().map(|r| r.1).collect();
        let seq: Vec<usize> = rows.iter().map(|r| r.0).collect();
        let q = rng.vec(rows.len() * case.n_heads * case.head_dim, 0.15);
        let out = Tensor::zeros(q.len(), DType::F32, dev).unwrap();
        k.attention(
            &up(&q, dev),
            &kc,
            &vc,
            &up_u32(&pos, dev),
            &up_u32(&seq, dev),
            &pos,
            &out,
            &AttnShape {
                n_heads: case.n_heads,
                n_kv_heads: case.n_kv_heads,
                head_dim: case.head_dim,
                cap,
                window: case.window,
            },
        )
        .unwrap();
        let got = down(&out);
        let exact = attention_f64(&q, &cache, &pos, &seq, &case);
        let ggml = attention_f16(&q, &cache, &pos, &seq, &case);
        let (e1, e2) = (max_rel(&got, &exact), max_rel(&got, &ggml));
        // f32 accumulation against exact; the CPU's f16 accumulator to f16
        // precision.
        assert!(e1 < 1e-4 && e2 < 3e-3, "{case:?}: exact {e1}, f16 {e2}");
    }
}

/// Options for one sampling configuration.
fn opts(
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
    penalty: f32,
    seed: u64,
) -> Options {
    Options {
        temperature,
        top_k,
        top_p,
        min_p,
        repeat_penalty: penalty,
        repeat_last_n: 64,
        seed: Some(seed),
        ..Default::default()
    }
}

#[test]
fn sampling_picks_what_the_cpu_sampler_picks() {
    let Some(k) = gpu() else { return };
    let dev = k.device();
    let mut rng = Rng(15);
    let configs = [
        opts(0.0, 40, 0.9, 0.0, 1.1, 1),
        opts(0.8, 40, 0.9, 0.0, 1.1, 2),
        opts(1.0, 1, 1.0, 0.0, 1.0, 3),
        opts(0.7, 200, 0.95, 0.05, 1.3, 4),
        opts(1.2, 0, 0.9, 0.0, 1.1, 5),
        opts(1.0, 0, 1.0, 0.0, 1.0, 6),
        opts(1.0, 0, 1.0, 0.02, 1.0, 7),
        opts(2.0, 5000, 0.5, 0.0, 1.1, 8),
    ];
    let mut mismatches = 0;
    let mut draws = 0;
    for vocab in [300usize, 5000, 262_144] {
        for o in &configs {
            let steps = if vocab > 100_000 { 6 } else { 24 };
            let mut cpu = Sampler::new(o);
            let mut history: Vec<u32> = (0..70).map(|_| rng.below(vocab) as u32).collect();
            for step in 0..steps {
                // Peaked logits with ties and a few non-finite values.
                let mut logits: Vec<f32> = (0..vocab)
                    .map(|_| (rng.normal(2.0) * 4.0).round() / 4.0)
                    .collect();
                logits[rng.below(vocab)] = f32::NEG_INFINITY;
                logits[rng.below(vocab)] = f32::NAN;
                logits[rng.below(vocab)] += 12.0;
                let lt = Tensor::from_slice(&logits, (1, vocab), dev).unwrap();
                let params = [DeviceSamplerParams::new(o, step)];
                let got = k.sample(&lt, &params, &[&history]).unwrap()[0];
                let want = cpu.sample(&mut logits.clone(), &history);
                draws += 1;
                if got != want {
                    mismatches += 1;
                    eprintln!("vocab {vocab} {o:?} step {step}: gpu {got}, cpu {want}");
                    assert!(o.temperature != 0.0, "greedy must match exactly");
                }
                history.push(want);
            }
        }
    }
    // Only a draw within rounding of a boundary may differ.
    assert!(
        mismatches * 200 <= draws,
        "{mismatches} of {draws} draws differ"
    );
}

#[test]
fn sampling_a_batch_samples_each_row() {
    let Some(k) = gpu() else { return };
    let dev = k.device();
    let mut rng = Rng(16);
    let vocab = 1000;
    let rows = 5;
    let logits: Vec<f32> = (0..rows * vocab).map(|_| rng.normal(3.0)).collect();
    let configs: Vec<Options> = (0..rows as u64)
        .map(|i| opts(if i == 2 { 0.0 } else { 0.9 }, 40, 0.9, 0.0, 1.2, 40 + i))
        .collect();
    let hist: Vec<Vec<u32>> = (0..rows)
        .map(|r| (0..10).map(|i| (r * 7 + i) as u32).collect())
        .collect();
    let params: Vec<DeviceSamplerParams> = configs
        .iter()
        .map(|o| DeviceSamplerParams::new(o, 3))
        .collect();
    let hrefs: Vec<&[u32]> = hist.iter().map(|h| &h[..]).collect();
    let lt = Tensor::from_slice(&logits, (rows, vocab), dev).unwrap();
    let got = k.sample(&lt, &params, &hrefs).unwrap();
    for r in 0..rows {
        let mut s = Sampler::new(&configs[r]);
        let row = &logits[r * vocab..(r + 1) * vocab];
        // Step 3: advance the CPU sampler's counter past steps 0..2.
        for _ in 0..3 {
            s.sample(&mut row.to_vec(), &hist[r]);
        }
        assert_eq!(got[r], s.sample(&mut row.to_vec(), &hist[r]), "row {r}");
    }
}

/// CPU logits of every position of `tokens`, one forward per chunk.
fn cpu_logits(path: &std::path::Path, tokens: &[u32], chunk: usize) -> Vec<Vec<f32>> {
    let m = load_gguf(path).unwrap();
    let rt = Runtime::new(2);
    let cfg = m.config();
    let mut s = Scratch::new(cfg, rt.isa, chunk, 2);
    let mut caches = vec![KvCache::new(cfg, 64, chunk)];
    let vocab = m.vocab_size();
    let mut out = Vec::new();
    for (c, part) in tokens.chunks(chunk).enumerate() {
        let pos: Vec<usize> = (c * chunk..c * chunk + part.len()).collect();
        let rows: Vec<usize> = (0..part.len()).collect();
        let mut logits = vec![0f32; rows.len() * vocab];
        let b = Batch {
            tokens: part,
            positions: &pos,
            seqs: &vec![0; part.len()],
            logits_rows: &rows,
            kind: BatchKind::Prompt,
        };
        m.forward(&rt, &mut s, &b, &mut caches, &mut logits)
            .unwrap();
        out.extend(logits.chunks_exact(vocab).map(|l| l.to_vec()));
    }
    out
}

/// The same through the GPU's first `num_gpu` layers (the rest and the
/// head on the CPU when `num_gpu` is not all of them).
fn gpu_logits(
    path: &std::path::Path,
    tokens: &[u32],
    chunk: usize,
    num_gpu: usize,
) -> Vec<Vec<f32>> {
    let m = load_gguf(path).unwrap();
    let cfg = m.config().clone();
    let mut g = CudaGemma3::load(path, &cfg, 0, num_gpu).unwrap();
    g.prepare_caches(1, 64, chunk).unwrap();
    let rt = Runtime::new(2);
    let mut s = Scratch::new(&cfg, rt.isa, chunk, 2);
    let mut caches = vec![KvCache::new(&cfg, 64, chunk)];
    let (vocab, h) = (m.vocab_size(), cfg.hidden_size);
    let mut out = Vec::new();
    for (c, part) in tokens.chunks(chunk).enumerate() {
        let pos: Vec<usize> = (c * chunk..c * chunk + part.len()).collect();
        let rows: Vec<usize> = (0..part.len()).collect();
        let seqs = vec![0; part.len()];
        let b = Batch {
            tokens: part,
            positions: &pos,
            seqs: &seqs,
            logits_rows: &rows,
            kind: BatchKind::Prompt,
        };
        m.embed(&mut s, &b);
        let n = g
            .layers(s.hidden_mut(part.len(), h), &pos, &seqs, &rows)
            .unwrap();
        let logits = if num_gpu == cfg.num_hidden_layers {
            assert_eq!(n, rows.len());
            g.logits(n).unwrap()
        } else {
            let m_rows = m.run_layers(&rt, &mut s, &b, &mut caches, num_gpu..cfg.num_hidden_layers);
            let mut l = vec![0f32; m_rows * vocab];
            m.head(&rt, &mut s, m_rows, &mut l);
            l
        };
        out.extend(logits.chunks_exact(vocab).map(|l| l.to_vec()));
    }
    out
}

#[test]
fn gpu_layers_match_the_cpu_model() {
    let Some(_k) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let cfg = Config::tiny();
    Tiny::random(cfg.clone(), 7).write_gguf(&path, GgmlDType::F32);
    let tokens: Vec<u32> = (0..20).map(|i| (i * 37 % 300) as u32).collect();
    // Prompt chunks of 5 then single tokens cross the sliding window (8).
    let want = cpu_logits(&path, &tokens, 5);
    for (chunk, num_gpu) in [
        (5, cfg.num_hidden_layers),
        (1, cfg.num_hidden_layers),
        (5, 3),
        (1, 0),
    ] {
        let got = gpu_logits(&path, &tokens, chunk, num_gpu);
        assert_eq!(got.len(), want.len());
        for (p, (g, w)) in got.iter().zip(&want).enumerate() {
            let err = max_rel(g, w);
            assert!(
                err < 2e-3,
                "chunk {chunk}, {num_gpu} GPU layers, position {p}: {err}"
            );
        }
    }
}

#[test]
fn gpu_head_samples_greedily_like_the_cpu() {
    let Some(_k) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let cfg = Config::tiny();
    Tiny::random(cfg.clone(), 8).write_gguf(&path, GgmlDType::Q8_0);
    let m = load_gguf(&path).unwrap();
    let mut g = CudaGemma3::load(&path, &cfg, 0, cfg.num_hidden_layers).unwrap();
    g.prepare_caches(2, 32, 8).unwrap();
    let rt = Runtime::new(2);
    let mut s = Scratch::new(&cfg, rt.isa, 8, 2);
    // Two sequences decoded side by side; logits rows in reverse order.
    let tokens = [5u32, 9];
    let (pos, seqs, rows) = ([0usize, 0], [0usize, 1], [1usize, 0]);
    let b = Batch {
        tokens: &tokens,
        positions: &pos,
        seqs: &seqs,
        logits_rows: &rows,
        kind: BatchKind::Decode,
    };
    m.embed(&mut s, &b);
    let n = g
        .layers(s.hidden_mut(2, cfg.hidden_size), &pos, &seqs, &rows)
        .unwrap();
    assert_eq!(n, 2);
    let logits = g.logits(2).unwrap();
    let greedy = opts(0.0, 40, 0.9, 0.0, 1.1, 1);
    let params = [DeviceSamplerParams::new(&greedy, 0); 2];
    let ids = g.head_and_sample(2, &params, &[&[9], &[5]]).unwrap();
    let vocab = g.vocab_size().unwrap();
    for r in 0..2 {
        let want = chimera::engine::sampler::argmax(&logits[r * vocab..(r + 1) * vocab]);
        assert_eq!(ids[r], want, "row {r}");
    }
}

#[test]
fn no_device_is_one_line_not_a_panic() {
    // Whatever this machine has, asking for an absurd GPU fails cleanly.
    match chimera::cuda::resolve(chimera::engine::Device::Cuda(999)) {
        Ok(_) => panic!("cuda:999 cannot exist"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "{msg}");
            eprintln!("cuda:999 -> {msg}");
        }
    }
    // `auto` never fails.
    let auto = chimera::cuda::resolve(chimera::engine::Device::Auto).unwrap();
    if auto.is_none() {
        eprintln!("skipped: no CUDA device (auto resolves to the CPU)");
    }
}
