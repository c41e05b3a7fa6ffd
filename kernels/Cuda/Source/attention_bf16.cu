// bf16 tensor-core attention (FlashAttention-2 form) on sm_80+: q/k/v read in bf16 ([B, T, 3, H, hd], written by
// qkv_bf16.cu), S = Q.K^T and O += P.V on mma.sync.m16n8k16 (bf16 in, fp32 accumulate), softmax statistics in fp32,
// output and logsumexp in fp32 (the layouts of attention.cu). Older targets trap.
//
// Load path: K/V tiles arrive by cp.async into a two-stage shared-memory ring (the next live tile is in flight while
// the current one is computed); operands go from shared memory to registers by ldmatrix (.trans for the operands
// read along their rows: V in the forward, dO/Q/K in the backward); the warp's Q fragments stay in registers for the
// whole key loop; probabilities are rounded to bf16 pairs by cvt.rn.bf16x2. Shared rows are padded by 16 bytes so that
// the 8 rows of an ldmatrix fall in distinct banks.
//
// Masks: every thread computes, once, the key ranges its two query rows may see (BD3 noisy rows: their own noisy
// block and the earlier clean blocks, two intervals), so a partial tile costs two compares per element. Tiles are
// classified from the mask formula at two levels: the block's tile (empty: never loaded; full: no masking) and, inside
// partial tiles, each warp's 16 rows x 8-key pieces (an empty piece costs no mma), so the BD3 noisy diagonal is paid
// per 16x8 piece. Query tiles (key tiles in the dK/dV backward) run heaviest first: the grid's y index is the rank of
// the tile by work.
#include "common.cuh"

#define BF_BC 64          // keys per tile
#define BF_PAD 8          // bf16 elements of padding per shared row (16 bytes)

// ---- PTX helpers (tests/cuda-emu replaces this section with its CPU emulation of the same functions) ----
__device__ __forceinline__ u32 smem_addr(const void* p)
{
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// d += A.B for a 16x16 (row) x 16x8 (col) bf16 product
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1)
{
#if __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    __trap();
#endif
}

// 16 bytes global -> shared without passing through registers; srcBytes 0 fills the 16 bytes with zeros
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int srcBytes)
{
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(smem_addr(dst)), "l"(src), "r"(srcBytes));
#else
    __trap();
#endif
}
__device__ __forceinline__ void cp_async_commit()
{
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
// waits until at most N of this thread's committed groups are still in flight
template <int N> __device__ __forceinline__ void cp_async_wait()
{
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" :: "n"(N));
#endif
}

// four 8x8 b16 matrices; lane 8m+r gives the address of row r of matrix m; register m of lane 4r+c holds row r,
// columns 2c and 2c+1 of matrix m (with .trans: column r, rows 2c and 2c+1)
__device__ __forceinline__ void ldsm_x4(u32 (&r)[4], const u16* p)
{
#if __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
        : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
#else
    __trap();
#endif
}
__device__ __forceinline__ void ldsm_x4_trans(u32 (&r)[4], const u16* p)
{
#if __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
        : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_addr(p)));
#else
    __trap();
#endif
}

// two floats rounded to nearest-even bf16, lo in the low half (the A/B operand order of mma.sync)
__device__ __forceinline__ u32 cvt_bf16x2(float lo, float hi)
{
#if __CUDA_ARCH__ >= 800
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
#else
    return pack_bf16x2(lo, hi);
#endif
}
// ---- end of PTX helpers ----

// Queries i may attend keys [a0, a1) and [b0, b1) (b empty unless a BD3 noisy row: its own noisy block, then the
// earlier clean blocks). Rows >= T get empty ranges.
__device__ __forceinline__ void row_keys(int kind, int T, int bs, int i, int& a0, int& a1, int& b0, int& b1)
{
    a0 = a1 = b0 = b1 = 0;
    if (i >= T) return;
    if (kind == MASK_FULL) { a1 = T; return; }
    if (kind == MASK_CAUSAL) { a1 = i + 1; return; }
    if (kind == MASK_BLOCK_CAUSAL) { a1 = min(T, (i / bs + 1) * bs); return; }
    int l = T >> 1;
    if (i >= l) { a0 = l; a1 = min(T, l + ((i - l) / bs + 1) * bs); return; }
    int blk = i / bs;
    a0 = blk * bs; a1 = min(l, a0 + bs);
    b0 = l; b1 = min(T, l + blk * bs);
}

// The queries that attend key j: [a0, a1) and [b0, b1) (for a BD3 clean key: the noisy rows of later blocks, then the
// clean rows of its own and later blocks). Keys >= T get empty ranges.
__device__ __forceinline__ void key_queries(int kind, int T, int bs, int j, int& a0, int& a1, int& b0, int& b1)
{
    a0 = a1 = b0 = b1 = 0;
    if (j >= T) return;
    a1 = T;
    if (kind == MASK_FULL) return;
    if (kind == MASK_CAUSAL) { a0 = j; return; }
    if (kind == MASK_BLOCK_CAUSAL) { a0 = (j / bs) * bs; return; }
    int l = T >> 1;
    if (j < l) { a0 = (j / bs) * bs; a1 = min(l, a0 + bs); return; }
    int blk = (j - l) / bs;
    a0 = min(l, (blk + 1) * bs); a1 = l;
    b0 = l + blk * bs; b1 = T;
}

__device__ __forceinline__ bool in_ranges(int x, int a0, int a1, int b0, int b1)
{
    return (x >= a0 && x < a1) || (x >= b0 && x < b1);
}

// The query tile that the y-th block of a column runs: heaviest first. Causal kinds: the last tiles see the most keys.
// BD3 with tile-aligned halves: block rows from the last, its noisy tile then its clean tile.
__device__ __forceinline__ int heavy_first_tile(int y, int nTiles, int rows, int kind, int T)
{
    if (kind == MASK_FULL) return y;
    int l = T >> 1;
    if (kind != MASK_BD3 || l % rows != 0) return nTiles - 1 - y;
    int perHalf = l / rows, pos = perHalf - 1 - (y >> 1);
    return (y & 1) ? perHalf + pos : pos;
}

// The key tile that the y-th block of a column runs in the dK/dV backward: heaviest first. Causal kinds: the first keys
// are seen by the most queries. BD3 with tile-aligned halves: the clean tiles from the first (each is seen by the later
// noisy and clean blocks), then the noisy ones (each seen by its own block only).
__device__ __forceinline__ int heavy_first_key_tile(int y, int kind, int T)
{
    int l = T >> 1;
    if (kind != MASK_BD3 || l % 64 != 0) return y;
    int perHalf = l / 64;
    return y < perHalf ? perHalf + y : y - perHalf;
}

// The first tile start k >= from (a multiple of BF_BC) below kHi that queries [q0, q1) do not skip entirely; kHi if none.
__device__ __forceinline__ int next_live_tile(int kind, int T, int bs, int q0, int q1, int from, int kHi)
{
    int k = from;
    while (k < kHi && classify_tile(kind, T, bs, q0, q1, k, min(T, k + BF_BC)) == TILE_EMPTY) k += BF_BC;
    return k;
}

// cp.async rows [r0, r0 + rows) x HD of a bf16 [*, rowStride] matrix into shared memory with pitch HD + BF_PAD; rows >= rEnd
// are zero-filled
template <int HD, int THREADS>
__device__ __forceinline__ void load_rows_async(u16* dst, const u16* src, long long rowStride, int r0, int rows, int rEnd)
{
    constexpr int CH = HD / 8, PITCH = HD + BF_PAD;
    for (int idx = threadIdx.x; idx < rows * CH; idx += THREADS)
    {
        int r = idx / CH, c = (idx - r * CH) * 8, gr = r0 + r;
        bool in = gr < rEnd;
        cp_async16(dst + r * PITCH + c, src + (in ? (long long)gr * rowStride + c : 0), in ? 16 : 0);
    }
}

// Which of the 8 pieces (8 keys each) of key tile [k0, k1) rows [r0, r1) touch (live) and see whole (full): tile kind tk
// from the block's classification.
__device__ __forceinline__ void classify_pieces(int kind, int T, int bs, int tk, int r0, int r1, int k0, int k1, u32& live, u32& full)
{
    live = 0; full = 0;
    #pragma unroll
    for (int n = 0; n < 8; n++)
    {
        int c0 = k0 + n * 8;
        if (c0 >= k1) continue;
        int c1 = min(k1, c0 + 8);
        int c = tk == TILE_FULL ? TILE_FULL : classify_tile(kind, T, bs, r0, r1, c0, c1);
        if (c != TILE_EMPTY) live |= 1u << n;
        if (c == TILE_FULL && c1 == c0 + 8) full |= 1u << n;
    }
}

// ---- forward ----
// grid (B*H, ceil(T/BR)), block 32*WARPS (BR = 16*WARPS query rows, 16 per warp), dynamic smem 2 stages x (K + V) x
// 64 x (HD+8) bf16 (Q is staged once in stage 1 before the key loop starts).
template <int HD, int WARPS>
__device__ __forceinline__ void attn_fwd_bf16(const u16* qkv, float* out, float* lse, int B, int H, int T, int kind, int blockSize, float scale)
{
    constexpr int BR = 16 * WARPS, THREADS = 32 * WARPS, PITCH = HD + BF_PAD, STAGE = 2 * BF_BC * PITCH;
    extern __shared__ __align__(16) unsigned char smemRaw[];
    u16* smem = (u16*)smemRaw;
    int bh = blockIdx.x, b = bh / H, h = bh - b * H;
    int nTiles = (T + BR - 1) / BR;
    int q0 = heavy_first_tile(blockIdx.y, nTiles, BR, kind, T) * BR, q1 = min(T, q0 + BR);
    long long rs = 3LL * H * HD;
    const u16* qBase = qkv + (long long)b * T * rs + h * HD;
    const u16* kBase = qBase + (long long)H * HD;
    const u16* vBase = qBase + 2LL * H * HD;
    int kLo, kHi;
    key_range(kind, T, blockSize, q0, q1, &kLo, &kHi);
    load_rows_async<HD, THREADS>(smem + STAGE, qBase, rs, q0, BR, T);
    cp_async_commit();
    int k0 = next_live_tile(kind, T, blockSize, q0, q1, (kLo / BF_BC) * BF_BC, kHi);
    if (k0 < kHi)
    {
        load_rows_async<HD, THREADS>(smem, kBase, rs, k0, BF_BC, T);
        load_rows_async<HD, THREADS>(smem + BF_BC * PITCH, vBase, rs, k0, BF_BC, T);
    }
    cp_async_commit();
    cp_async_wait<1>();     // Q has landed; the first K/V tile may still be in flight
    __syncthreads();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    int wq0 = q0 + warp * 16, wq1 = min(T, wq0 + 16);
    int row0 = wq0 + g, row1 = wq0 + g + 8;
    u32 qf[HD / 16][4];
    #pragma unroll
    for (int kc = 0; kc < HD / 16; kc++)
        ldsm_x4(qf[kc], smem + STAGE + (warp * 16 + (lane & 15)) * PITCH + kc * 16 + (lane >> 4) * 8);
    __syncthreads();        // stage 1 is free for the second tile
    int ra0, ra1, rb0, rb1, sa0, sa1, sb0, sb1;
    row_keys(kind, T, blockSize, row0, ra0, ra1, rb0, rb1);
    row_keys(kind, T, blockSize, row1, sa0, sa1, sb0, sb1);
    float o[HD / 8][4];
    #pragma unroll
    for (int i = 0; i < HD / 8; i++) { o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f; }
    float m0 = FBD_NEG_INF, m1 = FBD_NEG_INF, l0 = 0.f, l1 = 0.f;
    const float sl2 = scale * 1.4426950408889634f;        // exp(x) = exp2(x*log2 e)
    int stage = 0;
    while (k0 < kHi)
    {
        int kn = next_live_tile(kind, T, blockSize, q0, q1, k0 + BF_BC, kHi);
        if (kn < kHi)
        {
            u16* next = smem + (stage ^ 1) * STAGE;
            load_rows_async<HD, THREADS>(next, kBase, rs, kn, BF_BC, T);
            load_rows_async<HD, THREADS>(next + BF_BC * PITCH, vBase, rs, kn, BF_BC, T);
        }
        cp_async_commit();
        cp_async_wait<1>(); // this tile has landed (the next one may be in flight)
        __syncthreads();
        const u16* sK = smem + stage * STAGE;
        const u16* sV = sK + BF_BC * PITCH;
        int k1 = min(T, k0 + BF_BC);
        u32 live = 0, full = 0;
        if (wq0 < T) classify_pieces(kind, T, blockSize, classify_tile(kind, T, blockSize, q0, q1, k0, k1), wq0, wq1, k0, k1, live, full);
        if (live)
        {
            float s[8][4];
            #pragma unroll
            for (int n = 0; n < 8; n++) { s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f; }
            // S = Q K^T: one ldmatrix.x4 gives the B fragments of two 8-key pieces
            #pragma unroll
            for (int kc = 0; kc < HD / 16; kc++)
            {
                #pragma unroll
                for (int np = 0; np < 4; np++)
                {
                    if (!(live & (3u << (2 * np)))) continue;
                    u32 kf[4];
                    ldsm_x4(kf, sK + (np * 16 + (lane & 7) + (lane >> 4) * 8) * PITCH + kc * 16 + ((lane >> 3) & 1) * 8);
                    if (live & (1u << (2 * np))) mma_bf16_16816(s[2 * np], qf[kc], kf[0], kf[1]);
                    if (live & (2u << (2 * np))) mma_bf16_16816(s[2 * np + 1], qf[kc], kf[2], kf[3]);
                }
            }
            // mask by the rows' key ranges (full pieces: none), row maxima (row0: s[n][0..1], row1: s[n][2..3])
            float mx0 = FBD_NEG_INF, mx1 = FBD_NEG_INF;
            #pragma unroll
            for (int n = 0; n < 8; n++)
            {
                bool isLive = live & (1u << n), isFull = full & (1u << n);
                int col = k0 + n * 8 + t4 * 2;
                #pragma unroll
                for (int e = 0; e < 4; e++)
                {
                    int c = col + (e & 1);
                    bool ok = isLive && (isFull || (e < 2 ? in_ranges(c, ra0, ra1, rb0, rb1) : in_ranges(c, sa0, sa1, sb0, sb1)));
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
            // O += P V: the S accumulators of two pieces are the A fragment of 16 keys; V by ldmatrix.trans
            #pragma unroll
            for (int kc = 0; kc < 4; kc++)
            {
                if (!(live & (3u << (2 * kc)))) continue;
                u32 a[4] = { cvt_bf16x2(s[2 * kc][0], s[2 * kc][1]), cvt_bf16x2(s[2 * kc][2], s[2 * kc][3]),
                             cvt_bf16x2(s[2 * kc + 1][0], s[2 * kc + 1][1]), cvt_bf16x2(s[2 * kc + 1][2], s[2 * kc + 1][3]) };
                #pragma unroll
                for (int ip = 0; ip < HD / 16; ip++)
                {
                    u32 vf[4];
                    ldsm_x4_trans(vf, sV + (kc * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * PITCH + ip * 16 + (lane >> 4) * 8);
                    mma_bf16_16816(o[2 * ip], a, vf[0], vf[1]);
                    mma_bf16_16816(o[2 * ip + 1], a, vf[2], vf[3]);
                }
            }
        }
        __syncthreads();    // every warp is done with this stage before it is refilled
        k0 = kn; stage ^= 1;
    }
    cp_async_wait<0>();
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

// grid (B*H, ceil(T/BR)); hd 64: 8 warps, 128-row query tiles; hd 32 and 128: 4 warps, 64 rows (hd 128: register
// budget; hd 32: ptxas spills with 8).
// Dynamic smem 2*2*64*(HD+8)*2 bytes.
extern "C" __global__ void __launch_bounds__(128) fbd_attn_fwd_bf16_hd32(const u16* qkv, float* out, float* lse, int B, int H, int T, int kind, int blockSize, float scale)
{ attn_fwd_bf16<32, 4>(qkv, out, lse, B, H, T, kind, blockSize, scale); }
extern "C" __global__ void __launch_bounds__(256) fbd_attn_fwd_bf16_hd64(const u16* qkv, float* out, float* lse, int B, int H, int T, int kind, int blockSize, float scale)
{ attn_fwd_bf16<64, 8>(qkv, out, lse, B, H, T, kind, blockSize, scale); }
extern "C" __global__ void __launch_bounds__(128) fbd_attn_fwd_bf16_hd128(const u16* qkv, float* out, float* lse, int B, int H, int T, int kind, int blockSize, float scale)
{ attn_fwd_bf16<128, 4>(qkv, out, lse, B, H, T, kind, blockSize, scale); }

// ---- backward (FlashAttention-2: one block per 64-key tile, looping over the query tiles that see it) ----
// Each warp owns 16 keys; its K and V fragments stay in registers. S^T = K Q^T and dP^T = V dO^T on tensor cores,
// P^T = exp(S^T - lse), dS^T = P^T (dP^T - D), dV += P^T dO and dK += dS^T Q accumulate in registers. Q, dO, lse and
// D of the query tiles come through a two-stage cp.async ring. dS^T goes through shared memory (bf16) so that each
// warp then computes dQ = dS K for 16 queries and adds it to global memory atomically (dQ zeroed first).
// D = rowsum(dO * O) comes from fbd_attn_bwd_dot. head_dim 32 or 64 (register budget). Deterministic mode: WITH_DQ
// false, dQ left to attn_bwd_dq_bf16 (no atomics: every dQ element is summed by one thread in a fixed order).
// Shared memory: K, V [64][HD+8]; 2 stages of Q, dO [64][HD+8] and lse, D [64] fp32; dS^T [64][64+8].
template <int HD, bool WITH_DQ>
__device__ __forceinline__ void attn_bwd_bf16(const u16* qkv, const u16* dOut, const float* lse, const float* D, float* dQkv,
    int B, int H, int T, int kind, int blockSize, float scale)
{
    constexpr int PITCH = HD + BF_PAD, SPITCH = 64 + BF_PAD, TILE = 64 * PITCH;
    constexpr int STAGE = 2 * TILE + 2 * 64 * 2;              // bf16 elements: Q, dO, then lse and D as 64 floats each
    extern __shared__ __align__(16) unsigned char smemRaw[];
    u16* sK = (u16*)smemRaw;
    u16* sV = sK + TILE;
    u16* sS = sV + TILE;
    u16* ring = sS + 64 * SPITCH;
    const float L2E = 1.4426950408889634f, sl2 = scale * L2E;
    int bh = blockIdx.x, b = bh / H, h = bh - b * H;
    int k0 = heavy_first_key_tile(blockIdx.y, kind, T) * 64, k1 = min(T, k0 + 64);
    long long rs = 3LL * H * HD, ors = (long long)H * HD;
    const u16* qBase = qkv + (long long)b * T * rs + h * HD;
    const u16* gBase = dOut + (long long)b * T * ors + h * HD;
    const float* lseRow = lse + ((long long)b * H + h) * T;
    const float* dRow = D + ((long long)b * H + h) * T;
    load_rows_async<HD, 128>(sK, qBase + (long long)H * HD, rs, k0, 64, T);
    load_rows_async<HD, 128>(sV, qBase + 2LL * H * HD, rs, k0, 64, T);
    cp_async_commit();
    // the query tiles that see this key tile: [first, T) in steps of 64, empty ones skipped
    int q0 = 0;
    while (q0 < T && classify_tile(kind, T, blockSize, q0, min(T, q0 + 64), k0, k1) == TILE_EMPTY) q0 += 64;
    auto issue = [&](int qs, u16* st) {
        load_rows_async<HD, 128>(st, qBase, rs, qs, 64, T);
        load_rows_async<HD, 128>(st + TILE, gBase, ors, qs, 64, T);
        float* f = (float*)(st + 2 * TILE);
        for (int i = threadIdx.x; i < 64; i += 128)
        {
            int qi = qs + i;
            f[i] = qi < T ? lseRow[qi] * L2E : 0.f;
            f[64 + i] = qi < T ? dRow[qi] : 0.f;
        }
    };
    if (q0 < T) issue(q0, ring);
    cp_async_commit();
    cp_async_wait<1>();     // K and V have landed
    __syncthreads();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    int wk0 = k0 + warp * 16, wk1 = min(T, wk0 + 16);
    int kr0 = wk0 + g, kr1 = wk0 + g + 8;
    u32 kf[HD / 16][4], vf[HD / 16][4];
    #pragma unroll
    for (int kc = 0; kc < HD / 16; kc++)
    {
        ldsm_x4(kf[kc], sK + (warp * 16 + (lane & 15)) * PITCH + kc * 16 + (lane >> 4) * 8);
        ldsm_x4(vf[kc], sV + (warp * 16 + (lane & 15)) * PITCH + kc * 16 + (lane >> 4) * 8);
    }
    int ra0, ra1, rb0, rb1, sa0, sa1, sb0, sb1;
    key_queries(kind, T, blockSize, kr0, ra0, ra1, rb0, rb1);
    key_queries(kind, T, blockSize, kr1, sa0, sa1, sb0, sb1);
    float dk[HD / 8][4], dv[HD / 8][4];
    #pragma unroll
    for (int i = 0; i < HD / 8; i++)
        #pragma unroll
        for (int e = 0; e < 4; e++) { dk[i][e] = 0.f; dv[i][e] = 0.f; }
    int stage = 0;
    while (q0 < T)
    {
        int qn = q0 + 64;
        while (qn < T && classify_tile(kind, T, blockSize, qn, min(T, qn + 64), k0, k1) == TILE_EMPTY) qn += 64;
        if (qn < T) issue(qn, ring + (stage ^ 1) * STAGE);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const u16* sQ = ring + stage * STAGE;
        const u16* sG = sQ + TILE;
        const float* sL = (const float*)(sQ + 2 * TILE);
        const float* sD = sL + 64;
        int q1 = min(T, q0 + 64);
        u32 live = 0, full = 0;
        if (wk0 < T)
        {
            int tk = classify_tile(kind, T, blockSize, q0, q1, k0, k1);
            #pragma unroll
            for (int n = 0; n < 8; n++)
            {
                int c0 = q0 + n * 8;
                if (c0 >= q1) continue;
                int c1 = min(q1, c0 + 8);
                int c = tk == TILE_FULL ? TILE_FULL : classify_tile(kind, T, blockSize, c0, c1, wk0, wk1);
                if (c != TILE_EMPTY) live |= 1u << n;
                if (c == TILE_FULL && c1 == c0 + 8 && wk1 == wk0 + 16) full |= 1u << n;
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
                #pragma unroll
                for (int np = 0; np < 4; np++)
                {
                    if (!(live & (3u << (2 * np)))) continue;
                    int off = (np * 16 + (lane & 7) + (lane >> 4) * 8) * PITCH + kc * 16 + ((lane >> 3) & 1) * 8;
                    u32 qb[4], gb[4];
                    ldsm_x4(qb, sQ + off);
                    ldsm_x4(gb, sG + off);
                    if (live & (1u << (2 * np))) { mma_bf16_16816(s[2 * np], kf[kc], qb[0], qb[1]); mma_bf16_16816(dp[2 * np], vf[kc], gb[0], gb[1]); }
                    if (live & (2u << (2 * np))) { mma_bf16_16816(s[2 * np + 1], kf[kc], qb[2], qb[3]); mma_bf16_16816(dp[2 * np + 1], vf[kc], gb[2], gb[3]); }
                }
            }
            #pragma unroll
            for (int n = 0; n < 8; n++)
            {
                bool isLive = live & (1u << n), isFull = full & (1u << n);
                #pragma unroll
                for (int e = 0; e < 4; e++)
                {
                    int ql = n * 8 + t4 * 2 + (e & 1), q = q0 + ql;
                    bool ok = isLive && (isFull || (e < 2 ? in_ranges(q, ra0, ra1, rb0, rb1) : in_ranges(q, sa0, sa1, sb0, sb1)));
                    float p = ok ? exp2f(s[n][e] * sl2 - sL[ql]) : 0.f;
                    s[n][e] = p;
                    dp[n][e] = ok ? p * (dp[n][e] - sD[ql]) : 0.f;
                }
            }
        }
        // dS^T into shared memory: rows = this warp's keys, columns = the tile's queries
        #pragma unroll
        for (int n = 0; n < 8; n++)
        {
            if (!WITH_DQ) break;
            u16* dst = sS + (warp * 16 + g) * SPITCH + n * 8 + t4 * 2;
            *(u32*)dst = cvt_bf16x2(dp[n][0], dp[n][1]);
            *(u32*)(dst + 8 * SPITCH) = cvt_bf16x2(dp[n][2], dp[n][3]);
        }
        if (live)
        {
            // dV += P^T dO, dK += dS^T Q: dO and Q as B operands [query][dim] by ldmatrix.trans
            #pragma unroll
            for (int kc = 0; kc < 4; kc++)
            {
                if (!(live & (3u << (2 * kc)))) continue;
                u32 a[4] = { cvt_bf16x2(s[2 * kc][0], s[2 * kc][1]), cvt_bf16x2(s[2 * kc][2], s[2 * kc][3]),
                             cvt_bf16x2(s[2 * kc + 1][0], s[2 * kc + 1][1]), cvt_bf16x2(s[2 * kc + 1][2], s[2 * kc + 1][3]) };
                u32 d[4] = { cvt_bf16x2(dp[2 * kc][0], dp[2 * kc][1]), cvt_bf16x2(dp[2 * kc][2], dp[2 * kc][3]),
                             cvt_bf16x2(dp[2 * kc + 1][0], dp[2 * kc + 1][1]), cvt_bf16x2(dp[2 * kc + 1][2], dp[2 * kc + 1][3]) };
                #pragma unroll
                for (int ip = 0; ip < HD / 16; ip++)
                {
                    int off = (kc * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * PITCH + ip * 16 + (lane >> 4) * 8;
                    u32 gb[4], qb[4];
                    ldsm_x4_trans(gb, sG + off);
                    ldsm_x4_trans(qb, sQ + off);
                    mma_bf16_16816(dv[2 * ip], a, gb[0], gb[1]); mma_bf16_16816(dv[2 * ip + 1], a, gb[2], gb[3]);
                    mma_bf16_16816(dk[2 * ip], d, qb[0], qb[1]); mma_bf16_16816(dk[2 * ip + 1], d, qb[2], qb[3]);
                }
            }
        }
        if (WITH_DQ) __syncthreads();
        // dQ = dS K for this warp's 16 queries over the tile's 64 keys: dS from dS^T and K by ldmatrix.trans
        int wq0 = q0 + warp * 16;
        if (WITH_DQ && wq0 < q1)
        {
            float dq[HD / 8][4];
            #pragma unroll
            for (int i = 0; i < HD / 8; i++) { dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f; }
            #pragma unroll
            for (int kc = 0; kc < 4; kc++)
            {
                if (k0 + kc * 16 >= k1) break;
                u32 a[4];
                ldsm_x4_trans(a, sS + (kc * 16 + (lane & 7) + (lane >> 4) * 8) * SPITCH + warp * 16 + ((lane >> 3) & 1) * 8);
                #pragma unroll
                for (int ip = 0; ip < HD / 16; ip++)
                {
                    u32 kb[4];
                    ldsm_x4_trans(kb, sK + (kc * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * PITCH + ip * 16 + (lane >> 4) * 8);
                    mma_bf16_16816(dq[2 * ip], a, kb[0], kb[1]);
                    mma_bf16_16816(dq[2 * ip + 1], a, kb[2], kb[3]);
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
        __syncthreads();    // sS and this stage are free again
        q0 = qn; stage ^= 1;
    }
    cp_async_wait<0>();
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

// grid (B*H, ceil(T/64)), block 128; dQkv zeroed beforehand (dQ is accumulated atomically).
// Dynamic smem (2*64*(HD+8) + 64*72 + 2*(2*64*(HD+8) + 256)) * 2 bytes.
extern "C" __global__ void __launch_bounds__(128) fbd_attn_bwd_bf16_hd32(const u16* qkv, const u16* dOut, const float* lse, const float* D,
    float* dQkv, int B, int H, int T, int kind, int blockSize, float scale)
{ attn_bwd_bf16<32, true>(qkv, dOut, lse, D, dQkv, B, H, T, kind, blockSize, scale); }
extern "C" __global__ void __launch_bounds__(128) fbd_attn_bwd_bf16_hd64(const u16* qkv, const u16* dOut, const float* lse, const float* D,
    float* dQkv, int B, int H, int T, int kind, int blockSize, float scale)
{ attn_bwd_bf16<64, true>(qkv, dOut, lse, D, dQkv, B, H, T, kind, blockSize, scale); }
// deterministic mode, part 1: dK and dV only (same grid and smem); part 2 is fbd_attn_bwd_dq_bf16_hd*
extern "C" __global__ void __launch_bounds__(128) fbd_attn_bwd_dkv_bf16_hd32(const u16* qkv, const u16* dOut, const float* lse, const float* D,
    float* dQkv, int B, int H, int T, int kind, int blockSize, float scale)
{ attn_bwd_bf16<32, false>(qkv, dOut, lse, D, dQkv, B, H, T, kind, blockSize, scale); }
extern "C" __global__ void __launch_bounds__(128) fbd_attn_bwd_dkv_bf16_hd64(const u16* qkv, const u16* dOut, const float* lse, const float* D,
    float* dQkv, int B, int H, int T, int kind, int blockSize, float scale)
{ attn_bwd_bf16<64, false>(qkv, dOut, lse, D, dQkv, B, H, T, kind, blockSize, scale); }

// ---- backward, deterministic dQ: one block per 64-query tile, looping over its live key tiles like the forward ----
// Q and dO fragments stay in registers; K/V tiles through the two-stage cp.async ring. S = Q K^T, dP = dO V^T (V as a
// non-transposed B operand), P = exp(S - lse), dS = P (dP - D), dQ += dS K (K by ldmatrix.trans); dQ written once.
// grid (B*H, ceil(T/64)), block 128, dynamic smem 2*2*64*(HD+8)*2 bytes (Q and dO staged once in stage 1).
template <int HD>
__device__ __forceinline__ void attn_bwd_dq_bf16(const u16* qkv, const u16* dOut, const float* lse, const float* D, float* dQkv,
    int B, int H, int T, int kind, int blockSize, float scale)
{
    constexpr int PITCH = HD + BF_PAD, STAGE = 2 * BF_BC * PITCH;
    extern __shared__ __align__(16) unsigned char smemRaw[];
    u16* smem = (u16*)smemRaw;
    int bh = blockIdx.x, b = bh / H, h = bh - b * H;
    int nTiles = (T + 63) / 64;
    int q0 = heavy_first_tile(blockIdx.y, nTiles, 64, kind, T) * 64, q1 = min(T, q0 + 64);
    long long rs = 3LL * H * HD, ors = (long long)H * HD;
    const u16* qBase = qkv + (long long)b * T * rs + h * HD;
    const u16* kBase = qBase + (long long)H * HD;
    const u16* vBase = qBase + 2LL * H * HD;
    const u16* gBase = dOut + (long long)b * T * ors + h * HD;
    int kLo, kHi;
    key_range(kind, T, blockSize, q0, q1, &kLo, &kHi);
    load_rows_async<HD, 128>(smem + STAGE, qBase, rs, q0, 64, T);
    load_rows_async<HD, 128>(smem + STAGE + BF_BC * PITCH, gBase, ors, q0, 64, T);
    cp_async_commit();
    int k0 = next_live_tile(kind, T, blockSize, q0, q1, (kLo / BF_BC) * BF_BC, kHi);
    if (k0 < kHi)
    {
        load_rows_async<HD, 128>(smem, kBase, rs, k0, BF_BC, T);
        load_rows_async<HD, 128>(smem + BF_BC * PITCH, vBase, rs, k0, BF_BC, T);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    int wq0 = q0 + warp * 16, wq1 = min(T, wq0 + 16);
    int row0 = wq0 + g, row1 = wq0 + g + 8;
    u32 qf[HD / 16][4], gf[HD / 16][4];
    #pragma unroll
    for (int kc = 0; kc < HD / 16; kc++)
    {
        int off = (warp * 16 + (lane & 15)) * PITCH + kc * 16 + (lane >> 4) * 8;
        ldsm_x4(qf[kc], smem + STAGE + off);
        ldsm_x4(gf[kc], smem + STAGE + BF_BC * PITCH + off);
    }
    __syncthreads();
    const float L2E = 1.4426950408889634f, sl2 = scale * L2E;
    const float* lseRow = lse + ((long long)b * H + h) * T;
    const float* dRow = D + ((long long)b * H + h) * T;
    float lse0 = row0 < T ? lseRow[row0] * L2E : 0.f, lse1 = row1 < T ? lseRow[row1] * L2E : 0.f;
    float d0 = row0 < T ? dRow[row0] : 0.f, d1 = row1 < T ? dRow[row1] : 0.f;
    int ra0, ra1, rb0, rb1, sa0, sa1, sb0, sb1;
    row_keys(kind, T, blockSize, row0, ra0, ra1, rb0, rb1);
    row_keys(kind, T, blockSize, row1, sa0, sa1, sb0, sb1);
    float dq[HD / 8][4];
    #pragma unroll
    for (int i = 0; i < HD / 8; i++) { dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f; }
    int stage = 0;
    while (k0 < kHi)
    {
        int kn = next_live_tile(kind, T, blockSize, q0, q1, k0 + BF_BC, kHi);
        if (kn < kHi)
        {
            u16* next = smem + (stage ^ 1) * STAGE;
            load_rows_async<HD, 128>(next, kBase, rs, kn, BF_BC, T);
            load_rows_async<HD, 128>(next + BF_BC * PITCH, vBase, rs, kn, BF_BC, T);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const u16* sK = smem + stage * STAGE;
        const u16* sV = sK + BF_BC * PITCH;
        int k1 = min(T, k0 + BF_BC);
        u32 live = 0, full = 0;
        if (wq0 < T) classify_pieces(kind, T, blockSize, classify_tile(kind, T, blockSize, q0, q1, k0, k1), wq0, wq1, k0, k1, live, full);
        if (live)
        {
            float s[8][4], dp[8][4];
            #pragma unroll
            for (int n = 0; n < 8; n++)
                #pragma unroll
                for (int e = 0; e < 4; e++) { s[n][e] = 0.f; dp[n][e] = 0.f; }
            #pragma unroll
            for (int kc = 0; kc < HD / 16; kc++)
            {
                #pragma unroll
                for (int np = 0; np < 4; np++)
                {
                    if (!(live & (3u << (2 * np)))) continue;
                    int off = (np * 16 + (lane & 7) + (lane >> 4) * 8) * PITCH + kc * 16 + ((lane >> 3) & 1) * 8;
                    u32 kb[4], vb[4];
                    ldsm_x4(kb, sK + off);
                    ldsm_x4(vb, sV + off);
                    if (live & (1u << (2 * np))) { mma_bf16_16816(s[2 * np], qf[kc], kb[0], kb[1]); mma_bf16_16816(dp[2 * np], gf[kc], vb[0], vb[1]); }
                    if (live & (2u << (2 * np))) { mma_bf16_16816(s[2 * np + 1], qf[kc], kb[2], kb[3]); mma_bf16_16816(dp[2 * np + 1], gf[kc], vb[2], vb[3]); }
                }
            }
            #pragma unroll
            for (int n = 0; n < 8; n++)
            {
                bool isLive = live & (1u << n), isFull = full & (1u << n);
                #pragma unroll
                for (int e = 0; e < 4; e++)
                {
                    int c = k0 + n * 8 + t4 * 2 + (e & 1);
                    bool ok = isLive && (isFull || (e < 2 ? in_ranges(c, ra0, ra1, rb0, rb1) : in_ranges(c, sa0, sa1, sb0, sb1)));
                    float p = ok ? exp2f(s[n][e] * sl2 - (e < 2 ? lse0 : lse1)) : 0.f;
                    dp[n][e] = ok ? p * (dp[n][e] - (e < 2 ? d0 : d1)) : 0.f;
                }
            }
            #pragma unroll
            for (int kc = 0; kc < 4; kc++)
            {
                if (!(live & (3u << (2 * kc)))) continue;
                u32 a[4] = { cvt_bf16x2(dp[2 * kc][0], dp[2 * kc][1]), cvt_bf16x2(dp[2 * kc][2], dp[2 * kc][3]),
                             cvt_bf16x2(dp[2 * kc + 1][0], dp[2 * kc + 1][1]), cvt_bf16x2(dp[2 * kc + 1][2], dp[2 * kc + 1][3]) };
                #pragma unroll
                for (int ip = 0; ip < HD / 16; ip++)
                {
                    u32 kb[4];
                    ldsm_x4_trans(kb, sK + (kc * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * PITCH + ip * 16 + (lane >> 4) * 8);
                    mma_bf16_16816(dq[2 * ip], a, kb[0], kb[1]);
                    mma_bf16_16816(dq[2 * ip + 1], a, kb[2], kb[3]);
                }
            }
        }
        __syncthreads();
        k0 = kn; stage ^= 1;
    }
    cp_async_wait<0>();
    #pragma unroll
    for (int i = 0; i < HD / 8; i++)
    {
        int d = i * 8 + t4 * 2;
        if (row0 < T) { float* p = dQkv + ((long long)b * T + row0) * rs + h * HD + d; p[0] = dq[i][0] * scale; p[1] = dq[i][1] * scale; }
        if (row1 < T) { float* p = dQkv + ((long long)b * T + row1) * rs + h * HD + d; p[0] = dq[i][2] * scale; p[1] = dq[i][3] * scale; }
    }
}

extern "C" __global__ void __launch_bounds__(128) fbd_attn_bwd_dq_bf16_hd32(const u16* qkv, const u16* dOut, const float* lse, const float* D,
    float* dQkv, int B, int H, int T, int kind, int blockSize, float scale)
{ attn_bwd_dq_bf16<32>(qkv, dOut, lse, D, dQkv, B, H, T, kind, blockSize, scale); }
extern "C" __global__ void __launch_bounds__(128) fbd_attn_bwd_dq_bf16_hd64(const u16* qkv, const u16* dOut, const float* lse, const float* D,
    float* dQkv, int B, int H, int T, int kind, int blockSize, float scale)
{ attn_bwd_dq_bf16<64>(qkv, dOut, lse, D, dQkv, B, H, T, kind, blockSize, scale); }
