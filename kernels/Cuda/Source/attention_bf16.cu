// bf16 tensor-core attention forward (FlashAttention-2): qkv read in fp32 and rounded to bf16 while staged in shared
// memory, S = Q.K^T and O += P.V on mma.sync.m16n8k16 (bf16 in, fp32 accumulate), softmax statistics in fp32, output
// and logsumexp in fp32 (same layouts as attention.cu). sm_80+ only: the tensor-core path is compiled under
// __CUDA_ARCH__ >= 800, older targets trap.
//
// Block: 64 queries x 64-key tiles, 4 warps, each warp owns 16 query rows. Tiles are classified from the mask formula
// at two levels: the block's 64x64 tile (empty: never loaded; full: no per-element mask) and, inside partial tiles,
// each warp's 16 rows x each 8-key column group, so an empty 16x8 piece costs no mma. With small block sizes
// (L' = 1..16) the BD3 noisy diagonal is therefore paid per 16x8 piece, not per 64x64 tile.
#include "common.cuh"

#define BF_BR 64
#define BF_BC 64
#define BF_THREADS 128
#define BF_PAD 8

__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    __trap();
#endif
}

__device__ __forceinline__ u32 ld_pair(const u16* p) { return *(const u32*)p; }
__device__ __forceinline__ u32 pair_of(u16 lo, u16 hi) { return ((u32)hi << 16) | (u32)lo; }

// rows [r0, r0+64) x HD of an fp32 [*, rowStride] matrix into bf16 smem with pitch HD+BF_PAD; rows >= rEnd are zero
template <int HD>
__device__ __forceinline__ void stage_bf16(u16* dst, const float* src, long long rowStride, int r0, int rEnd)
{
    const int pitch = HD + BF_PAD;
    for (int idx = threadIdx.x; idx < 64 * (HD / 2); idx += BF_THREADS)
    {
        int r = idx / (HD / 2), c = (idx - r * (HD / 2)) * 2;
        int gr = r0 + r;
        float x0 = 0.f, x1 = 0.f;
        if (gr < rEnd) { const float* s = src + (long long)gr * rowStride + c; x0 = s[0]; x1 = s[1]; }
        *(u32*)(dst + r * pitch + c) = pack_bf16x2(x0, x1);
    }
}

template <int HD>
__device__ __forceinline__ void attn_fwd_bf16(const float* qkv, float* out, float* lse, int B, int H, int T, int kind, int blockSize, float scale)
{
    extern __shared__ __align__(16) unsigned char smemRaw[];
    const int pitch = HD + BF_PAD;
    u16* sQ = (u16*)smemRaw;
    u16* sK = sQ + 64 * pitch;
    u16* sV = sK + 64 * pitch;
    int bh = blockIdx.y, b = bh / H, h = bh - b * H;
    int q0 = blockIdx.x * BF_BR, q1 = min(T, q0 + BF_BR);
    long long rs = 3LL * H * HD;
    const float* base = qkv + (long long)b * T * rs + h * HD;
    stage_bf16<HD>(sQ, base, rs, q0, T);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    int wq0 = q0 + warp * 16, wq1 = min(T, wq0 + 16);     // this warp's query rows
    int row0 = wq0 + g, row1 = wq0 + g + 8;               // the two rows this thread holds
    float o[HD / 8][4];
    #pragma unroll
    for (int i = 0; i < HD / 8; i++) { o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f; }
    float m0 = FBD_NEG_INF, m1 = FBD_NEG_INF, l0 = 0.f, l1 = 0.f;
    const float sl2 = scale * 1.4426950408889634f;        // exp(x) = exp2(x*log2 e)
    int kLo, kHi;
    key_range(kind, T, blockSize, q0, q1, &kLo, &kHi);
    for (int k0 = (kLo / BF_BC) * BF_BC; k0 < kHi; k0 += BF_BC)
    {
        int k1 = min(T, k0 + BF_BC);
        int tk = classify_tile(kind, T, blockSize, q0, q1, k0, k1);
        if (tk == TILE_EMPTY) continue;
        __syncthreads();
        stage_bf16<HD>(sK, base + (long long)H * HD, rs, k0, T);
        stage_bf16<HD>(sV, base + 2LL * H * HD, rs, k0, T);
        __syncthreads();
        if (wq0 >= T) continue;
        // per-warp classification of each 8-key column group: bit n set = not empty; full = no per-element mask
        u32 live = 0, fullBits = 0;
        #pragma unroll
        for (int n = 0; n < 8; n++)
        {
            int c0 = k0 + n * 8;
            if (c0 >= k1) continue;
            int c = tk == TILE_FULL ? TILE_FULL : classify_tile(kind, T, blockSize, wq0, wq1, c0, min(k1, c0 + 8));
            if (c != TILE_EMPTY) live |= 1u << n;
            if (c == TILE_FULL && min(k1, c0 + 8) == c0 + 8) fullBits |= 1u << n;
        }
        if (live == 0) continue;
        // S = Q K^T for 16 rows x 64 keys
        float s[8][4];
        #pragma unroll
        for (int n = 0; n < 8; n++) { s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f; }
        #pragma unroll
        for (int kc = 0; kc < HD / 16; kc++)
        {
            const u16* qa = sQ + (warp * 16 + g) * pitch + kc * 16 + t4 * 2;
            u32 a0 = ld_pair(qa), a1 = ld_pair(qa + 8 * pitch), a2 = ld_pair(qa + 8), a3 = ld_pair(qa + 8 * pitch + 8);
            #pragma unroll
            for (int n = 0; n < 8; n++)
            {
                if (!(live & (1u << n))) continue;
                const u16* kb = sK + (n * 8 + g) * pitch + kc * 16 + t4 * 2;
                mma_bf16_16816(s[n], a0, a1, a2, a3, ld_pair(kb), ld_pair(kb + 8));
            }
        }
        // mask, row maxima (rows row0: s[n][0..1], row1: s[n][2..3])
        float mx0 = FBD_NEG_INF, mx1 = FBD_NEG_INF;
        #pragma unroll
        for (int n = 0; n < 8; n++)
        {
            #pragma unroll
            for (int e = 0; e < 4; e++)
            {
                int col = k0 + n * 8 + t4 * 2 + (e & 1), row = e < 2 ? row0 : row1;
                bool ok = (live & (1u << n)) && col < k1 && row < T
                    && ((fullBits & (1u << n)) || mask_allowed(kind, T, blockSize, row, col));
                s[n][e] = ok ? s[n][e] * sl2 : FBD_NEG_INF;
            }
            mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
            mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1)); mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1)); mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
        float c0 = n0 == FBD_NEG_INF ? 1.f : exp2f(m0 - n0), c1 = n1 == FBD_NEG_INF ? 1.f : exp2f(m1 - n1);
        float rs0 = 0.f, rs1 = 0.f;
        #pragma unroll
        for (int n = 0; n < 8; n++)
        {
            s[n][0] = s[n][0] == FBD_NEG_INF ? 0.f : exp2f(s[n][0] - n0);
            s[n][1] = s[n][1] == FBD_NEG_INF ? 0.f : exp2f(s[n][1] - n0);
            s[n][2] = s[n][2] == FBD_NEG_INF ? 0.f : exp2f(s[n][2] - n1);
            s[n][3] = s[n][3] == FBD_NEG_INF ? 0.f : exp2f(s[n][3] - n1);
            rs0 += s[n][0] + s[n][1]; rs1 += s[n][2] + s[n][3];
        }
        rs0 += __shfl_xor_sync(0xffffffffu, rs0, 1); rs0 += __shfl_xor_sync(0xffffffffu, rs0, 2);
        rs1 += __shfl_xor_sync(0xffffffffu, rs1, 1); rs1 += __shfl_xor_sync(0xffffffffu, rs1, 2);
        l0 = l0 * c0 + rs0; l1 = l1 * c1 + rs1; m0 = n0; m1 = n1;
        #pragma unroll
        for (int i = 0; i < HD / 8; i++) { o[i][0] *= c0; o[i][1] *= c0; o[i][2] *= c1; o[i][3] *= c1; }
        // O += P V: P from the S accumulators (16 keys per k-step), V read as the col-major B operand
        #pragma unroll
        for (int kc = 0; kc < 4; kc++)
        {
            if (!(live & (3u << (2 * kc)))) continue;
            u32 a0 = pack_bf16x2(s[2 * kc][0], s[2 * kc][1]), a1 = pack_bf16x2(s[2 * kc][2], s[2 * kc][3]);
            u32 a2 = pack_bf16x2(s[2 * kc + 1][0], s[2 * kc + 1][1]), a3 = pack_bf16x2(s[2 * kc + 1][2], s[2 * kc + 1][3]);
            const u16* vr = sV + (kc * 16 + t4 * 2) * pitch + g;
            #pragma unroll
            for (int i = 0; i < HD / 8; i++)
            {
                const u16* v = vr + i * 8;
                u32 b0 = pair_of(v[0], v[pitch]), b1 = pair_of(v[8 * pitch], v[9 * pitch]);
                mma_bf16_16816(o[i], a0, a1, a2, a3, b0, b1);
            }
        }
    }
    // write O / l and lse (natural log) for the two rows
    float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
    #pragma unroll
    for (int i = 0; i < HD / 8; i++)
    {
        int d = i * 8 + t4 * 2;
        if (row0 < T) { float* p = out + ((long long)b * T + row0) * H * HD + h * HD + d; p[0] = o[i][0] * inv0; p[1] = o[i][1] * inv0; }
        if (row1 < T) { float* p = out + ((long long)b * T + row1) * H * HD + h * HD + d; p[0] = o[i][2] * inv1; p[1] = o[i][3] * inv1; }
    }
    if (t4 == 0)
    {
        const float ln2 = 0.6931471805599453f;
        if (row0 < T) lse[((long long)b * H + h) * T + row0] = l0 > 0.f ? (m0 + log2f(l0)) * ln2 : FBD_NEG_INF;
        if (row1 < T) lse[((long long)b * H + h) * T + row1] = l1 > 0.f ? (m1 + log2f(l1)) * ln2 : FBD_NEG_INF;
    }
}

// grid (ceil(T/64), B*H), block 128, dynamic smem 3*64*(HD+8)*2 bytes
extern "C" __global__ void __launch_bounds__(BF_THREADS) fbd_attn_fwd_bf16_hd32(const float* qkv, float* out, float* lse, int B, int H, int T, int kind, int blockSize, float scale)
{ attn_fwd_bf16<32>(qkv, out, lse, B, H, T, kind, blockSize, scale); }
extern "C" __global__ void __launch_bounds__(BF_THREADS) fbd_attn_fwd_bf16_hd64(const float* qkv, float* out, float* lse, int B, int H, int T, int kind, int blockSize, float scale)
{ attn_fwd_bf16<64>(qkv, out, lse, B, H, T, kind, blockSize, scale); }
extern "C" __global__ void __launch_bounds__(BF_THREADS) fbd_attn_fwd_bf16_hd128(const float* qkv, float* out, float* lse, int B, int H, int T, int kind, int blockSize, float scale)
{ attn_fwd_bf16<128>(qkv, out, lse, B, H, T, kind, blockSize, scale); }

// ---- backward (FlashAttention-2 style, one block per 64-key tile, looping over query tiles) ----
// Each warp owns 16 keys: S^T = K Q^T and dP^T = V dO^T on tensor cores, P^T = exp(S^T - lse), dS^T = P^T (dP^T - D),
// dV += P^T dO and dK += dS^T Q accumulate in registers; dS^T goes through shared memory (bf16) so that each warp
// then computes dQ = dS K for 16 queries and adds it to global memory atomically (dQ must be zeroed first).
// D = rowsum(dO * O) comes from fbd_attn_bwd_dot. head_dim 32 or 64 (register budget); smem
// 4*64*(HD+8)*2 + 64*72*2 + 128*4 bytes.
template <int HD>
__device__ __forceinline__ void attn_bwd_bf16(const float* qkv, const float* dOut, const float* lse, const float* D, float* dQkv,
    int B, int H, int T, int kind, int blockSize, float scale)
{
    extern __shared__ __align__(16) unsigned char smemRaw[];
    const int pitch = HD + BF_PAD, spitch = 64 + BF_PAD;
    u16* sK = (u16*)smemRaw;
    u16* sV = sK + 64 * pitch;
    u16* sQ = sV + 64 * pitch;
    u16* sG = sQ + 64 * pitch;
    u16* sS = sG + 64 * pitch;
    float* sL = (float*)(sS + 64 * spitch);
    float* sD = sL + 64;
    const float L2E = 1.4426950408889634f, sl2 = scale * L2E;
    int bh = blockIdx.y, b = bh / H, h = bh - b * H;
    int k0 = blockIdx.x * 64, k1 = min(T, k0 + 64);
    long long rs = 3LL * H * HD, ors = (long long)H * HD;
    const float* base = qkv + (long long)b * T * rs + h * HD;
    const float* gbase = dOut + (long long)b * T * ors + h * HD;
    stage_bf16<HD>(sK, base + (long long)H * HD, rs, k0, T);
    stage_bf16<HD>(sV, base + 2LL * H * HD, rs, k0, T);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    int wk0 = k0 + warp * 16, wk1 = min(T, wk0 + 16);
    int kr0 = wk0 + g, kr1 = wk0 + g + 8;
    float dk[HD / 8][4], dv[HD / 8][4];
    #pragma unroll
    for (int i = 0; i < HD / 8; i++)
        #pragma unroll
        for (int e = 0; e < 4; e++) { dk[i][e] = 0.f; dv[i][e] = 0.f; }
    for (int q0 = 0; q0 < T; q0 += 64)
    {
        int q1 = min(T, q0 + 64);
        int tk = classify_tile(kind, T, blockSize, q0, q1, k0, k1);
        if (tk == TILE_EMPTY) continue;
        __syncthreads();
        stage_bf16<HD>(sQ, base, rs, q0, T);
        stage_bf16<HD>(sG, gbase, ors, q0, T);
        for (int i = threadIdx.x; i < 64; i += BF_THREADS)
        {
            int qi = q0 + i;
            sL[i] = qi < T ? lse[((long long)b * H + h) * T + qi] * L2E : 0.f;
            sD[i] = qi < T ? D[((long long)b * H + h) * T + qi] : 0.f;
        }
        __syncthreads();
        u32 live = 0, fullBits = 0;
        if (wk0 < T)
        {
            #pragma unroll
            for (int n = 0; n < 8; n++)
            {
                int c0 = q0 + n * 8;
                if (c0 >= q1) continue;
                int c = tk == TILE_FULL ? TILE_FULL : classify_tile(kind, T, blockSize, c0, min(q1, c0 + 8), wk0, wk1);
                if (c != TILE_EMPTY) live |= 1u << n;
                if (c == TILE_FULL) fullBits |= 1u << n;
            }
        }
        float s[8][4], dp[8][4];
        #pragma unroll
        for (int n = 0; n < 8; n++)
            #pragma unroll
            for (int e = 0; e < 4; e++) { s[n][e] = 0.f; dp[n][e] = 0.f; }
        if (live)
        {
            #pragma unroll
            for (int kc = 0; kc < HD / 16; kc++)
            {
                const u16* ka = sK + (warp * 16 + g) * pitch + kc * 16 + t4 * 2;
                const u16* va = sV + (warp * 16 + g) * pitch + kc * 16 + t4 * 2;
                u32 a0 = ld_pair(ka), a1 = ld_pair(ka + 8 * pitch), a2 = ld_pair(ka + 8), a3 = ld_pair(ka + 8 * pitch + 8);
                u32 v0 = ld_pair(va), v1 = ld_pair(va + 8 * pitch), v2 = ld_pair(va + 8), v3 = ld_pair(va + 8 * pitch + 8);
                #pragma unroll
                for (int n = 0; n < 8; n++)
                {
                    if (!(live & (1u << n))) continue;
                    const u16* qb = sQ + (n * 8 + g) * pitch + kc * 16 + t4 * 2;
                    const u16* gb = sG + (n * 8 + g) * pitch + kc * 16 + t4 * 2;
                    mma_bf16_16816(s[n], a0, a1, a2, a3, ld_pair(qb), ld_pair(qb + 8));
                    mma_bf16_16816(dp[n], v0, v1, v2, v3, ld_pair(gb), ld_pair(gb + 8));
                }
            }
            #pragma unroll
            for (int n = 0; n < 8; n++)
                #pragma unroll
                for (int e = 0; e < 4; e++)
                {
                    int key = e < 2 ? kr0 : kr1, ql = n * 8 + t4 * 2 + (e & 1), q = q0 + ql;
                    bool ok = (live & (1u << n)) && key < T && q < q1
                        && ((fullBits & (1u << n)) || mask_allowed(kind, T, blockSize, q, key));
                    float p = ok ? exp2f(s[n][e] * sl2 - sL[ql]) : 0.f;
                    s[n][e] = p;
                    dp[n][e] = ok ? p * (dp[n][e] - sD[ql]) : 0.f;
                }
        }
        // dS^T into shared memory: rows = this warp's keys, columns = the tile's queries
        #pragma unroll
        for (int n = 0; n < 8; n++)
        {
            u16* dst = sS + (warp * 16 + g) * spitch + n * 8 + t4 * 2;
            *(u32*)dst = pack_bf16x2(dp[n][0], dp[n][1]);
            *(u32*)(dst + 8 * spitch) = pack_bf16x2(dp[n][2], dp[n][3]);
        }
        if (live)
        {
            #pragma unroll
            for (int kc = 0; kc < 4; kc++)
            {
                if (!(live & (3u << (2 * kc)))) continue;
                u32 a0 = pack_bf16x2(s[2 * kc][0], s[2 * kc][1]), a1 = pack_bf16x2(s[2 * kc][2], s[2 * kc][3]);
                u32 a2 = pack_bf16x2(s[2 * kc + 1][0], s[2 * kc + 1][1]), a3 = pack_bf16x2(s[2 * kc + 1][2], s[2 * kc + 1][3]);
                u32 d0 = pack_bf16x2(dp[2 * kc][0], dp[2 * kc][1]), d1 = pack_bf16x2(dp[2 * kc][2], dp[2 * kc][3]);
                u32 d2 = pack_bf16x2(dp[2 * kc + 1][0], dp[2 * kc + 1][1]), d3 = pack_bf16x2(dp[2 * kc + 1][2], dp[2 * kc + 1][3]);
                const u16* gr = sG + (kc * 16 + t4 * 2) * pitch + g;
                const u16* qr = sQ + (kc * 16 + t4 * 2) * pitch + g;
                #pragma unroll
                for (int i = 0; i < HD / 8; i++)
                {
                    const u16* x = gr + i * 8;
                    mma_bf16_16816(dv[i], a0, a1, a2, a3, pair_of(x[0], x[pitch]), pair_of(x[8 * pitch], x[9 * pitch]));
                    const u16* y = qr + i * 8;
                    mma_bf16_16816(dk[i], d0, d1, d2, d3, pair_of(y[0], y[pitch]), pair_of(y[8 * pitch], y[9 * pitch]));
                }
            }
        }
        __syncthreads();
        // dQ = dS K for this warp's 16 queries over the tile's 64 keys
        int wq0 = q0 + warp * 16;
        if (wq0 < q1)
        {
            float dq[HD / 8][4];
            #pragma unroll
            for (int i = 0; i < HD / 8; i++) { dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f; }
            #pragma unroll
            for (int kc = 0; kc < 4; kc++)
            {
                if (k0 + kc * 16 >= k1) break;
                const u16* sr = sS + (kc * 16 + t4 * 2) * spitch + warp * 16 + g;
                u32 a0 = pair_of(sr[0], sr[spitch]), a1 = pair_of(sr[8], sr[spitch + 8]);
                u32 a2 = pair_of(sr[8 * spitch], sr[9 * spitch]), a3 = pair_of(sr[8 * spitch + 8], sr[9 * spitch + 8]);
                const u16* kr = sK + (kc * 16 + t4 * 2) * pitch + g;
                #pragma unroll
                for (int i = 0; i < HD / 8; i++)
                {
                    const u16* x = kr + i * 8;
                    mma_bf16_16816(dq[i], a0, a1, a2, a3, pair_of(x[0], x[pitch]), pair_of(x[8 * pitch], x[9 * pitch]));
                }
            }
            int qa = wq0 + g, qb = wq0 + g + 8;
            #pragma unroll
            for (int i = 0; i < HD / 8; i++)
            {
                int d = i * 8 + t4 * 2;
                if (qa < T) { float* p = dQkv + ((long long)b * T + qa) * rs + h * HD + d; atomicAdd(p, dq[i][0] * scale); atomicAdd(p + 1, dq[i][1] * scale); }
                if (qb < T) { float* p = dQkv + ((long long)b * T + qb) * rs + h * HD + d; atomicAdd(p, dq[i][2] * scale); atomicAdd(p + 1, dq[i][3] * scale); }
            }
        }
    }
    #pragma unroll
    for (int i = 0; i < HD / 8; i++)
    {
        int d = i * 8 + t4 * 2;
        if (kr0 < T)
        {
            float* p = dQkv + ((long long)b * T + kr0) * rs + h * HD + d;
            p[H * HD] = dk[i][0] * scale; p[H * HD + 1] = dk[i][1] * scale;
            p[2 * H * HD] = dv[i][0]; p[2 * H * HD + 1] = dv[i][1];
        }
        if (kr1 < T)
        {
            float* p = dQkv + ((long long)b * T + kr1) * rs + h * HD + d;
            p[H * HD] = dk[i][2] * scale; p[H * HD + 1] = dk[i][3] * scale;
            p[2 * H * HD] = dv[i][2]; p[2 * H * HD + 1] = dv[i][3];
        }
    }
}

// grid (ceil(T/64), B*H), block 128; dQkv zeroed beforehand (dQ is accumulated atomically)
extern "C" __global__ void __launch_bounds__(BF_THREADS) fbd_attn_bwd_bf16_hd32(const float* qkv, const float* dOut, const float* lse, const float* D,
    float* dQkv, int B, int H, int T, int kind, int blockSize, float scale)
{ attn_bwd_bf16<32>(qkv, dOut, lse, D, dQkv, B, H, T, kind, blockSize, scale); }
extern "C" __global__ void __launch_bounds__(BF_THREADS) fbd_attn_bwd_bf16_hd64(const float* qkv, const float* dOut, const float* lse, const float* D,
    float* dQkv, int B, int H, int T, int kind, int blockSize, float scale)
{ attn_bwd_bf16<64>(qkv, dOut, lse, D, dQkv, B, H, T, kind, blockSize, scale); }
