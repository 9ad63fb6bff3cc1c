// RMSNorm (optionally added to a residual) and the GELU-gated product of
// Gemma's MLP. References: cpu::ops::{rms_norm, rms_norm_add, gelu_tanh}.
#include "common.cuh"

// One block per row of `n` values:
//   add == 0: out[r] = x[r] / rms(x[r]) * (w + offset)
//   add != 0: out[r] += x[r] / rms(x[r]) * (w + offset)   (out is the residual)
// `offset` is 1 for Hugging Face Gemma checkpoints (weights stored as w - 1)
// and 0 for GGUF files, whose norms include the 1. As cpu::ops::rms_scale:
// squares in f32, their sum in f64, the scale 1 / sqrt(mean + eps) in f32.
// Every product is rounded on its own, so the result matches the reference
// to the bit whenever the f64 sum does (it is exact for the magnitudes of
// real activations, whatever the order of the additions). `out` may be `x`.
extern "C" __global__ void rms_norm_f32(const float* __restrict__ x, const float* __restrict__ w,
                                        float offset, float* out, int n, float eps, int add) {
    __shared__ double scratch[32];
    const size_t row = blockIdx.x;
    const float* xr = x + row * (size_t)n;
    float* orow = out + row * (size_t)n;
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = xr[i];
        s += (double)(v * v);
    }
    s = block_sum_f64(s, scratch);
    const float mean = (float)(s / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float g = w[i] + offset;
        const float v = (xr[i] * scale) * g;
        orow[i] = add ? orow[i] + v : v;
    }
}

// GELU with the tanh approximation, as cpu::ops::gelu_tanh writes it (one
// fused multiply-add inside). tanhf differs from the host's by at most a
// couple of ulps.
__device__ __forceinline__ float gelu_tanh(float x) {
    const float SQRT_2_OVER_PI = 0.7978846f;
    const float COEF_A = 0.044715f;
    return 0.5f * x * (1.0f + tanhf(SQRT_2_OVER_PI * x * fmaf(COEF_A * x, x, 1.0f)));
}

// out[i] = gelu_tanh(gate[i]) * up[i] for `n` values; `out` may be `gate`.
extern "C" __global__ void gelu_mul_f32(const float* gate, const float* __restrict__ up, float* out,
                                        long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        out[i] = gelu_tanh(gate[i]) * up[i];
    }
}
