// Single-query attention over the f16 KV cache, split over the sequence
// (flash-decoding): every query row attends to the keys of its own
// sequence at positions [lo, p], where p is the row's position and lo is
// p + 1 - window on sliding layers (0 on global ones). A prompt chunk runs
// through the same kernel, one query per row, once its keys are appended.
// Reference: cpu::ops::F16Attention (llama.cpp's CPU numerics, with an f16
// accumulator); this kernel accumulates in f32, so the two agree to f16
// precision, not to the bit.
#include "common.cuh"

#define ATTN_WARPS 4

template <int E>
struct alignas(2 * E) HalfVec {
    __half h[E];
};

template <int E>
__device__ __forceinline__ void load_halves(const __half* p, float* out) {
    const HalfVec<E> v = *reinterpret_cast<const HalfVec<E>*>(p);
#pragma unroll
    for (int e = 0; e < E; ++e) out[e] = __half2float(v.h[e]);
}

// Grid (nq, rows, splits), ATTN_WARPS warps. Head dimension 32 * E; lane l
// owns dimensions [l E, l E + E). Keys of the block's share of [lo, p] are
// dealt round-robin to the warps; each warp keeps an online softmax (max m,
// sum l, unnormalized output), and the warps are merged at the end. With one
// split the normalized output goes to `out` (rows x nq*hd); otherwise
// (m, l, acc[hd]) goes to `part` for attn_combine_f32.
//
// Queries are rounded to f16 first, as the reference does; they arrive
// already scaled (Gemma's 1/sqrt(query_pre_attn_scalar)). The cache layout
// is kv_append_f16's: [sequence][slot][nkv * hd], position j in slot j % cap.
template <int E>
__device__ __forceinline__ void attn_split(const float* __restrict__ q, const __half* __restrict__ kc,
                                           const __half* __restrict__ vc,
                                           const unsigned* __restrict__ pos,
                                           const unsigned* __restrict__ seq, float* __restrict__ out,
                                           float* __restrict__ part, int nq, int nkv, int cap,
                                           long long seq_stride, int window, int split_len) {
    constexpr int HD = 32 * E;
    __shared__ float s_m[ATTN_WARPS], s_l[ATTN_WARPS];
    __shared__ float s_acc[ATTN_WARPS][HD];
    const int head = blockIdx.x, row = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kvh = head / (nq / nkv);
    const int kv_dim = nkv * HD;
    const unsigned p = pos[row];
    const unsigned lo = (window > 0 && p + 1 > (unsigned)window) ? p + 1 - (unsigned)window : 0u;
    const unsigned begin = lo + (unsigned)split * (unsigned)split_len;
    const unsigned end = min(p + 1, begin + (unsigned)split_len);

    float qv[E], acc[E];
    const float* qr = q + ((size_t)row * nq + head) * HD + lane * E;
#pragma unroll
    for (int e = 0; e < E; ++e) {
        qv[e] = f16_round(qr[e]);
        acc[e] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const size_t base = (size_t)seq[row] * (size_t)seq_stride + (size_t)kvh * HD + (size_t)lane * E;
    for (unsigned j = begin + warp; j < end; j += ATTN_WARPS) {
        const size_t off = base + (size_t)(j % (unsigned)cap) * kv_dim;
        float kf[E], vf[E];
        load_halves<E>(kc + off, kf);
        float s = 0.0f;
#pragma unroll
        for (int e = 0; e < E; ++e) s = fmaf(qv[e], kf[e], s);
        s = warp_sum(s);
        if (s > m) {
            const float ms = expf(m - s);  // 0 for the first key
            l = l * ms;
#pragma unroll
            for (int e = 0; e < E; ++e) acc[e] = acc[e] * ms;
            m = s;
        }
        const float w = expf(s - m);
        load_halves<E>(vc + off, vf);
#pragma unroll
        for (int e = 0; e < E; ++e) acc[e] = fmaf(w, vf[e], acc[e]);
        l = l + w;
    }
    if (lane == 0) {
        s_m[warp] = m;
        s_l[warp] = l;
    }
#pragma unroll
    for (int e = 0; e < E; ++e) s_acc[warp][lane * E + e] = acc[e];
    __syncthreads();

    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; ++w) mx = fmaxf(mx, s_m[w]);
    float scale[ATTN_WARPS];
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; ++w) {
        scale[w] = s_m[w] == -INFINITY ? 0.0f : expf(s_m[w] - mx);
        sum = sum + s_l[w] * scale[w];
    }
    float* pr = splits > 1 ? part + (((size_t)row * nq + head) * splits + split) * (HD + 2) : nullptr;
    const float inv = sum == 0.0f ? 0.0f : 1.0f / sum;
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
        float a = 0.0f;
#pragma unroll
        for (int w = 0; w < ATTN_WARPS; ++w) a = fmaf(s_acc[w][d], scale[w], a);
        if (splits == 1) {
            out[((size_t)row * nq + head) * HD + d] = a * inv;
        } else {
            pr[2 + d] = a;
        }
    }
    if (splits > 1 && threadIdx.x == 0) {
        pr[0] = mx;
        pr[1] = sum;
    }
}

// Merges the splits of each (row, head): grid (nq, rows), hd threads.
extern "C" __global__ void attn_combine_f32(const float* __restrict__ part, float* __restrict__ out,
                                            int nq, int hd, int splits) {
    const int head = blockIdx.x, row = blockIdx.y;
    const float* pr = part + ((size_t)row * nq + head) * splits * (hd + 2);
    float mx = -INFINITY;
    for (int z = 0; z < splits; ++z) mx = fmaxf(mx, pr[z * (hd + 2)]);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float a = 0.0f, sum = 0.0f;
        for (int z = 0; z < splits; ++z) {
            const float* pz = pr + z * (hd + 2);
            const float sc = pz[0] == -INFINITY ? 0.0f : expf(pz[0] - mx);
            sum = fmaf(pz[1], sc, sum);
            a = fmaf(pz[2 + d], sc, a);
        }
        out[((size_t)row * nq + head) * hd + d] = sum == 0.0f ? 0.0f : a * (1.0f / sum);
    }
}

#define ATTN_ENTRY(HD_, E_)                                                                        \
    extern "C" __global__ void __launch_bounds__(ATTN_WARPS * 32) attn_decode_f16_hd##HD_(         \
        const float* q, const __half* kc, const __half* vc, const unsigned* pos,                   \
        const unsigned* seq, float* out, float* part, int nq, int nkv, int cap,                    \
        long long seq_stride, int window, int split_len) {                                         \
        attn_split<E_>(q, kc, vc, pos, seq, out, part, nq, nkv, cap, seq_stride, window,           \
                       split_len);                                                                 \
    }

ATTN_ENTRY(32, 1)
ATTN_ENTRY(64, 2)
ATTN_ENTRY(128, 4)
ATTN_ENTRY(256, 8)
