//! The sampling chain: repeat penalty, top-k, temperature, top-p, min-p and
//! a seeded draw (Ollama's order), or argmax when the temperature is 0.
//!
//! The draw uses a counter-based generator (a hash of seed and step), not a
//! stateful one, so the same seed gives the same tokens whatever ran before,
//! and a GPU kernel can reproduce the CPU's choices exactly.

use super::options::Options;

/// A token with its logit (later its probability).
#[derive(Debug, Clone, Copy)]
struct Cand {
    id: u32,
    v: f32,
}

pub struct Sampler {
    opts: Options,
    seed: u64,
    step: u64,
    cands: Vec<Cand>,
}

impl Sampler {
    /// `opts.seed` must be set (the engine draws one when the user did not).
    pub fn new(opts: &Options) -> Self {
        Self {
            seed: opts.seed.unwrap_or(0),
            opts: opts.clone(),
            step: 0,
            cands: Vec::new(),
        }
    }

    /// Picks the next token from `logits` (modified in place by the
    /// penalty). `history` is the sequence so far, prompt included.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let step = self.step;
        self.step += 1;
        if self.opts.is_greedy() {
            return argmax(logits);
        }
        apply_repeat_penalty(
            logits,
            history,
            self.opts.repeat_last_n,
            self.opts.repeat_penalty,
        );
        let u = uniform(self.seed, step);
        self.sample_with(logits, u)
    }

    /// The chain after the penalty, with a given uniform draw `u` in [0, 1).
    fn sample_with(&mut self, logits: &[f32], u: f64) -> u32 {
        let o = &self.opts;
        let c = &mut self.cands;
        c.clear();
        if o.top_k > 0 && o.top_k < logits.len() {
            top_k_into(logits, o.top_k, c);
        } else {
            c.extend(
                logits
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| Cand { id: i as u32, v }),
            );
            c.retain(|x| !x.v.is_nan() && x.v != f32::NEG_INFINITY);
        }
        if c.is_empty() {
            return argmax(logits);
        }
        // Temperature, then softmax over the survivors.
        let inv_t = 1.0 / o.temperature;
        let max = c.iter().fold(f32::NEG_INFINITY, |m, x| m.max(x.v));
        let mut sum = 0f64;
        for x in c.iter_mut() {
            x.v = ((x.v - max) * inv_t).exp();
            sum += x.v as f64;
        }
        for x in c.iter_mut() {
            x.v = (x.v as f64 / sum) as f32;
        }
        // Only the head of the distribution matters for top-p and min-p:
        // sorting all 262k probabilities every token would cost milliseconds.
        sort_head(c, o.top_p);
        if o.top_p < 1.0 {
            let mut cum = 0f32;
            let mut keep = c.len();
            for (i, x) in c.iter().enumerate() {
                cum += x.v;
                if cum >= o.top_p {
                    keep = i + 1;
                    break;
                }
            }
            c.truncate(keep.max(1));
        }
        if o.min_p > 0.0 {
            let threshold = c[0].v * o.min_p;
            let keep = c.iter().take_while(|x| x.v >= threshold).count();
            c.truncate(keep.max(1));
        }
        let total: f64 = c.iter().map(|x| x.v as f64).sum();
        let target = u * total;
        let mut cum = 0f64;
        for x in c.iter() {
            cum += x.v as f64;
            if target < cum {
                return x.id;
            }
        }
        c.last().map(|x| x.id).unwrap_or(0)
    }
}

/// The `k` largest finite logits, best first (lower id first among equals),
/// in one pass that only touches the short list when a logit beats its
/// smallest member: far cheaper than partitioning all 262k candidates.
fn top_k_into(logits: &[f32], k: usize, out: &mut Vec<Cand>) {
    let mut floor = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        // NaN fails every comparison, so it is skipped here too.
        if v.is_nan() || v == f32::NEG_INFINITY || (out.len() == k && v <= floor) {
            continue;
        }
        // Insert keeping descending order; equal values keep their earlier id first.
        let at = out.partition_point(|x| x.v >= v);
        out.insert(at, Cand { id: i as u32, v });
        if out.len() > k {
            out.pop();
        }
        if out.len() == k {
            floor = out[k - 1].v;
        }
    }
}

/// Sorts candidates by descending probability, far enough that the prefix
/// reaching `top_p` is in order (all of them when that needs the tail).
fn sort_head(c: &mut [Cand], top_p: f32) {
    let by_prob = |a: &Cand, b: &Cand| b.v.total_cmp(&a.v).then(a.id.cmp(&b.id));
    const HEAD: usize = 256;
    if c.len() > HEAD {
        c.select_nth_unstable_by(HEAD - 1, by_prob);
        let head: f32 = c[..HEAD].iter().map(|x| x.v).sum();
        if head >= top_p.min(0.999) {
            c[..HEAD].sort_unstable_by(by_prob);
            // The tail stays unsorted but can only matter if the head falls
            // short, which it did not.
            return;
        }
    }
    c.sort_unstable_by(by_prob);
}

/// Index of the largest logit (the lowest index among equals).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut bv = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > bv {
            bv = v;
            best = i;
        }
    }
    best as u32
}

/// llama.cpp's repeat penalty: each distinct token among the last `last_n`
/// has its logit divided by `penalty` when positive, multiplied when not.
pub fn apply_repeat_penalty(logits: &mut [f32], history: &[u32], last_n: usize, penalty: f32) {
    if penalty == 1.0 || last_n == 0 {
        return;
    }
    let window = &history[history.len().saturating_sub(last_n)..];
    let mut seen: Vec<u32> = window.to_vec();
    seen.sort_unstable();
    seen.dedup();
    for id in seen {
        if let Some(l) = logits.get_mut(id as usize) {
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

/// A uniform number in [0, 1) from `(seed, counter)`: SplitMix64's mixer
/// applied twice, the top 53 bits as the mantissa.
pub fn uniform(seed: u64, counter: u64) -> f64 {
    let z = mix64(seed ^ mix64(counter.wrapping_add(0x9E37_79B9_7F4A_7C15)));
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(f: impl FnOnce(&mut Options)) -> Options {
        let mut o = Options {
            seed: Some(42),
            repeat_penalty: 1.0,
            ..Default::default()
        };
        f(&mut o);
        o
    }

    /// Logits whose softmax at temperature 1 is `probs`.
    fn logits_of(probs: &[f32]) -> Vec<f32> {
        probs.iter().map(|p| p.ln()).collect()
    }

    fn draw_all(o: &Options, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = Sampler::new(o);
        (0..n)
            .map(|_| s.sample(&mut logits.to_vec(), &[]))
            .collect()
    }

    #[test]
    fn greedy_takes_the_argmax_and_ignores_penalty() {
        let o = opts(|o| {
            o.temperature = 0.0;
            o.repeat_penalty = 5.0;
        });
        let mut s = Sampler::new(&o);
        let mut l = vec![0.1, 3.0, 2.9, -1.0];
        assert_eq!(s.sample(&mut l, &[1, 1, 1]), 1);
    }

    #[test]
    fn same_seed_same_tokens_other_seed_other_tokens() {
        let l = logits_of(&[0.2; 5]);
        let a = draw_all(&opts(|o| o.top_k = 0), &l, 64);
        let b = draw_all(&opts(|o| o.top_k = 0), &l, 64);
        let c = draw_all(
            &opts(|o| {
                o.top_k = 0;
                o.seed = Some(7)
            }),
            &l,
            64,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Every token of a flat distribution shows up.
        for id in 0..5 {
            assert!(a.contains(&id));
        }
    }

    #[test]
    fn top_k_keeps_only_the_k_best() {
        let l = logits_of(&[0.3, 0.25, 0.2, 0.15, 0.1]);
        let got = draw_all(
            &opts(|o| {
                o.top_k = 2;
                o.top_p = 1.0;
                o.temperature = 1.0;
            }),
            &l,
            500,
        );
        assert!(got.iter().all(|&t| t < 2));
        assert!(got.contains(&0) && got.contains(&1));
    }

    #[test]
    fn top_p_cuts_at_the_cumulative_mass() {
        // 0.5 + 0.3 passes 0.75: tokens 2.. are never drawn.
        let l = logits_of(&[0.5, 0.3, 0.1, 0.06, 0.04]);
        let got = draw_all(
            &opts(|o| {
                o.top_k = 0;
                o.top_p = 0.75;
                o.temperature = 1.0;
            }),
            &l,
            500,
        );
        assert!(got.iter().all(|&t| t < 2), "{got:?}");
        assert!(got.contains(&1));
    }

    #[test]
    fn min_p_drops_the_unlikely() {
        // min_p 0.5 of 0.4 = 0.2: tokens with p < 0.2 go.
        let l = logits_of(&[0.4, 0.3, 0.15, 0.15]);
        let got = draw_all(
            &opts(|o| {
                o.top_k = 0;
                o.top_p = 1.0;
                o.min_p = 0.5;
                o.temperature = 1.0;
            }),
            &l,
            500,
        );
        assert!(got.iter().all(|&t| t < 2));
        assert!(got.contains(&1));
    }

    #[test]
    fn low_temperature_sharpens() {
        let l = logits_of(&[0.4, 0.35, 0.25]);
        let cold = draw_all(
            &opts(|o| {
                o.top_k = 0;
                o.top_p = 1.0;
                o.temperature = 0.05;
            }),
            &l,
            300,
        );
        let frac = cold.iter().filter(|&&t| t == 0).count() as f32 / 300.0;
        assert!(frac > 0.9, "{frac}");
    }

    #[test]
    fn repeat_penalty_follows_llama_cpp() {
        let mut l = vec![2.0, -2.0, 1.0, 4.0];
        apply_repeat_penalty(&mut l, &[9, 0, 1, 0], 3, 2.0);
        assert_eq!(l, vec![1.0, -4.0, 1.0, 4.0]);
        // Only the last `last_n` tokens count: token 3 is outside the window.
        let mut l = vec![2.0, 2.0, 2.0, 2.0];
        apply_repeat_penalty(&mut l, &[3, 1, 2], 2, 2.0);
        assert_eq!(l, vec![2.0, 1.0, 1.0, 2.0]);
    }

    #[test]
    fn penalty_changes_what_is_drawn() {
        // Token 0 dominates until it is penalized heavily.
        let l = vec![3.0f32, 2.5, -10.0];
        let o = opts(|o| {
            o.top_k = 0;
            o.top_p = 1.0;
            o.temperature = 0.1;
            o.repeat_penalty = 10.0;
        });
        let mut s = Sampler::new(&o);
        assert_eq!(s.sample(&mut l.clone(), &[]), 0);
        assert_eq!(s.sample(&mut l.clone(), &[0]), 1);
    }

    #[test]
    fn top_k_scan_matches_a_full_sort() {
        let logits: Vec<f32> = (0..5000)
            .map(|i| ((i * 7919) % 1013) as f32 / 37.0)
            .collect();
        for k in [1, 5, 40, 100] {
            let mut got = Vec::new();
            top_k_into(&logits, k, &mut got);
            let mut all: Vec<(f32, u32)> = logits
                .iter()
                .enumerate()
                .map(|(i, &v)| (v, i as u32))
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let want: Vec<u32> = all[..k].iter().map(|x| x.1).collect();
            assert_eq!(
                got.iter().map(|c| c.id).collect::<Vec<_>>(),
                want,
                "k = {k}"
            );
        }
    }

    #[test]
    fn uniform_is_in_range_and_spread() {
        let xs: Vec<f64> = (0..10_000).map(|i| uniform(5, i)).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
