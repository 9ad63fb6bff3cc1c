//! The CPU references of the CUDA kernels (tests/cuda_ref), checked
//! against each other and against first principles; no GPU or `cuda`
//! feature needed.

mod cuda_ref;

use chimera::cpu::ops;
use cuda_ref::*;
use half::f16;

/// Fills a cache with `len` positions of sequence `seq`, returning the f32
/// keys and values written (len x kv_dim each).
fn fill(cache: &mut RefCache, rng: &mut Rng, seq: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
    let d = cache.kv_dim;
    let (k, v) = (rng.vec(len * d, 1.0), rng.vec(len * d, 1.0));
    let pos: Vec<usize> = (0..len).collect();
    cache.append(&k, &v, &pos, &vec![seq; len]);
    (k, v)
}

#[test]
fn ring_slots_keep_the_last_cap_positions() {
    let mut rng = Rng(1);
    let (cap, d) = (7, 4);
    let mut cache = RefCache::new(2, cap, d);
    let (k, v) = fill(&mut cache, &mut rng, 1, 20);
    for p in 20 - cap..20 {
        let want: Vec<u16> = k[p * d..(p + 1) * d]
            .iter()
            .map(|&x| f16::from_f32(x).to_bits())
            .collect();
        assert_eq!(cache.k_row(1, p), &want[..], "key at {p}");
        let want: Vec<u16> = v[p * d..(p + 1) * d]
            .iter()
            .map(|&x| f16::from_f32(x).to_bits())
            .collect();
        assert_eq!(cache.v_row(1, p), &want[..], "value at {p}");
    }
    // Sequence 0 was never written.
    assert!(cache.k_row(0, 3).iter().all(|&b| b == 0));
}

#[test]
fn f16_attention_reference_tracks_the_exact_one() {
    let mut rng = Rng(2);
    for (case, len, cap) in [
        (
            AttnCase {
                n_heads: 4,
                n_kv_heads: 1,
                head_dim: 256,
                window: 0,
            },
            300,
            300,
        ),
        (
            AttnCase {
                n_heads: 8,
                n_kv_heads: 4,
                head_dim: 128,
                window: 64,
            },
            200,
            64 + 15,
        ),
        (
            AttnCase {
                n_heads: 2,
                n_kv_heads: 2,
                head_dim: 32,
                window: 0,
            },
            5,
            5,
        ),
    ] {
        let d = case.n_kv_heads * case.head_dim;
        let mut cache = RefCache::new(1, cap, d);
        fill(&mut cache, &mut rng, 0, len);
        let pos = [len - 1, len - 2];
        let q = rng.vec(2 * case.n_heads * case.head_dim, 0.1);
        let a = attention_f16(&q, &cache, &pos, &[0, 0], &case);
        let b = attention_f64(&q, &cache, &pos, &[0, 0], &case);
        let err = max_rel(&a, &b);
        assert!(err < 3e-3, "{case:?}: {err}");
    }
}

#[test]
fn exact_attention_is_a_softmax_over_the_window() {
    // Keys equal to the query direction at one position dominate.
    let case = AttnCase {
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 32,
        window: 3,
    };
    let mut cache = RefCache::new(1, 3 + 1, 32);
    let mut k = vec![0f32; 6 * 32];
    let mut v = vec![0f32; 6 * 32];
    for p in 0..6 {
        v[p * 32..(p + 1) * 32].fill(p as f32);
    }
    // Position 1 would dominate, but the window at position 5 is 3..=5.
    k[32..64].fill(4.0);
    cache.append(&k, &v, &(0..6).collect::<Vec<_>>(), &[0; 6]);
    let q = vec![1f32; 32];
    let out = attention_f64(&q, &cache, &[5], &[0], &case);
    // Uniform weights over positions 3, 4, 5: the mean value 4.
    assert!(out.iter().all(|&o| (o - 4.0).abs() < 1e-6), "{out:?}");
    // Without the ring's overwrites, position 1 dominates the window of 2.
    let mut full = RefCache::new(1, 6, 32);
    full.append(&k, &v, &(0..6).collect::<Vec<_>>(), &[0; 6]);
    let out = attention_f64(&q, &full, &[2], &[0], &case);
    assert!(out.iter().all(|&o| (o - 1.0).abs() < 1e-3), "{out:?}");
}

#[test]
fn rope_reference_composes_the_cpu_ops() {
    let mut rng = Rng(3);
    let hd = 64;
    let qn = rng.vec(hd, 0.2);
    let kn = rng.vec(hd, 0.2);
    let case = RopeCase {
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: hd,
        base: 10_000.0,
        freq_scale: 0.125,
        q_scale: 0.0625,
        q_norm: Some(&qn),
        k_norm: Some(&kn),
        norm_offset: 1.0,
        eps: 1e-6,
    };
    let pos = [0usize, 4097];
    let q0 = rng.vec(2 * 2 * hd, 1.0);
    let k0 = rng.vec(2 * hd, 1.0);
    let (mut q, mut k) = (q0.clone(), k0.clone());
    rope(&mut q, &mut k, &pos, &case);
    // At position 0 the rotation is the identity: only norm and scale act.
    let w: Vec<f32> = kn.iter().map(|x| x + 1.0).collect();
    let mut want = k0[..hd].to_vec();
    ops::rms_norm_inplace(&mut want, &w, 1e-6);
    assert_eq!(&k[..hd], &want[..]);
    // Rotation keeps each pair's length; the query scale multiplies it.
    let w: Vec<f32> = qn.iter().map(|x| x + 1.0).collect();
    let mut normed = q0[2 * hd..3 * hd].to_vec();
    ops::rms_norm_inplace(&mut normed, &w, 1e-6);
    let head = &q[2 * hd..3 * hd];
    for i in 0..hd / 2 {
        let before = normed[i].hypot(normed[i + hd / 2]) * 0.0625;
        let after = head[i].hypot(head[i + hd / 2]);
        assert!((before - after).abs() <= 1e-5 * (1.0 + before), "pair {i}");
    }
    assert_eq!(case.theta_scale(), 10_000f32.powf(-2.0 / 64.0));
}

#[test]
fn ulps_count_representable_steps() {
    assert_eq!(ulps(1.0, 1.0), 0);
    assert_eq!(ulps(1.0, f32::from_bits(1.0f32.to_bits() + 3)), 3);
    assert_eq!(ulps(0.0, -0.0), 0);
    assert_eq!(ulps(-f32::from_bits(1), f32::from_bits(1)), 2);
}
