// Fused SUBS log-softmax + weighted cross-entropy: one online max/sum pass over each row, then (optionally)
// the gradient written over the logits in a second pass. One block per row.
#include "common.cuh"

__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2)
{
    float mm = fmaxf(m, m2);
    if (mm == FBD_NEG_INF) { m = mm; s = 0.f; return; }
    s = s * __expf(m - mm) + s2 * __expf(m2 - mm);
    m = mm;
}

extern "C" __global__ void fbd_subs_ce(float* logits, const int* targets, const float* weights, float* loss,
    int rows, int vocab, int maskId, float gradScale, int writeGrad)
{
    __shared__ float sm[32], ss[32];
    __shared__ float shLse;
    int r = blockIdx.x;
    if (r >= rows) return;
    float* row = logits + (long long)r * vocab;
    float w = weights[r];
    if (w == 0.f)
    {
        if (threadIdx.x == 0) loss[r] = 0.f;
        if (writeGrad) for (int j = threadIdx.x; j < vocab; j += blockDim.x) row[j] = 0.f;
        return;
    }
    float m = FBD_NEG_INF, s = 0.f;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x)
    {
        if (j == maskId) continue;
        float v = row[j];
        if (v > m) { s = s * expf(m - v) + 1.f; m = v; }
        else s += expf(v - m);
    }
    for (int o = 16; o > 0; o >>= 1)
    {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        lse_merge(m, s, m2, s2);
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { sm[warp] = m; ss[warp] = s; }
    __syncthreads();
    if (warp == 0)
    {
        int nw = blockDim.x >> 5;
        m = lane < nw ? sm[lane] : FBD_NEG_INF; s = lane < nw ? ss[lane] : 0.f;
        for (int o = 16; o > 0; o >>= 1)
        {
            float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
            lse_merge(m, s, m2, s2);
        }
        if (lane == 0)
        {
            float lse = m + logf(s);
            shLse = lse;
            int t = targets[r];
            loss[r] = w * (lse - row[t]);
        }
    }
    __syncthreads();
    if (!writeGrad) return;
    float lse = shLse, sc = gradScale * w;
    int t = targets[r];
    for (int j = threadIdx.x; j < vocab; j += blockDim.x)
    {
        float g = j == maskId ? 0.f : sc * expf(row[j] - lse);
        if (j == t && j != maskId) g -= sc;
        row[j] = g;
    }
}
