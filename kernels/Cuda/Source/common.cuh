// Shared helpers for every FastBlockDiff kernel. NVRTC-only: no system headers are included (NVRTC 11.8
// ships none), so bf16 conversion is done on bits and tensor-core ops are inline PTX.
#pragma once

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;

#define FBD_INF __int_as_float(0x7f800000)
#define FBD_NEG_INF __int_as_float(0xff800000)

// ---- bf16 <-> fp32 on bits ----
__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float(((u32)h) << 16); }

// round to nearest even; NaN stays NaN
__device__ __forceinline__ u16 f32_to_bf16(float f)
{
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

// two floats into one register of packed bf16 (lo in the low half), as mma.sync expects
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi)
{
    return ((u32)f32_to_bf16(hi) << 16) | (u32)f32_to_bf16(lo);
}

// ---- reductions ----
__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide sum; every thread gets the result. scratch holds >= 32 floats. blockDim.x multiple of 32.
__device__ __forceinline__ float block_sum(float v, float* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nw ? scratch[lane] : 0.f;
    return warp_sum(v);
}
__device__ __forceinline__ double block_sum_d(double v, double* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nw ? scratch[lane] : 0.0;
    return warp_sum_d(v);
}
__device__ __forceinline__ float block_max(float v, float* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nw ? scratch[lane] : FBD_NEG_INF;
    return warp_max(v);
}

// ---- dropout: the same splitmix64 hash as kernels/Dropout.cs ----
__device__ __forceinline__ u64 fbd_mix(u64 seed, u64 index)
{
    u64 z = seed + (index + 1ull) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
__device__ __forceinline__ bool fbd_keep(u64 seed, u64 index, float p)
{
    return p <= 0.f || (float)(fbd_mix(seed, index) >> 40) * (1.0f / 16777216.0f) >= p;
}

// ---- attention masks: the formulas of kernels/Bd3Mask.cs ----
// kind: 0 = Bd3, 1 = BlockCausal, 2 = Causal, 3 = Full (the MaskKind enum order)
#define MASK_BD3 0
#define MASK_BLOCK_CAUSAL 1
#define MASK_CAUSAL 2
#define MASK_FULL 3
#define TILE_EMPTY 0
#define TILE_FULL 1
#define TILE_PARTIAL 2

__device__ __forceinline__ bool mask_allowed(int kind, int seqLen, int blockSize, int i, int j)
{
    if (kind == MASK_FULL) return true;
    if (kind == MASK_CAUSAL) return j <= i;
    if (kind == MASK_BLOCK_CAUSAL) return j / blockSize <= i / blockSize;
    int l = seqLen >> 1;
    bool noisyI = i < l, noisyJ = j < l;
    int bi = (i % l) / blockSize, bj = (j % l) / blockSize;
    if (noisyI) return noisyJ ? bi == bj : bj < bi;
    return !noisyJ && bj <= bi;
}

// One quadrant of the BD3 mask (neither range crosses the noisy/clean boundary l).
__device__ __forceinline__ int bd3_quadrant(int l, int blockSize, int q0, int q1, int k0, int k1)
{
    bool noisyQ = q0 < l, noisyK = k0 < l;
    int qb0 = (q0 % l) / blockSize, qb1 = ((q1 - 1) % l) / blockSize;
    int kb0 = (k0 % l) / blockSize, kb1 = ((k1 - 1) % l) / blockSize;
    if (!noisyQ && noisyK) return TILE_EMPTY;
    if (noisyQ && noisyK)
    {
        if (kb1 < qb0 || kb0 > qb1) return TILE_EMPTY;
        return (qb0 == qb1 && kb0 == kb1 && qb0 == kb0) ? TILE_FULL : TILE_PARTIAL;
    }
    if (noisyQ)
    {
        if (kb0 >= qb1) return TILE_EMPTY;
        return kb1 < qb0 ? TILE_FULL : TILE_PARTIAL;
    }
    if (kb0 > qb1) return TILE_EMPTY;
    return kb1 <= qb0 ? TILE_FULL : TILE_PARTIAL;
}

// Port of Bd3Mask.ClassifyTile for queries [q0,q1) x keys [k0,k1) (both non-empty).
__device__ __forceinline__ int classify_tile(int kind, int seqLen, int blockSize, int q0, int q1, int k0, int k1)
{
    if (kind == MASK_FULL) return TILE_FULL;
    if (kind == MASK_CAUSAL) blockSize = 1;
    if (kind == MASK_CAUSAL || kind == MASK_BLOCK_CAUSAL)
    {
        if (k0 / blockSize > (q1 - 1) / blockSize) return TILE_EMPTY;
        if ((k1 - 1) / blockSize <= q0 / blockSize) return TILE_FULL;
        return TILE_PARTIAL;
    }
    int l = seqLen >> 1;
    int qa[2] = { q0, q1 }, qb[2] = { q1, q1 };
    int ka[2] = { k0, k1 }, kb[2] = { k1, k1 };
    int nq = 1, nk = 1;
    if (q0 < l && q1 > l) { qb[0] = l; qa[1] = l; qb[1] = q1; nq = 2; }
    if (k0 < l && k1 > l) { kb[0] = l; ka[1] = l; kb[1] = k1; nk = 2; }
    bool any = false, all = true;
    for (int a = 0; a < nq; a++)
        for (int b = 0; b < nk; b++)
        {
            int t = bd3_quadrant(l, blockSize, qa[a], qb[a], ka[b], kb[b]);
            any = any || t != TILE_EMPTY;
            all = all && t == TILE_FULL;
        }
    return !any ? TILE_EMPTY : (all ? TILE_FULL : TILE_PARTIAL);
}

// A hull [kLo, kHi) of the keys that queries [q0,q1) can see (tiles outside it are all empty; inside,
// classify_tile still decides). Only an optimisation: it shortens the tile loop.
__device__ __forceinline__ void key_range(int kind, int seqLen, int blockSize, int q0, int q1, int* kLo, int* kHi)
{
    *kLo = 0; *kHi = seqLen;
    if (kind == MASK_CAUSAL) { *kHi = min(seqLen, q1); return; }
    if (kind == MASK_BLOCK_CAUSAL) { *kHi = min(seqLen, ((q1 - 1) / blockSize + 1) * blockSize); return; }
    if (kind != MASK_BD3) return;
    int l = seqLen >> 1;
    if (q0 >= l) { *kLo = l; *kHi = min(seqLen, l + ((q1 - 1 - l) / blockSize + 1) * blockSize); return; }
    *kLo = (q0 / blockSize) * blockSize;
    if (q1 <= l)
    {
        int qb1 = (q1 - 1) / blockSize;
        *kHi = qb1 > 0 ? l + qb1 * blockSize : blockSize;
    }
}
