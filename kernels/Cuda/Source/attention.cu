// fp32 attention family (the exact path, tested against the CPU backend): BD3 / block-causal / causal / full
// training attention forward and backward (FlashAttention-2: online softmax, logsumexp saved, probabilities
// recomputed in the backward) and block-decode attention against a KV cache with a split-KV combine step.
//
// Layouts (kernels/AttentionShape.cs): qkv [B, T, 3, H, hd]; output [B, T, H*hd]; lse [B, H, T] (natural log of
// the sum of exp(scale*q.k) over allowed keys); decode cache [B, Cap, H*hd].
// Tiles of ATT_BR queries x ATT_BC keys are classified by the mask formula: empty tiles are never loaded, full
// tiles skip per-element masking, partial tiles are masked element by element.
// Block: 128 threads = 4 warps; each warp owns 8 queries (forward, dQ) or 8 keys (dK/dV); lanes run over the
// 32 keys (or queries) of a tile. head_dim <= 128 (each lane owns dims lane, lane+32, lane+64, lane+96).
#include "common.cuh"

#define ATT_BR 32
#define ATT_BC 32
#define ATT_PW 8
#define ATT_MAXT 4
#define ATT_THREADS 128

// rows [r0, r0+32) of a [*, rowStride] matrix (hd columns starting at col) into smem with row pitch `pitch`
__device__ __forceinline__ void load_rows(float* dst, int pitch, const float* src, long long rowStride, int r0, int rEnd, int hd)
{
    for (int idx = threadIdx.x; idx < 32 * hd; idx += blockDim.x)
    {
        int r = idx / hd, d = idx - r * hd;
        int gr = r0 + r;
        dst[r * pitch + d] = gr < rEnd ? src[(long long)gr * rowStride + d] : 0.f;
    }
}

__device__ __forceinline__ float dot_smem(const float* a, const float* b, int hd)
{
    float s = 0.f;
    #pragma unroll 4
    for (int d = 0; d < hd; d++) s = fmaf(a[d], b[d], s);
    return s;
}

// One key tile of the online-softmax forward for the warp's ATT_PW queries. sQw rows are this warp's queries.
// full: every (valid query, valid key) pair is allowed; otherwise mask_allowed decides. Scores for all the
// warp's queries first, then one pass over the tile's V rows shared by all of them.
__device__ __forceinline__ void fwd_tile(const float* sQw, const float* sK, const float* sV, int pitchK, int hd,
    int iBase, int T, int k0, int kValid, int kind, int blockSize, bool full, float scale,
    float (&m)[ATT_PW], float (&l)[ATT_PW], float (&acc)[ATT_PW][ATT_MAXT])
{
    int lane = threadIdx.x & 31;
    float p[ATT_PW];
    #pragma unroll
    for (int qi = 0; qi < ATT_PW; qi++)
    {
        int i = iBase + qi;
        bool ok = i < T && lane < kValid && (full || mask_allowed(kind, T, blockSize, i, k0 + lane));
        p[qi] = ok ? dot_smem(sQw + qi * hd, sK + lane * pitchK, hd) * scale : FBD_NEG_INF;
    }
    #pragma unroll
    for (int qi = 0; qi < ATT_PW; qi++)
    {
        float s = p[qi];
        float mn = fmaxf(m[qi], warp_max(s));
        float corr = mn == FBD_NEG_INF ? 1.f : (m[qi] == FBD_NEG_INF ? 0.f : expf(m[qi] - mn));
        float e = s == FBD_NEG_INF ? 0.f : expf(s - mn);
        l[qi] = l[qi] * corr + warp_sum(e);
        #pragma unroll
        for (int t = 0; t < ATT_MAXT; t++) acc[qi][t] *= corr;
        m[qi] = mn;
        p[qi] = e;
    }
    #pragma unroll 1
    for (int jj = 0; jj < kValid; jj++)
    {
        float v[ATT_MAXT];
        #pragma unroll
        for (int t = 0; t < ATT_MAXT; t++) { int d = lane + 32 * t; v[t] = d < hd ? sV[jj * pitchK + d] : 0.f; }
        #pragma unroll
        for (int qi = 0; qi < ATT_PW; qi++)
        {
            float pj = __shfl_sync(0xffffffffu, p[qi], jj);
            #pragma unroll
            for (int t = 0; t < ATT_MAXT; t++) acc[qi][t] = fmaf(pj, v[t], acc[qi][t]);
        }
    }
}

// grid (ceil(T/32), B*H), block 128, dynamic smem (32*hd + 2*32*(hd+1)) floats
extern "C" __global__ void __launch_bounds__(ATT_THREADS) fbd_attn_fwd_f32(const float* qkv, float* out, float* lse,
    int B, int H, int hd, int T, int kind, int blockSize, float scale)
{
    extern __shared__ float smem[];
    int pitchK = hd + 1;
    float* sQ = smem;
    float* sK = sQ + 32 * hd;
    float* sV = sK + 32 * pitchK;
    int bh = blockIdx.y, b = bh / H, h = bh - b * H;
    int q0 = blockIdx.x * ATT_BR, q1 = min(T, q0 + ATT_BR);
    long long rs = 3LL * H * hd;
    const float* base = qkv + (long long)b * T * rs + h * hd;
    load_rows(sQ, hd, base, rs, q0, T, hd);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float m[ATT_PW], l[ATT_PW], acc[ATT_PW][ATT_MAXT];
    #pragma unroll
    for (int qi = 0; qi < ATT_PW; qi++)
    {
        m[qi] = FBD_NEG_INF; l[qi] = 0.f;
        #pragma unroll
        for (int t = 0; t < ATT_MAXT; t++) acc[qi][t] = 0.f;
    }
    int kLo, kHi;
    key_range(kind, T, blockSize, q0, q1, &kLo, &kHi);
    for (int k0 = (kLo / ATT_BC) * ATT_BC; k0 < kHi; k0 += ATT_BC)
    {
        int k1 = min(T, k0 + ATT_BC);
        int tk = classify_tile(kind, T, blockSize, q0, q1, k0, k1);
        if (tk == TILE_EMPTY) continue;
        __syncthreads();
        load_rows(sK, pitchK, base + (long long)H * hd, rs, k0, T, hd);
        load_rows(sV, pitchK, base + 2LL * H * hd, rs, k0, T, hd);
        __syncthreads();
        fwd_tile(sQ + warp * ATT_PW * hd, sK, sV, pitchK, hd, q0 + warp * ATT_PW, T, k0, k1 - k0, kind, blockSize,
            tk == TILE_FULL, scale, m, l, acc);
    }
    #pragma unroll
    for (int qi = 0; qi < ATT_PW; qi++)
    {
        int i = q0 + warp * ATT_PW + qi;
        if (i >= T) continue;
        float inv = l[qi] > 0.f ? 1.f / l[qi] : 0.f;
        float* o = out + ((long long)b * T + i) * H * hd + h * hd;
        #pragma unroll
        for (int t = 0; t < ATT_MAXT; t++)
        {
            int d = lane + 32 * t;
            if (d < hd) o[d] = acc[qi][t] * inv;
        }
        if (lane == 0) lse[((long long)b * H + h) * T + i] = l[qi] > 0.f ? m[qi] + logf(l[qi]) : FBD_NEG_INF;
    }
}

// D[b,h,i] = sum_d dO[b,i,h,d] * O[b,i,h,d]; one warp per (b, i, h)
extern "C" __global__ void fbd_attn_bwd_dot(const float* out, const float* dOut, float* D, int B, int H, int hd, int T)
{
    int warpGlobal = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    int total = B * T * H;
    if (warpGlobal >= total) return;
    int h = warpGlobal % H, bi = warpGlobal / H, i = bi % T, b = bi / T;
    const float* o = out + (long long)bi * H * hd + h * hd;
    const float* g = dOut + (long long)bi * H * hd + h * hd;
    float s = 0.f;
    for (int d = lane; d < hd; d += 32) s = fmaf(o[d], g[d], s);
    s = warp_sum(s);
    if (lane == 0) D[((long long)b * H + h) * T + i] = s;
}

// dQ: grid (ceil(T/32), B*H); per query tile loop over key tiles. smem: Q, dO [32][hd]; K, V [32][hd+1]
extern "C" __global__ void __launch_bounds__(ATT_THREADS) fbd_attn_bwd_dq_f32(const float* qkv, const float* dOut, const float* lse,
    const float* D, float* dQkv, int B, int H, int hd, int T, int kind, int blockSize, float scale)
{
    extern __shared__ float smem[];
    int pitchK = hd + 1;
    float* sQ = smem;
    float* sG = sQ + 32 * hd;
    float* sK = sG + 32 * hd;
    float* sV = sK + 32 * pitchK;
    int bh = blockIdx.y, b = bh / H, h = bh - b * H;
    int q0 = blockIdx.x * ATT_BR, q1 = min(T, q0 + ATT_BR);
    long long rs = 3LL * H * hd, ors = (long long)H * hd;
    const float* base = qkv + (long long)b * T * rs + h * hd;
    load_rows(sQ, hd, base, rs, q0, T, hd);
    load_rows(sG, hd, dOut + (long long)b * T * ors + h * hd, ors, q0, T, hd);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float lseR[ATT_PW], dR[ATT_PW], acc[ATT_PW][ATT_MAXT];
    #pragma unroll
    for (int qi = 0; qi < ATT_PW; qi++)
    {
        int i = q0 + warp * ATT_PW + qi;
        lseR[qi] = i < T ? lse[((long long)b * H + h) * T + i] : 0.f;
        dR[qi] = i < T ? D[((long long)b * H + h) * T + i] : 0.f;
        #pragma unroll
        for (int t = 0; t < ATT_MAXT; t++) acc[qi][t] = 0.f;
    }
    int kLo, kHi;
    key_range(kind, T, blockSize, q0, q1, &kLo, &kHi);
    for (int k0 = (kLo / ATT_BC) * ATT_BC; k0 < kHi; k0 += ATT_BC)
    {
        int k1 = min(T, k0 + ATT_BC);
        int tk = classify_tile(kind, T, blockSize, q0, q1, k0, k1);
        if (tk == TILE_EMPTY) continue;
        __syncthreads();
        load_rows(sK, pitchK, base + (long long)H * hd, rs, k0, T, hd);
        load_rows(sV, pitchK, base + 2LL * H * hd, rs, k0, T, hd);
        __syncthreads();
        int kValid = k1 - k0;
        float ds[ATT_PW];
        #pragma unroll
        for (int qi = 0; qi < ATT_PW; qi++)
        {
            int i = q0 + warp * ATT_PW + qi;
            bool ok = i < T && lane < kValid && (tk == TILE_FULL || mask_allowed(kind, T, blockSize, i, k0 + lane));
            ds[qi] = 0.f;
            if (ok)
            {
                int r = warp * ATT_PW + qi;
                float p = expf(dot_smem(sQ + r * hd, sK + lane * pitchK, hd) * scale - lseR[qi]);
                float dp = dot_smem(sG + r * hd, sV + lane * pitchK, hd);
                ds[qi] = p * (dp - dR[qi]);
            }
        }
        #pragma unroll 1
        for (int jj = 0; jj < kValid; jj++)
        {
            float kv[ATT_MAXT];
            #pragma unroll
            for (int t = 0; t < ATT_MAXT; t++) { int d = lane + 32 * t; kv[t] = d < hd ? sK[jj * pitchK + d] : 0.f; }
            #pragma unroll
            for (int qi = 0; qi < ATT_PW; qi++)
            {
                float dsj = __shfl_sync(0xffffffffu, ds[qi], jj);
                #pragma unroll
                for (int t = 0; t < ATT_MAXT; t++) acc[qi][t] = fmaf(dsj, kv[t], acc[qi][t]);
            }
        }
    }
    #pragma unroll
    for (int qi = 0; qi < ATT_PW; qi++)
    {
        int i = q0 + warp * ATT_PW + qi;
        if (i >= T) continue;
        float* dq = dQkv + ((long long)b * T + i) * rs + h * hd;
        #pragma unroll
        for (int t = 0; t < ATT_MAXT; t++)
        {
            int d = lane + 32 * t;
            if (d < hd) dq[d] = acc[qi][t] * scale;
        }
    }
}

// dK, dV: grid (ceil(T/32), B*H); per key tile loop over query tiles. smem: K, V [32][hd]; Q, dO [32][hd+1]; lse, D [32]
extern "C" __global__ void __launch_bounds__(ATT_THREADS) fbd_attn_bwd_dkv_f32(const float* qkv, const float* dOut, const float* lse,
    const float* D, float* dQkv, int B, int H, int hd, int T, int kind, int blockSize, float scale)
{
    extern __shared__ float smem[];
    int pitchQ = hd + 1;
    float* sK = smem;
    float* sV = sK + 32 * hd;
    float* sQ = sV + 32 * hd;
    float* sG = sQ + 32 * pitchQ;
    float* sL = sG + 32 * pitchQ;
    float* sD = sL + 32;
    int bh = blockIdx.y, b = bh / H, h = bh - b * H;
    int k0 = blockIdx.x * ATT_BC, k1 = min(T, k0 + ATT_BC);
    long long rs = 3LL * H * hd, ors = (long long)H * hd;
    const float* base = qkv + (long long)b * T * rs + h * hd;
    load_rows(sK, hd, base + (long long)H * hd, rs, k0, T, hd);
    load_rows(sV, hd, base + 2LL * H * hd, rs, k0, T, hd);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float dk[ATT_PW][ATT_MAXT], dv[ATT_PW][ATT_MAXT];
    #pragma unroll
    for (int kj = 0; kj < ATT_PW; kj++)
        #pragma unroll
        for (int t = 0; t < ATT_MAXT; t++) { dk[kj][t] = 0.f; dv[kj][t] = 0.f; }
    for (int q0 = 0; q0 < T; q0 += ATT_BR)
    {
        int q1 = min(T, q0 + ATT_BR);
        int tk = classify_tile(kind, T, blockSize, q0, q1, k0, k1);
        if (tk == TILE_EMPTY) continue;
        __syncthreads();
        load_rows(sQ, pitchQ, base, rs, q0, T, hd);
        load_rows(sG, pitchQ, dOut + (long long)b * T * ors + h * hd, ors, q0, T, hd);
        if (threadIdx.x < 32)
        {
            int i = q0 + threadIdx.x;
            sL[threadIdx.x] = i < T ? lse[((long long)b * H + h) * T + i] : 0.f;
            sD[threadIdx.x] = i < T ? D[((long long)b * H + h) * T + i] : 0.f;
        }
        __syncthreads();
        int qValid = q1 - q0;
        float p[ATT_PW], ds[ATT_PW];
        #pragma unroll
        for (int kj = 0; kj < ATT_PW; kj++)
        {
            int r = warp * ATT_PW + kj, j = k0 + r;
            bool ok = j < T && lane < qValid && (tk == TILE_FULL || mask_allowed(kind, T, blockSize, q0 + lane, j));
            p[kj] = 0.f; ds[kj] = 0.f;
            if (ok)
            {
                p[kj] = expf(dot_smem(sQ + lane * pitchQ, sK + r * hd, hd) * scale - sL[lane]);
                float dp = dot_smem(sG + lane * pitchQ, sV + r * hd, hd);
                ds[kj] = p[kj] * (dp - sD[lane]);
            }
        }
        #pragma unroll 1
        for (int ii = 0; ii < qValid; ii++)
        {
            float gq[ATT_MAXT], qq[ATT_MAXT];
            #pragma unroll
            for (int t = 0; t < ATT_MAXT; t++)
            {
                int d = lane + 32 * t;
                gq[t] = d < hd ? sG[ii * pitchQ + d] : 0.f;
                qq[t] = d < hd ? sQ[ii * pitchQ + d] : 0.f;
            }
            #pragma unroll
            for (int kj = 0; kj < ATT_PW; kj++)
            {
                float pi = __shfl_sync(0xffffffffu, p[kj], ii), dsi = __shfl_sync(0xffffffffu, ds[kj], ii);
                #pragma unroll
                for (int t = 0; t < ATT_MAXT; t++) { dv[kj][t] = fmaf(pi, gq[t], dv[kj][t]); dk[kj][t] = fmaf(dsi, qq[t], dk[kj][t]); }
            }
        }
    }
    #pragma unroll
    for (int kj = 0; kj < ATT_PW; kj++)
    {
        int j = k0 + warp * ATT_PW + kj;
        if (j >= T) continue;
        float* g = dQkv + ((long long)b * T + j) * rs + h * hd;
        #pragma unroll
        for (int t = 0; t < ATT_MAXT; t++)
        {
            int d = lane + 32 * t;
            if (d < hd) { g[H * hd + d] = dk[kj][t] * scale; g[2 * H * hd + d] = dv[kj][t]; }
        }
    }
}

// ---- block decode: L' queries vs cache rows [0, cacheLen) + the block's own L' keys (all visible) ----
// grid (ceil(L'/32), splits, B*H). Virtual key j < cacheLen reads the cache, else qkv row j - cacheLen.
// splits == 1 writes the output; otherwise partial (acc, m, l) go to scratch for fbd_decode_combine.
// Scratch layout: pO [splits, B*H, L', hd], pM/pL [splits, B*H, L'].
__device__ __forceinline__ void load_decode_rows(float* dst, int pitch, const float* cache, const float* qkvSlot, long long cacheRowStride,
    long long qkvRowStride, int cacheLen, int r0, int rEnd, int hd)
{
    for (int idx = threadIdx.x; idx < 32 * hd; idx += blockDim.x)
    {
        int r = idx / hd, d = idx - r * hd;
        int gr = r0 + r;
        float v = 0.f;
        if (gr < rEnd) v = gr < cacheLen ? cache[(long long)gr * cacheRowStride + d] : qkvSlot[(long long)(gr - cacheLen) * qkvRowStride + d];
        dst[r * pitch + d] = v;
    }
}

extern "C" __global__ void __launch_bounds__(ATT_THREADS) fbd_decode_attn_f32(const float* qkv, const float* kCache, const float* vCache,
    float* out, float* pO, float* pM, float* pL, int B, int H, int hd, int blockLen, int cacheLen, int cacheCap, int keysPerSplit, float scale)
{
    extern __shared__ float smem[];
    int pitchK = hd + 1;
    float* sQ = smem;
    float* sK = sQ + 32 * hd;
    float* sV = sK + 32 * pitchK;
    int bh = blockIdx.z, b = bh / H, h = bh - b * H;
    int split = blockIdx.y, splits = gridDim.y;
    int q0 = blockIdx.x * ATT_BR;
    int nk = cacheLen + blockLen;
    int kStart = split * keysPerSplit, kEnd = min(nk, kStart + keysPerSplit);
    long long rs = 3LL * H * hd, cs = (long long)H * hd;
    const float* qbase = qkv + (long long)b * blockLen * rs + h * hd;
    const float* kc = kCache + (long long)b * cacheCap * cs + h * hd;
    const float* vc = vCache + (long long)b * cacheCap * cs + h * hd;
    load_rows(sQ, hd, qbase, rs, q0, blockLen, hd);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float m[ATT_PW], l[ATT_PW], acc[ATT_PW][ATT_MAXT];
    #pragma unroll
    for (int qi = 0; qi < ATT_PW; qi++)
    {
        m[qi] = FBD_NEG_INF; l[qi] = 0.f;
        #pragma unroll
        for (int t = 0; t < ATT_MAXT; t++) acc[qi][t] = 0.f;
    }
    for (int k0 = kStart; k0 < kEnd; k0 += ATT_BC)
    {
        int k1 = min(kEnd, k0 + ATT_BC);
        __syncthreads();
        load_decode_rows(sK, pitchK, kc, qbase + (long long)H * hd, cs, rs, cacheLen, k0, k1, hd);
        load_decode_rows(sV, pitchK, vc, qbase + 2LL * H * hd, cs, rs, cacheLen, k0, k1, hd);
        __syncthreads();
        fwd_tile(sQ + warp * ATT_PW * hd, sK, sV, pitchK, hd, q0 + warp * ATT_PW, blockLen, k0, k1 - k0, MASK_FULL, 1,
            true, scale, m, l, acc);
    }
    #pragma unroll
    for (int qi = 0; qi < ATT_PW; qi++)
    {
        int i = q0 + warp * ATT_PW + qi;
        if (i >= blockLen) continue;
        if (splits == 1)
        {
            float inv = l[qi] > 0.f ? 1.f / l[qi] : 0.f;
            float* o = out + ((long long)b * blockLen + i) * H * hd + h * hd;
            #pragma unroll
            for (int t = 0; t < ATT_MAXT; t++) { int d = lane + 32 * t; if (d < hd) o[d] = acc[qi][t] * inv; }
        }
        else
        {
            long long row = ((long long)split * B * H + bh) * blockLen + i;
            float* o = pO + row * hd;
            #pragma unroll
            for (int t = 0; t < ATT_MAXT; t++) { int d = lane + 32 * t; if (d < hd) o[d] = acc[qi][t]; }
            if (lane == 0) { pM[row] = m[qi]; pL[row] = l[qi]; }
        }
    }
}

// Merges split-KV partials: one warp per (b, h, i).
extern "C" __global__ void fbd_decode_combine(const float* pO, const float* pM, const float* pL, float* out,
    int B, int H, int hd, int blockLen, int splits)
{
    int w = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    int total = B * H * blockLen;
    if (w >= total) return;
    int i = w % blockLen, bh = w / blockLen, b = bh / H, h = bh - b * H;
    float M = FBD_NEG_INF;
    for (int s = 0; s < splits; s++) M = fmaxf(M, pM[((long long)s * B * H + bh) * blockLen + i]);
    float L = 0.f;
    float acc[ATT_MAXT] = { 0.f, 0.f, 0.f, 0.f };
    for (int s = 0; s < splits; s++)
    {
        long long row = ((long long)s * B * H + bh) * blockLen + i;
        float ms = pM[row];
        if (ms == FBD_NEG_INF) continue;
        float f = expf(ms - M);
        L += pL[row] * f;
        #pragma unroll
        for (int t = 0; t < ATT_MAXT; t++) { int d = lane + 32 * t; if (d < hd) acc[t] += f * pO[row * hd + d]; }
    }
    float inv = L > 0.f ? 1.f / L : 0.f;
    float* o = out + ((long long)b * blockLen + i) * H * hd + h * hd;
    #pragma unroll
    for (int t = 0; t < ATT_MAXT; t++) { int d = lane + 32 * t; if (d < hd) o[d] = acc[t] * inv; }
}
