// Rotary embedding of queries and keys, in place, with Gemma 3's RMSNorm of
// each head before it. References: cpu::ops::{rms_norm_inplace,
// rope_cos_sin, rope_apply}.
#include "common.cuh"

// Grid (rows, nq + nk); one block per head of a row, thread i rotating the
// NEOX pair (i, i + hd/2). Heads 0..nq are queries in `q` (row stride
// nq * hd), the rest keys in `k` (row stride nk * hd). Per head:
//   1. when `q_norm` / `k_norm` is not null, RMSNorm with that weight
//      (+ offset), as rms_norm_f32;
//   2. the angle of pair i at position p, as ggml builds it (and
//      cpu::ops::rope_cos_sin): theta = p, multiplied i times by
//      theta_scale = base^(-2/hd) (computed by the host, so the chain of
//      products is the reference's to the bit), times freq_scale (1 /
//      linear scaling factor); cosf / sinf within 2 ulps of the host's;
//   3. x0' = fma(x0, cos, -(x1 sin)), x1' = fma(x0, sin, x1 cos), the
//      roundings of cpu::ops::rope_apply;
//   4. queries multiplied by q_scale afterwards (Gemma's 1/sqrt(scalar)).
extern "C" __global__ void rope_qk_f32(float* q, float* k, const unsigned* __restrict__ pos,
                                       const float* __restrict__ q_norm,
                                       const float* __restrict__ k_norm, float norm_offset,
                                       float eps, int nq, int nk, int hd, float theta_scale,
                                       float freq_scale, float q_scale) {
    __shared__ double scratch[32];
    const int row = blockIdx.x;
    const int head = blockIdx.y;
    const int half = hd / 2;
    const bool is_q = head < nq;
    float* x = is_q ? q + ((size_t)row * nq + head) * hd : k + ((size_t)row * nk + head - nq) * hd;
    const float* w = is_q ? q_norm : k_norm;
    const int i = threadIdx.x;
    const bool active = i < half;
    float x0 = active ? x[i] : 0.0f;
    float x1 = active ? x[i + half] : 0.0f;
    if (w != nullptr) {  // uniform over the block
        double s = (double)(x0 * x0) + (double)(x1 * x1);
        s = block_sum_f64(s, scratch);
        const float mean = (float)(s / (double)hd);
        const float scale = 1.0f / sqrtf(mean + eps);
        if (active) {
            x0 = (x0 * scale) * (w[i] + norm_offset);
            x1 = (x1 * scale) * (w[i + half] + norm_offset);
        }
    }
    if (!active) return;
    float theta = (float)pos[row];
    for (int j = 0; j < i; ++j) theta = theta * theta_scale;
    const float t = theta * freq_scale;
    const float c = cosf(t), s = sinf(t);
    float a = fmaf(x0, c, -(x1 * s));
    float b = fmaf(x0, s, x1 * c);
    if (is_q) {
        a = a * q_scale;
        b = b * q_scale;
    }
    x[i] = a;
    x[i + half] = b;
}

// Appends keys and values (f32, rows x kv_dim) to an f16 cache laid out as
// [sequence][slot][kv_dim]: the row at position p of sequence s goes to
// slot p % cap (a ring for sliding-window layers, as model::KvCache).
// Rounding to nearest even, as half::f16::from_f32 and F16C do.
extern "C" __global__ void kv_append_f16(const float* __restrict__ k, const float* __restrict__ v,
                                         __half* kc, __half* vc, const unsigned* __restrict__ pos,
                                         const unsigned* __restrict__ seq, int kv_dim, int cap,
                                         long long seq_stride) {
    const int row = blockIdx.x;
    const size_t dst = (size_t)seq[row] * (size_t)seq_stride + (size_t)(pos[row] % (unsigned)cap) * kv_dim;
    const size_t src = (size_t)row * kv_dim;
    for (int c = threadIdx.x; c < kv_dim; c += blockDim.x) {
        kc[dst + c] = __float2half_rn(k[src + c]);
        vc[dst + c] = __float2half_rn(v[src + c]);
    }
}
