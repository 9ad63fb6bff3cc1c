// Sampling on the device: one block per row of logits, only the chosen id
// leaves the GPU. Reference: engine::sampler::Sampler, whose chain this
// follows step by step:
//   temperature 0: argmax (lowest id among equals, NaN never chosen, 0 when
//   nothing is finite), no penalty;
//   otherwise: repeat penalty over the history window -> top-k (the k
//   largest finite logits, lower id first among equals; all finite logits
//   when top_k is 0 or >= vocab) -> softmax at the temperature (f32 exp,
//   f64 sum in the reference's candidate order, p = f32(e / sum)) -> sort by
//   (p desc, id asc) -> top-p (f32 running sum, cut where it reaches top_p)
//   -> min-p -> draw u * total over the survivors in f64, u =
//   uniform(seed, step) with the reference's SplitMix64 counter RNG.
//
// Exactness. With at most CAP candidates (any top_k <= CAP, or a small
// vocabulary) every step is the reference's, operation for operation, in
// the same order. With more (top_k 0 or above CAP over a large
// vocabulary): the softmax sum is a parallel f64 sum (its last bit may
// differ, which the rounding of p to f32 almost always absorbs); the
// sorted order is walked CAP tokens at a time so that top-p's running f32
// sum is the reference's exactly for the first MAX_CHUNKS * CAP tokens
// (past that, the cut comes from f64 sums); and a draw over more than CAP
// survivors finds its token by f64 sums over the probability bits, so it
// can differ only when u * total lands within f64 rounding of a boundary.
// expf is within 2 ulps of the host's, which can move a boundary by as
// much. One difference comes from the reference itself: with more than
// 256 candidates whose 256 most likely hold min(top_p, 0.999) of the mass
// it sorts only those, so when top-p does not stop within them (top_p 1,
// say) a draw landing in the last 0.1% of the mass follows an unspecified
// order there; this kernel always follows the sorted order.
#include "common.cuh"

#define SAMPLE_THREADS 1024
#define CAP 1024
// Chunks of CAP tokens the top-p cut is searched through exactly.
#define MAX_CHUNKS 256

// Mirrors `RowParams` in src/cuda/sampler.rs (#[repr(C)], 48 bytes).
struct SampleRow {
    float temperature;
    float top_p;
    float min_p;
    float repeat_penalty;
    unsigned top_k;
    unsigned hist_len;              // tokens in the penalty window
    unsigned long long hist_off;    // where they start in `history`
    unsigned long long seed;
    unsigned long long step;
};

__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// engine::sampler::uniform: a double in [0, 1) from (seed, counter).
__device__ __forceinline__ double uniform01(unsigned long long seed, unsigned long long counter) {
    const unsigned long long z = mix64(seed ^ mix64(counter + 0x9E3779B97F4A7C15ull));
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

__device__ __forceinline__ bool is_cand(float v) { return !isnan(v) && v != -INFINITY; }

// Order-preserving key of a non-NaN float; -0 and +0 are equal, as the
// reference's comparisons have them.
__device__ __forceinline__ unsigned logit_key(float v) {
    unsigned b = __float_as_uint(v);
    if ((b << 1) == 0) b = 0;
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

struct Shared {
    float v[CAP];
    unsigned id[CAP];
    unsigned hist[256];
    double mass[256];
    double red[32];
    float redf[32];
    unsigned wcount[32];
    unsigned u[4];
    int result;
    float cum;
};

// Argmax with the reference's rule: NaN counts as -inf; lowest index among
// equals; index 0 when nothing beats -inf.
__device__ unsigned block_argmax(const float* L, int n, Shared& s) {
    float bv = -INFINITY;
    unsigned bi = 0xffffffffu;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = L[i];
        if (isnan(v)) v = -INFINITY;
        if (v > bv || (v == bv && (unsigned)i < bi)) {
            bv = v;
            bi = i;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(FULL_MASK, bv, o);
        const unsigned oi = __shfl_xor_sync(FULL_MASK, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) {
            bv = ov;
            bi = oi;
        }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) {
        s.redf[warp] = bv;
        s.wcount[warp] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float v = s.redf[0];
        unsigned i = s.wcount[0];
        for (int w = 1; w < (int)(blockDim.x >> 5); ++w) {
            if (s.redf[w] > v || (s.redf[w] == v && s.wcount[w] < i)) {
                v = s.redf[w];
                i = s.wcount[w];
            }
        }
        s.u[0] = i == 0xffffffffu ? 0u : i;
    }
    __syncthreads();
    return s.u[0];
}

__device__ unsigned block_count(unsigned c, Shared& s) {
    __syncthreads();
    if (threadIdx.x == 0) s.u[3] = 0;
    __syncthreads();
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) c += __shfl_xor_sync(FULL_MASK, c, o);
    if ((threadIdx.x & 31) == 0) atomicAdd(&s.u[3], c);
    __syncthreads();
    return s.u[3];
}

// Among i in [0, n) for which key(i, &k) holds, finds the K-th largest key
// T (K >= 1, at least K such i): returns T, with *gt the number of keys
// above it and *eq the number equal to it.
template <class KeyF>
__device__ unsigned radix_select(int n, KeyF key, unsigned K, unsigned* gt, unsigned* eq, Shared& s) {
    unsigned prefix = 0, mask = 0, need = K, above = 0, equal = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        __syncthreads();
        for (int b = threadIdx.x; b < 256; b += blockDim.x) s.hist[b] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            unsigned k;
            if (key(i, &k) && (k & mask) == prefix) atomicAdd(&s.hist[(k >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned acc = 0;
            int d = 255;
            for (; d > 0; --d) {
                if (acc + s.hist[d] >= need) break;
                acc += s.hist[d];
            }
            s.u[0] = (unsigned)d;
            s.u[1] = acc;
            s.u[2] = s.hist[d];
        }
        __syncthreads();
        const unsigned d = s.u[0];
        above += s.u[1];
        need -= s.u[1];
        equal = s.u[2];
        prefix |= d << shift;
        mask |= 255u << shift;
    }
    *gt = above;
    *eq = equal;
    return prefix;
}

// The m-th (from 0) lowest index i in [0, n) with pred(i), or -1.
template <class Pred>
__device__ int nth_index(int n, Pred pred, unsigned m, Shared& s) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned base = 0;
    for (int start = 0; start < n; start += blockDim.x) {
        const int i = start + threadIdx.x;
        const bool f = i < n && pred(i);
        const unsigned cnt = __syncthreads_count(f);
        if (base + cnt > m) {
            const unsigned ballot = __ballot_sync(FULL_MASK, f);
            if (lane == 0) s.wcount[warp] = __popc(ballot);
            __syncthreads();
            unsigned before = __popc(ballot & ((1u << lane) - 1u));
            for (int w = 0; w < warp; ++w) before += s.wcount[w];
            if (f && base + before == m) s.result = i;
            __syncthreads();
            return s.result;
        }
        base += cnt;
    }
    return -1;
}

// Bitonic sort of s.v / s.id[0..count), padded to a power of two; by id
// ascending when by_id, else by (v desc, id asc). Padding sorts last.
__device__ void block_sort(unsigned count, bool by_id, Shared& s) {
    unsigned P = 1;
    while (P < count) P <<= 1;
    for (unsigned i = count + threadIdx.x; i < P; i += blockDim.x) {
        s.v[i] = -INFINITY;
        s.id[i] = 0xffffffffu;
    }
    __syncthreads();
    for (unsigned k = 2; k <= P; k <<= 1) {
        for (unsigned j = k >> 1; j > 0; j >>= 1) {
            for (unsigned i = threadIdx.x; i < P; i += blockDim.x) {
                const unsigned x = i ^ j;
                if (x > i) {
                    const float vi = s.v[i], vx = s.v[x];
                    const unsigned ii = s.id[i], ix = s.id[x];
                    // Does x belong before i?
                    const bool x_first = by_id ? ix < ii : (vx > vi || (vx == vi && ix < ii));
                    const bool up = (i & k) == 0;
                    if (up == x_first) {
                        s.v[i] = vx;
                        s.v[x] = vi;
                        s.id[i] = ix;
                        s.id[x] = ii;
                    }
                }
            }
            __syncthreads();
        }
    }
}

// The reference's tail on sorted probabilities s.v[0..n) (one thread):
// top-p (skipped when top_p >= 1), min-p, then the draw. When top-p does
// not reach top_p within the n held and `more` says there are more
// candidates than that, returns 0xffffffff: the caller goes on with all.
__device__ unsigned finish(const Shared& s, unsigned n, float top_p, float min_p, double u,
                           bool more) {
    unsigned keep = n;
    if (top_p < 1.0f) {
        float cum = 0.0f;
        bool reached = false;
        for (unsigned i = 0; i < n; ++i) {
            cum += s.v[i];
            if (cum >= top_p) {
                keep = i + 1;
                reached = true;
                break;
            }
        }
        if (!reached && more) return 0xffffffffu;
    } else if (more) {
        return 0xffffffffu;
    }
    if (min_p > 0.0f) {
        const float threshold = s.v[0] * min_p;
        unsigned k = 0;
        while (k < keep && s.v[k] >= threshold) ++k;
        keep = k > 1 ? k : 1;
    }
    double total = 0.0;
    for (unsigned i = 0; i < keep; ++i) total += (double)s.v[i];
    const double target = u * total;
    double cum = 0.0;
    for (unsigned i = 0; i < keep; ++i) {
        cum += (double)s.v[i];
        if (target < cum) return s.id[i];
    }
    return s.id[keep - 1];
}

// Walks the tokens of `set` (set(i, &p) gives membership and p) in
// (p desc, id asc) order, adding their probabilities, to the first whose
// running total passes `target` (target < total, as the draw's test; or
// total >= target when `inclusive`, as top-p's). The total is formed one
// byte of the probability bits at a time with f64 sums; within a group of
// equal probabilities q the reference adds q per token in id order, which
// is counted out. Returns the token, or -1 when the set's total falls
// short.
template <class SetF>
__device__ int descend(int n, SetF set, double target, bool inclusive, Shared& s) {
    unsigned prefix = 0, mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        __syncthreads();
        for (int b = threadIdx.x; b < 256; b += blockDim.x) {
            s.mass[b] = 0.0;
            s.hist[b] = 0;
        }
        __syncthreads();
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            float p;
            if (!set(i, &p)) continue;
            const unsigned k = __float_as_uint(p);
            if ((k & mask) != prefix) continue;
            atomicAdd(&s.mass[(k >> shift) & 255u], (double)p);
            atomicAdd(&s.hist[(k >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            double cum = 0.0;
            int d = 255;
            for (; d >= 0; --d) {
                if (s.hist[d] == 0) continue;
                const double next = cum + s.mass[d];
                if (inclusive ? next >= target : target < next) break;
                cum = next;
            }
            s.u[0] = d < 0 ? 0xffffffffu : (unsigned)d;
            s.red[1] = target - cum;
        }
        __syncthreads();
        if (s.u[0] == 0xffffffffu) return -1;
        prefix |= s.u[0] << shift;
        mask |= 255u << shift;
        target = s.red[1];
    }
    const float q = __uint_as_float(prefix);
    unsigned c = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float p;
        c += (set(i, &p) && __float_as_uint(p) == prefix) ? 1u : 0u;
    }
    const unsigned group = block_count(c, s);
    unsigned j = group - 1;
    if (q > 0.0f) {
        const double f = target / (double)q;
        const double k = inclusive ? ceil(f) - 1.0 : floor(f);
        if (k < 0.0) {
            j = 0;
        } else if (k < (double)(group - 1)) {
            j = (unsigned)k;
        }
    }
    return nth_index(
        n, [&](int i) { float p; return set(i, &p) && __float_as_uint(p) == prefix; }, j, s);
}

// The last token of `set` in (p desc, id asc) order: where the reference's
// draw ends when rounding leaves the target past the total.
template <class SetF>
__device__ unsigned last_of(int n, SetF set, Shared& s) {
    __syncthreads();
    if (threadIdx.x == 0) {
        s.u[0] = 0xffffffffu;
        s.u[1] = 0;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float p;
        if (set(i, &p)) atomicMin(&s.u[0], __float_as_uint(p));
    }
    __syncthreads();
    const unsigned lowest = s.u[0];
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float p;
        if (set(i, &p) && __float_as_uint(p) == lowest) atomicMax(&s.u[1], (unsigned)i);
    }
    __syncthreads();
    return s.u[1];
}

// Grid: one block of SAMPLE_THREADS per row. `logits` (rows x vocab) get
// the penalty applied in place; out[row] is the chosen id.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_f32(float* logits, int vocab, const SampleRow* __restrict__ rows,
               const unsigned* __restrict__ history, unsigned* __restrict__ out) {
    __shared__ Shared s;
    const SampleRow P = rows[blockIdx.x];
    float* L = logits + (size_t)blockIdx.x * vocab;
    const int tid = threadIdx.x;

    if (P.temperature == 0.0f) {
        const unsigned id = block_argmax(L, vocab, s);
        if (tid == 0) out[blockIdx.x] = id;
        return;
    }

    // Repeat penalty: each distinct token of the window once.
    if (P.repeat_penalty != 1.0f && P.hist_len > 0) {
        const unsigned* h = history + P.hist_off;
        for (unsigned t = tid; t < P.hist_len; t += blockDim.x) {
            const unsigned id = h[t];
            bool dup = false;
            for (unsigned j = 0; j < t && !dup; ++j) dup = h[j] == id;
            if (!dup && id < (unsigned)vocab) {
                const float x = L[id];
                L[id] = x > 0.0f ? x / P.repeat_penalty : x * P.repeat_penalty;
            }
        }
        __syncthreads();
    }

    // Candidates: the top-k, or every finite logit.
    unsigned mine = 0;
    float mx = -INFINITY;
    for (int i = tid; i < vocab; i += blockDim.x) {
        const float v = L[i];
        if (is_cand(v)) {
            ++mine;
            mx = fmaxf(mx, v);
        }
    }
    const unsigned finite = block_count(mine, s);
    mx = block_max(mx, s.redf);
    const bool topk = P.top_k > 0 && P.top_k < (unsigned)vocab;
    const unsigned K = topk ? min(P.top_k, finite) : finite;
    if (K == 0) {
        const unsigned id = block_argmax(L, vocab, s);
        if (tid == 0) out[blockIdx.x] = id;
        return;
    }
    const bool limited = K < finite;
    unsigned T = 0, tie_max = 0xffffffffu;
    if (limited) {
        unsigned gt, eq;
        T = radix_select(
            vocab,
            [&](int i, unsigned* k) {
                const float v = L[i];
                if (!is_cand(v)) return false;
                *k = logit_key(v);
                return true;
            },
            K, &gt, &eq, s);
        const unsigned need = K - gt;
        if (eq > need) {
            tie_max = (unsigned)nth_index(
                vocab, [&](int i) { const float v = L[i]; return is_cand(v) && logit_key(v) == T; },
                need - 1, s);
        }
    }
    auto member = [&](int i, float v) {
        if (!is_cand(v)) return false;
        if (!limited) return true;
        const unsigned k = logit_key(v);
        return k > T || (k == T && (unsigned)i <= tie_max);
    };
    const float inv_t = 1.0f / P.temperature;
    const double u = uniform01(P.seed, P.step);

    if (K <= CAP) {
        // Every candidate in shared memory: the reference, step by step.
        __syncthreads();
        if (tid == 0) s.u[3] = 0;
        __syncthreads();
        for (int i = tid; i < vocab; i += blockDim.x) {
            const float v = L[i];
            if (member(i, v)) {
                const unsigned at = atomicAdd(&s.u[3], 1u);
                s.v[at] = v;
                s.id[at] = i;
            }
        }
        __syncthreads();
        // The reference sums in its candidate order: best first after a
        // top-k, by id otherwise.
        block_sort(K, !topk, s);
        for (unsigned i = tid; i < K; i += blockDim.x) s.v[i] = expf((s.v[i] - mx) * inv_t);
        __syncthreads();
        if (tid == 0) {
            double sum = 0.0;
            for (unsigned i = 0; i < K; ++i) sum += (double)s.v[i];
            s.red[0] = sum;
        }
        __syncthreads();
        const double sum = s.red[0];
        for (unsigned i = tid; i < K; i += blockDim.x) s.v[i] = (float)((double)s.v[i] / sum);
        __syncthreads();
        block_sort(K, false, s);
        if (tid == 0) out[blockIdx.x] = finish(s, K, P.top_p, P.min_p, u, false);
        return;
    }

    // More than CAP candidates: a parallel softmax sum; then the sorted
    // order is taken CAP tokens at a time, carrying top-p's running f32 sum
    // from chunk to chunk exactly as the reference adds it.
    double part = 0.0;
    for (int i = tid; i < vocab; i += blockDim.x) {
        const float v = L[i];
        if (member(i, v)) part += (double)expf((v - mx) * inv_t);
    }
    const double sum = block_sum_f64(part, s.red);
    auto prob = [&](float v) { return (float)((double)expf((v - mx) * inv_t) / sum); };
    const bool filter = P.min_p > 0.0f;
    float threshold = 0.0f;
    unsigned taken = 0, last_k = 0, last_id = 0;
    bool cut = false;
    unsigned cut_k = 0, cut_id = 0;
    if (tid == 0) s.cum = 0.0f;
    for (int chunk = 0; chunk < MAX_CHUNKS && taken < K; ++chunk) {
        const unsigned take = min((unsigned)CAP, K - taken);
        const bool first = chunk == 0;
        // Members after the last one taken, in (p desc, id asc) order.
        auto after = [&](int i, unsigned* k) {
            const float v = L[i];
            if (!member(i, v)) return false;
            const unsigned key = __float_as_uint(prob(v));
            if (!first && !(key < last_k || (key == last_k && (unsigned)i > last_id))) return false;
            *k = key;
            return true;
        };
        unsigned gt, eq;
        const unsigned T = radix_select(vocab, after, take, &gt, &eq, s);
        unsigned tie = 0xffffffffu;
        if (eq > take - gt) {
            tie = (unsigned)nth_index(
                vocab, [&](int i) { unsigned k; return after(i, &k) && k == T; }, take - gt - 1, s);
        }
        __syncthreads();
        if (tid == 0) s.u[3] = 0;
        __syncthreads();
        for (int i = tid; i < vocab; i += blockDim.x) {
            unsigned k;
            if (after(i, &k) && (k > T || (k == T && (unsigned)i <= tie))) {
                const unsigned at = atomicAdd(&s.u[3], 1u);
                s.v[at] = __uint_as_float(k);
                s.id[at] = i;
            }
        }
        __syncthreads();
        block_sort(take, false, s);
        if (first) {
            // Top-p within the CAP most likely: the reference exactly.
            if (tid == 0) s.u[0] = finish(s, take, P.top_p, P.min_p, u, true);
            __syncthreads();
            const unsigned chosen = s.u[0];
            if (chosen != 0xffffffffu) {
                if (tid == 0) out[blockIdx.x] = chosen;
                return;
            }
            // Top-p keeps more than CAP (or is off). Min-p keeps a prefix of
            // the sorted tokens: if it fits here, the reference exactly.
            if (filter) {
                threshold = s.v[0] * P.min_p;
                unsigned c = 0;
                for (int i = tid; i < vocab; i += blockDim.x) {
                    const float v = L[i];
                    c += (member(i, v) && prob(v) >= threshold) ? 1u : 0u;
                }
                if (block_count(c, s) <= take) {
                    if (tid == 0) out[blockIdx.x] = finish(s, take, 2.0f, P.min_p, u, false);
                    return;
                }
            }
            if (P.top_p >= 1.0f) break;
        }
        if (tid == 0) {
            float cum = s.cum;
            unsigned hit = 0xffffffffu;
            for (unsigned i = 0; i < take; ++i) {
                cum += s.v[i];
                if (cum >= P.top_p) {
                    hit = i;
                    break;
                }
            }
            s.cum = cum;
            s.u[0] = hit;
        }
        __syncthreads();
        const unsigned hit = s.u[0];
        if (hit != 0xffffffffu) {
            cut = true;
            cut_k = __float_as_uint(s.v[hit]);
            cut_id = s.id[hit];
            break;
        }
        last_k = __float_as_uint(s.v[take - 1]);
        last_id = s.id[take - 1];
        taken += take;
        __syncthreads();
    }
    if (!cut && P.top_p < 1.0f && taken < K) {
        // Beyond MAX_CHUNKS * CAP tokens: the cut found with f64 sums.
        auto rest = [&](int i, float* p) {
            const float v = L[i];
            if (!member(i, v)) return false;
            *p = prob(v);
            const unsigned key = __float_as_uint(*p);
            return key < last_k || (key == last_k && (unsigned)i > last_id);
        };
        const int c = descend(vocab, rest, (double)P.top_p - (double)s.cum, true, s);
        if (c >= 0) {
            cut = true;
            cut_k = __float_as_uint(prob(L[c]));
            cut_id = (unsigned)c;
        }
    }

    // The draw over the survivors in (p desc, id asc) order, by descending
    // the probability bits with f64 sums.
    auto kept = [&](int i, float* p) {
        const float v = L[i];
        if (!member(i, v)) return false;
        *p = prob(v);
        const unsigned key = __float_as_uint(*p);
        if (cut && !(key > cut_k || (key == cut_k && (unsigned)i <= cut_id))) return false;
        return !filter || *p >= threshold;
    };
    double tpart = 0.0;
    for (int i = tid; i < vocab; i += blockDim.x) {
        float p;
        if (kept(i, &p)) tpart += (double)p;
    }
    const double total = block_sum_f64(tpart, s.red);
    int id = descend(vocab, kept, u * total, false, s);
    if (id < 0) id = (int)last_of(vocab, kept, s);
    if (tid == 0) out[blockIdx.x] = (unsigned)id;
}
