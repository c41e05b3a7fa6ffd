using ILGPU;

namespace FastBlockDiff.Kernels.Ilgpu;

/// <summary>
/// exp and log through the base-2 intrinsics, the only ones ILGPU's PTX backend implements without the Algorithms
/// library (ex2.approx / lg2.approx: about 2^-22 relative error, plus the rounding of the base change).
/// </summary>
public static class Fm
{
    const float Log2E = 1.44269504088896341f, Ln2 = 0.693147180559945309f;
    public static float Exp(float x) => IntrinsicMath.CPUOnly.Exp2(x * Log2E);
    public static float Log(float x) => IntrinsicMath.CPUOnly.Log2(x) * Ln2;
}

/// <summary>Scalar arguments of the GEMM kernel (one struct keeps the kernel signature short).</summary>
public struct GemmArgs
{
    public int M, N, K, Lda, Ldb, Ldc, TransA, TransB, HasBias;
    public float Alpha, Beta;
    public long StrideA, StrideB, StrideC;
}

/// <summary>Scalar arguments of the attention kernels.</summary>
public struct AttnArgs
{
    public int Batch, Heads, HeadDim, SeqLen, Kind, BlockSize;
    public float Scale;
}

/// <summary>Scalar arguments of decode attention.</summary>
public struct DecodeArgs
{
    public int Batch, Heads, HeadDim, BlockLen, CacheLen, CacheCapacity;
    public float Scale;
}

/// <summary>The ILGPU kernels. Static methods, compiled once per accelerator by <see cref="IlgpuBackend"/>.</summary>
public static class IlgpuKernels
{
    // ------------------------------------------------------------ elementwise
    public static void Fill(Index1D i, ArrayView<float> x, float v) => x[i] = v;
    public static void Copy(Index1D i, ArrayView<float> dst, ArrayView<float> src) => dst[i] = src[i];
    public static void CopyRows(Index1D i, ArrayView<float> dst, int dstStride, ArrayView<float> src, int srcStride, int cols)
    {
        int r = i / cols, c = i - r * cols;
        dst[(long)r * dstStride + c] = src[(long)r * srcStride + c];
    }
    public static void Axpy(Index1D i, ArrayView<float> y, float alpha, ArrayView<float> x) => y[i] = alpha * x[i] + y[i];
    public static void ScaleShift(Index1D i, ArrayView<float> x, float alpha, float beta) => x[i] = x[i] * alpha + beta;
    public static void Mul(Index1D i, ArrayView<float> dst, ArrayView<float> a, ArrayView<float> b, int accumulate) =>
        dst[i] = accumulate != 0 ? a[i] * b[i] + dst[i] : a[i] * b[i];

    /// <summary>Thread t sums x[t], x[t+P], ... (plain or squared) in float; the host combines the P partials in double.</summary>
    public static void PartialSums(Index1D t, ArrayView<float> x, ArrayView<float> partial, int n, int parts, int squares)
    {
        float s = 0;
        for (int i = t; i < n; i += parts) { float v = x[i]; s += squares != 0 ? v * v : v; }
        partial[t] = s;
    }

    /// <summary>Rows per partial in the two-stage column reductions (dim threads alone would leave a GPU mostly idle).</summary>
    public const int ColumnChunk = 64;

    /// <summary>Stage 1 of ColumnSum: partial[k, c] = Σ over rows k·64 … k·64+63 of src[r, c]; one thread per (k, c).</summary>
    public static void ColumnPartial(Index1D idx, ArrayView<float> partial, ArrayView<float> src, int rows, int cols)
    {
        int c = idx % cols, k = idx / cols;
        int r0 = k * ColumnChunk, r1 = r0 + ColumnChunk < rows ? r0 + ColumnChunk : rows;
        float s = 0;
        for (int r = r0; r < r1; r++) s += src[(long)r * cols + c];
        partial[idx] = s;
    }

    /// <summary>Stage 2: dst[c] (+)= Σ_k partial[k, c], in k order (deterministic).</summary>
    public static void ColumnCombine(Index1D c, ArrayView<float> dst, ArrayView<float> partial, int chunks, int cols, int accumulate)
    {
        float s = 0;
        for (int k = 0; k < chunks; k++) s += partial[(long)k * cols + c];
        dst[c] = accumulate != 0 ? dst[c] + s : s;
    }

    // ------------------------------------------------------------ GEMM
    public const int GemmTile = 32, GemmTileK = 16, GemmThreads = 64; // 8×8 threads, each a 4×4 register tile (stride 8)

    /// <summary>Shared-memory tiled GEMM: grid (⌈N/32⌉, ⌈M/32⌉, batch), 64 threads per group.</summary>
    public static void Gemm(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> bias, GemmArgs p)
    {
        var As = SharedMemory.Allocate<float>(GemmTile * GemmTileK);
        var Bs = SharedMemory.Allocate<float>(GemmTile * GemmTileK);
        int t = Group.IdxX, tx = t % 8, ty = t / 8;
        int n0 = Grid.IdxX * GemmTile, m0 = Grid.IdxY * GemmTile, z = Grid.IdxZ;
        long ao = z * p.StrideA, bo = z * p.StrideB, co = z * p.StrideC;
        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        for (int k0 = 0; k0 < p.K; k0 += GemmTileK)
        {
            for (int e = 0; e < GemmTile * GemmTileK / GemmThreads; e++)
            {
                int idx = t + GemmThreads * e;
                int mm, kk;
                if (p.TransA == 0) { mm = idx / GemmTileK; kk = idx % GemmTileK; }
                else { kk = idx / GemmTile; mm = idx % GemmTile; }
                int gm = m0 + mm, gk = k0 + kk;
                float v = 0;
                if (gm < p.M && gk < p.K) v = p.TransA == 0 ? a[ao + (long)gm * p.Lda + gk] : a[ao + (long)gk * p.Lda + gm];
                As[kk * GemmTile + mm] = v;
                int nn;
                if (p.TransB == 0) { kk = idx / GemmTile; nn = idx % GemmTile; }
                else { nn = idx / GemmTileK; kk = idx % GemmTileK; }
                int gn = n0 + nn; gk = k0 + kk;
                float w = 0;
                if (gn < p.N && gk < p.K) w = p.TransB == 0 ? b[bo + (long)gk * p.Ldb + gn] : b[bo + (long)gn * p.Ldb + gk];
                Bs[kk * GemmTile + nn] = w;
            }
            Group.Barrier();
            for (int kk = 0; kk < GemmTileK; kk++)
            {
                int ab = kk * GemmTile + ty, bb = kk * GemmTile + tx;
                float a0 = As[ab], a1 = As[ab + 8], a2 = As[ab + 16], a3 = As[ab + 24];
                float b0 = Bs[bb], b1 = Bs[bb + 8], b2 = Bs[bb + 16], b3 = Bs[bb + 24];
                c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
                c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
                c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
            }
            Group.Barrier();
        }
        int m = m0 + ty, n = n0 + tx;
        GemmStore(c, bias, p, co, m, n, c00); GemmStore(c, bias, p, co, m, n + 8, c01); GemmStore(c, bias, p, co, m, n + 16, c02); GemmStore(c, bias, p, co, m, n + 24, c03);
        GemmStore(c, bias, p, co, m + 8, n, c10); GemmStore(c, bias, p, co, m + 8, n + 8, c11); GemmStore(c, bias, p, co, m + 8, n + 16, c12); GemmStore(c, bias, p, co, m + 8, n + 24, c13);
        GemmStore(c, bias, p, co, m + 16, n, c20); GemmStore(c, bias, p, co, m + 16, n + 8, c21); GemmStore(c, bias, p, co, m + 16, n + 16, c22); GemmStore(c, bias, p, co, m + 16, n + 24, c23);
        GemmStore(c, bias, p, co, m + 24, n, c30); GemmStore(c, bias, p, co, m + 24, n + 8, c31); GemmStore(c, bias, p, co, m + 24, n + 16, c32); GemmStore(c, bias, p, co, m + 24, n + 24, c33);
    }

    // ------------------------------------------------------------ GEMM, 64×64 tiles
    public const int GemmTile64 = 64;

    /// <summary>
    /// Shared-memory tiled GEMM for large M and N: 64×64 output tile per group of 64 threads (8×8), each thread an 8×8
    /// register tile (stride 8), K in steps of 16. Twice the FMAs per shared-memory load of <see cref="Gemm"/>.
    /// Grid (⌈N/64⌉, ⌈M/64⌉, batch). The accumulators are written out as scalars so that they stay in registers.
    /// </summary>
    public static void Gemm64(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> bias, GemmArgs p)
    {
        var As = SharedMemory.Allocate<float>(GemmTile64 * GemmTileK);
        var Bs = SharedMemory.Allocate<float>(GemmTile64 * GemmTileK);
        int t = Group.IdxX, tx = t % 8, ty = t / 8;
        int n0 = Grid.IdxX * GemmTile64, m0 = Grid.IdxY * GemmTile64, z = Grid.IdxZ;
        long ao = z * p.StrideA, bo = z * p.StrideB, co = z * p.StrideC;
        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c04 = 0, c05 = 0, c06 = 0, c07 = 0;
        float c10 = 0, c11 = 0, c12 = 0, c13 = 0, c14 = 0, c15 = 0, c16 = 0, c17 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c24 = 0, c25 = 0, c26 = 0, c27 = 0;
        float c30 = 0, c31 = 0, c32 = 0, c33 = 0, c34 = 0, c35 = 0, c36 = 0, c37 = 0;
        float c40 = 0, c41 = 0, c42 = 0, c43 = 0, c44 = 0, c45 = 0, c46 = 0, c47 = 0;
        float c50 = 0, c51 = 0, c52 = 0, c53 = 0, c54 = 0, c55 = 0, c56 = 0, c57 = 0;
        float c60 = 0, c61 = 0, c62 = 0, c63 = 0, c64 = 0, c65 = 0, c66 = 0, c67 = 0;
        float c70 = 0, c71 = 0, c72 = 0, c73 = 0, c74 = 0, c75 = 0, c76 = 0, c77 = 0;
        for (int k0 = 0; k0 < p.K; k0 += GemmTileK)
        {
            for (int e = 0; e < GemmTile64 * GemmTileK / GemmThreads; e++)
            {
                int idx = t + GemmThreads * e;
                int mm, kk;
                if (p.TransA == 0) { mm = idx / GemmTileK; kk = idx % GemmTileK; }
                else { kk = idx / GemmTile64; mm = idx % GemmTile64; }
                int gm = m0 + mm, gk = k0 + kk;
                float v = 0;
                if (gm < p.M && gk < p.K) v = p.TransA == 0 ? a[ao + (long)gm * p.Lda + gk] : a[ao + (long)gk * p.Lda + gm];
                As[kk * GemmTile64 + mm] = v;
                int nn;
                if (p.TransB == 0) { kk = idx / GemmTile64; nn = idx % GemmTile64; }
                else { nn = idx / GemmTileK; kk = idx % GemmTileK; }
                int gn = n0 + nn; gk = k0 + kk;
                float w = 0;
                if (gn < p.N && gk < p.K) w = p.TransB == 0 ? b[bo + (long)gk * p.Ldb + gn] : b[bo + (long)gn * p.Ldb + gk];
                Bs[kk * GemmTile64 + nn] = w;
            }
            Group.Barrier();
            for (int kk = 0; kk < GemmTileK; kk++)
            {
                int ab = kk * GemmTile64 + ty, bb = kk * GemmTile64 + tx;
                float a0 = As[ab + 0], a1 = As[ab + 8], a2 = As[ab + 16], a3 = As[ab + 24], a4 = As[ab + 32], a5 = As[ab + 40], a6 = As[ab + 48], a7 = As[ab + 56];
                float b0 = Bs[bb + 0], b1 = Bs[bb + 8], b2 = Bs[bb + 16], b3 = Bs[bb + 24], b4 = Bs[bb + 32], b5 = Bs[bb + 40], b6 = Bs[bb + 48], b7 = Bs[bb + 56];
                c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3; c04 += a0 * b4; c05 += a0 * b5; c06 += a0 * b6; c07 += a0 * b7;
                c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3; c14 += a1 * b4; c15 += a1 * b5; c16 += a1 * b6; c17 += a1 * b7;
                c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3; c24 += a2 * b4; c25 += a2 * b5; c26 += a2 * b6; c27 += a2 * b7;
                c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3; c34 += a3 * b4; c35 += a3 * b5; c36 += a3 * b6; c37 += a3 * b7;
                c40 += a4 * b0; c41 += a4 * b1; c42 += a4 * b2; c43 += a4 * b3; c44 += a4 * b4; c45 += a4 * b5; c46 += a4 * b6; c47 += a4 * b7;
                c50 += a5 * b0; c51 += a5 * b1; c52 += a5 * b2; c53 += a5 * b3; c54 += a5 * b4; c55 += a5 * b5; c56 += a5 * b6; c57 += a5 * b7;
                c60 += a6 * b0; c61 += a6 * b1; c62 += a6 * b2; c63 += a6 * b3; c64 += a6 * b4; c65 += a6 * b5; c66 += a6 * b6; c67 += a6 * b7;
                c70 += a7 * b0; c71 += a7 * b1; c72 += a7 * b2; c73 += a7 * b3; c74 += a7 * b4; c75 += a7 * b5; c76 += a7 * b6; c77 += a7 * b7;
            }
            Group.Barrier();
        }
        int m = m0 + ty, n = n0 + tx;
        GemmStore(c, bias, p, co, m + 0, n + 0, c00); GemmStore(c, bias, p, co, m + 0, n + 8, c01); GemmStore(c, bias, p, co, m + 0, n + 16, c02); GemmStore(c, bias, p, co, m + 0, n + 24, c03); GemmStore(c, bias, p, co, m + 0, n + 32, c04); GemmStore(c, bias, p, co, m + 0, n + 40, c05); GemmStore(c, bias, p, co, m + 0, n + 48, c06); GemmStore(c, bias, p, co, m + 0, n + 56, c07);
        GemmStore(c, bias, p, co, m + 8, n + 0, c10); GemmStore(c, bias, p, co, m + 8, n + 8, c11); GemmStore(c, bias, p, co, m + 8, n + 16, c12); GemmStore(c, bias, p, co, m + 8, n + 24, c13); GemmStore(c, bias, p, co, m + 8, n + 32, c14); GemmStore(c, bias, p, co, m + 8, n + 40, c15); GemmStore(c, bias, p, co, m + 8, n + 48, c16); GemmStore(c, bias, p, co, m + 8, n + 56, c17);
        GemmStore(c, bias, p, co, m + 16, n + 0, c20); GemmStore(c, bias, p, co, m + 16, n + 8, c21); GemmStore(c, bias, p, co, m + 16, n + 16, c22); GemmStore(c, bias, p, co, m + 16, n + 24, c23); GemmStore(c, bias, p, co, m + 16, n + 32, c24); GemmStore(c, bias, p, co, m + 16, n + 40, c25); GemmStore(c, bias, p, co, m + 16, n + 48, c26); GemmStore(c, bias, p, co, m + 16, n + 56, c27);
        GemmStore(c, bias, p, co, m + 24, n + 0, c30); GemmStore(c, bias, p, co, m + 24, n + 8, c31); GemmStore(c, bias, p, co, m + 24, n + 16, c32); GemmStore(c, bias, p, co, m + 24, n + 24, c33); GemmStore(c, bias, p, co, m + 24, n + 32, c34); GemmStore(c, bias, p, co, m + 24, n + 40, c35); GemmStore(c, bias, p, co, m + 24, n + 48, c36); GemmStore(c, bias, p, co, m + 24, n + 56, c37);
        GemmStore(c, bias, p, co, m + 32, n + 0, c40); GemmStore(c, bias, p, co, m + 32, n + 8, c41); GemmStore(c, bias, p, co, m + 32, n + 16, c42); GemmStore(c, bias, p, co, m + 32, n + 24, c43); GemmStore(c, bias, p, co, m + 32, n + 32, c44); GemmStore(c, bias, p, co, m + 32, n + 40, c45); GemmStore(c, bias, p, co, m + 32, n + 48, c46); GemmStore(c, bias, p, co, m + 32, n + 56, c47);
        GemmStore(c, bias, p, co, m + 40, n + 0, c50); GemmStore(c, bias, p, co, m + 40, n + 8, c51); GemmStore(c, bias, p, co, m + 40, n + 16, c52); GemmStore(c, bias, p, co, m + 40, n + 24, c53); GemmStore(c, bias, p, co, m + 40, n + 32, c54); GemmStore(c, bias, p, co, m + 40, n + 40, c55); GemmStore(c, bias, p, co, m + 40, n + 48, c56); GemmStore(c, bias, p, co, m + 40, n + 56, c57);
        GemmStore(c, bias, p, co, m + 48, n + 0, c60); GemmStore(c, bias, p, co, m + 48, n + 8, c61); GemmStore(c, bias, p, co, m + 48, n + 16, c62); GemmStore(c, bias, p, co, m + 48, n + 24, c63); GemmStore(c, bias, p, co, m + 48, n + 32, c64); GemmStore(c, bias, p, co, m + 48, n + 40, c65); GemmStore(c, bias, p, co, m + 48, n + 48, c66); GemmStore(c, bias, p, co, m + 48, n + 56, c67);
        GemmStore(c, bias, p, co, m + 56, n + 0, c70); GemmStore(c, bias, p, co, m + 56, n + 8, c71); GemmStore(c, bias, p, co, m + 56, n + 16, c72); GemmStore(c, bias, p, co, m + 56, n + 24, c73); GemmStore(c, bias, p, co, m + 56, n + 32, c74); GemmStore(c, bias, p, co, m + 56, n + 40, c75); GemmStore(c, bias, p, co, m + 56, n + 48, c76); GemmStore(c, bias, p, co, m + 56, n + 56, c77);
    }

    static void GemmStore(ArrayView<float> c, ArrayView<float> bias, GemmArgs p, long co, int m, int n, float acc)
    {
        if (m >= p.M || n >= p.N) return;
        long ci = co + (long)m * p.Ldc + n;
        float v = p.Alpha * acc;
        if (p.Beta != 0f) v += p.Beta * c[ci]; // beta = 0 never reads C (it may hold NaN)
        if (p.HasBias != 0) v += bias[n];
        c[ci] = v;
    }

    // ------------------------------------------------------------ reductions inside a group
    /// <summary>Threads per row in the row kernels (layernorm, cross-entropy, sampling): one warp on NVIDIA GPUs.</summary>
    public const int RowThreads = 32;

    // Group reductions: every thread writes its value, then every thread reads all RowThreads values in the same
    // order. Two barriers instead of a log-depth tree: barriers are what the ILGPU CPU accelerator is slowest at,
    // and on a GPU the 32 shared-memory reads are broadcasts. Every thread gets the same (deterministic) result.
    static float GroupSum(ArrayView<float> sh, int t, float v)
    {
        sh[t] = v;
        Group.Barrier();
        float r = 0;
        for (int k = 0; k < RowThreads; k++) r += sh[k];
        Group.Barrier();
        return r;
    }

    static float GroupMax(ArrayView<float> sh, int t, float v)
    {
        sh[t] = v;
        Group.Barrier();
        float r = float.NegativeInfinity;
        for (int k = 0; k < RowThreads; k++) r = XMax(r, sh[k]);
        Group.Barrier();
        return r;
    }

    static float XMax(float a, float b) => a > b ? a : b;

    // ------------------------------------------------------------ layer norm
    /// <summary>One group of RowThreads per row.</summary>
    public static void LayerNormForward(ArrayView<float> x, ArrayView<float> w, ArrayView<float> bias, int hasBias, ArrayView<float> y,
        ArrayView<float> mean, ArrayView<float> rstd, int dim, float eps)
    {
        var sh = SharedMemory.Allocate<float>(RowThreads);
        int r = Grid.IdxX, t = Group.IdxX;
        long o = (long)r * dim;
        float s = 0;
        for (int c = t; c < dim; c += RowThreads) s += x[o + c];
        float mu = GroupSum(sh, t, s) / dim;
        float q = 0;
        for (int c = t; c < dim; c += RowThreads) { float d = x[o + c] - mu; q += d * d; }
        float rs = 1f / MathF.Sqrt(GroupSum(sh, t, q) / dim + eps);
        if (t == 0) { mean[r] = mu; rstd[r] = rs; }
        for (int c = t; c < dim; c += RowThreads)
        {
            float v = (x[o + c] - mu) * rs * w[c];
            if (hasBias != 0) v += bias[c];
            y[o + c] = v;
        }
    }

    /// <summary>dx (accumulated), one group per row.</summary>
    public static void LayerNormBackwardDx(ArrayView<float> dy, ArrayView<float> x, ArrayView<float> w, ArrayView<float> mean,
        ArrayView<float> rstd, ArrayView<float> dx, int dim)
    {
        var sh = SharedMemory.Allocate<float>(RowThreads);
        int r = Grid.IdxX, t = Group.IdxX;
        long o = (long)r * dim;
        float mu = mean[r], rs = rstd[r];
        float sg = 0, sgx = 0;
        for (int c = t; c < dim; c += RowThreads)
        {
            float g = dy[o + c] * w[c], xh = (x[o + c] - mu) * rs;
            sg += g; sgx += g * xh;
        }
        float meanG = GroupSum(sh, t, sg) / dim;
        float meanGX = GroupSum(sh, t, sgx) / dim;
        for (int c = t; c < dim; c += RowThreads)
        {
            float g = dy[o + c] * w[c], xh = (x[o + c] - mu) * rs;
            dx[o + c] += rs * (g - xh * meanGX - meanG);
        }
    }

    /// <summary>Stage 1 of dWeight and dBias: partials over 64-row chunks, one thread per (chunk, column).</summary>
    public static void LayerNormBackwardDw(Index1D idx, ArrayView<float> dy, ArrayView<float> x, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<float> partialW, ArrayView<float> partialB, int rows, int dim)
    {
        int c = idx % dim, k = idx / dim;
        int r0 = k * ColumnChunk, r1 = r0 + ColumnChunk < rows ? r0 + ColumnChunk : rows;
        float sw = 0, sb = 0;
        for (int r = r0; r < r1; r++)
        {
            long i = (long)r * dim + c;
            float g = dy[i];
            sw += g * (x[i] - mean[r]) * rstd[r];
            sb += g;
        }
        partialW[idx] = sw;
        partialB[idx] = sb;
    }

    // ------------------------------------------------------------ activations
    const float GeluC = 0.7978845608028654f, GeluA = 0.044715f;

    public static void GeluForward(Index1D i, ArrayView<float> x, ArrayView<float> y)
    {
        float v = x[i];
        // 0.5·v·(1 + tanh(u)) = v·σ(2u): no tanh intrinsic (PTX has only tanh.approx) and no cancellation
        y[i] = v / (1f + Fm.Exp(-2f * GeluC * (v + GeluA * v * v * v)));
    }

    public static void GeluBackward(Index1D i, ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dx)
    {
        float v = x[i];
        // with s = σ(2u): 0.5(1+tanh u) = s and 1 - tanh²u = 4s(1-s)
        float s = 1f / (1f + Fm.Exp(-2f * GeluC * (v + GeluA * v * v * v)));
        float d = s + 2f * v * s * (1f - s) * GeluC * (1f + 3f * GeluA * v * v);
        dx[i] = dy[i] * d;
    }

    public static void SiluForward(Index1D i, ArrayView<float> x, ArrayView<float> y)
    {
        float v = x[i];
        y[i] = v / (1f + Fm.Exp(-v));
    }

    public static void SiluBackward(Index1D i, ArrayView<float> x, ArrayView<float> dy, ArrayView<float> dx)
    {
        float v = x[i], s = 1f / (1f + Fm.Exp(-v));
        dx[i] = dy[i] * s * (1f + v * (1f - s));
    }

    // ------------------------------------------------------------ transformer pieces
    /// <summary>One thread per (row, head, pair).</summary>
    public static void Rotary(Index1D idx, ArrayView<float> x, int rowStride, int heads, int headDim, ArrayView<int> pos,
        ArrayView<float> cos, ArrayView<float> sin, float sign)
    {
        int half = headDim / 2;
        int i = idx % half, rh = idx / half, h = rh % heads, r = rh / heads;
        int p = pos[r];
        float c = cos[(long)p * half + i], s = sign * sin[(long)p * half + i];
        long b = (long)r * rowStride + h * headDim;
        float x1 = x[b + i], x2 = x[b + half + i];
        x[b + i] = x1 * c - x2 * s;
        x[b + half + i] = x2 * c + x1 * s;
    }

    public static void EmbeddingForward(Index1D idx, ArrayView<int> ids, ArrayView<float> table, ArrayView<float> output, int dim, int tableRows)
    {
        int r = idx / dim, c = idx - r * dim;
        int id = ids[r];
        output[idx] = (uint)id < (uint)tableRows ? table[(long)id * dim + c] : 0f;
    }

    public static void EmbeddingBackward(Index1D idx, ArrayView<int> ids, ArrayView<float> dOut, ArrayView<float> dTable, int dim, int tableRows)
    {
        int r = idx / dim, c = idx - r * dim;
        int id = ids[r];
        if ((uint)id < (uint)tableRows) Atomic.Add(ref dTable[(long)id * dim + c], dOut[idx]);
    }

    /// <summary>Scatter-add without atomics: one thread per column walks the rows in order (deterministic, the CPU's order).</summary>
    public static void EmbeddingBackwardColumns(Index1D c, ArrayView<int> ids, ArrayView<float> dOut, ArrayView<float> dTable, int rows, int dim, int tableRows)
    {
        for (int r = 0; r < rows; r++)
        {
            int id = ids[r];
            if ((uint)id < (uint)tableRows) dTable[(long)id * dim + c] += dOut[(long)r * dim + c];
        }
    }

    public static void ResidualGatedForward(Index1D i, ArrayView<float> x, ArrayView<float> y, ArrayView<float> gate, int dim, float dropP, float keepScale, ulong seed)
    {
        int c = i % dim;
        if (IlgpuMask.Keep(seed, (ulong)(int)i, dropP)) x[i] += gate[c] * keepScale * y[i];
    }

    public static void ResidualGatedBackwardDy(Index1D i, ArrayView<float> dx, ArrayView<float> gate, ArrayView<float> dy, int dim, float dropP, float keepScale, ulong seed)
    {
        int c = i % dim;
        float k = IlgpuMask.Keep(seed, (ulong)(int)i, dropP) ? keepScale : 0f;
        dy[i] = dx[i] * gate[c] * k;
    }

    /// <summary>Stage 1 of dGate: partials of Σ_r dx·dropout(y) over 64-row chunks, one thread per (chunk, column).</summary>
    public static void ResidualGatedBackwardGate(Index1D idx, ArrayView<float> dx, ArrayView<float> y, ArrayView<float> partial, int rows, int dim, float dropP, float keepScale, ulong seed)
    {
        int c = idx % dim, k = idx / dim;
        int r0 = k * ColumnChunk, r1 = r0 + ColumnChunk < rows ? r0 + ColumnChunk : rows;
        float s = 0;
        for (int r = r0; r < r1; r++)
        {
            int i = r * dim + c;
            float keep = IlgpuMask.Keep(seed, (ulong)i, dropP) ? keepScale : 0f;
            s += dx[i] * keep * y[i];
        }
        partial[idx] = s;
    }

    // ------------------------------------------------------------ attention
    public const int AttnTile = 32, MaxHeadDim = 128;

    /// <summary>
    /// Forward: grid (⌈T/32⌉, heads, batch), 32 threads per group, one query each. K/V tiles of 32 keys go through
    /// shared memory; tiles are classified once per group (empty skipped, full unmasked, partial masked per element);
    /// online softmax with one rescale per tile.
    /// </summary>
    public static void AttentionForward(ArrayView<float> qkv, ArrayView<float> output, ArrayView<float> lse, AttnArgs p)
    {
        var Ks = SharedMemory.Allocate<float>(AttnTile * MaxHeadDim);
        var Vs = SharedMemory.Allocate<float>(AttnTile * MaxHeadDim);
        var q = LocalMemory.Allocate<float>(MaxHeadDim);
        var acc = LocalMemory.Allocate<float>(MaxHeadDim);
        var sc = LocalMemory.Allocate<float>(AttnTile);
        int t = Group.IdxX, q0 = Grid.IdxX * AttnTile, h = Grid.IdxY, b = Grid.IdxZ;
        int T = p.SeqLen, hd = p.HeadDim, D = p.Heads * hd;
        int i = q0 + t;
        int q1 = q0 + AttnTile < T ? q0 + AttnTile : T;
        bool active = i < T;
        long rowStride = 3L * D, baseRow = (long)b * T;
        if (active)
        {
            long qo = (baseRow + i) * rowStride + h * hd;
            for (int d = 0; d < hd; d++) { q[d] = qkv[qo + d] * p.Scale; acc[d] = 0f; }
        }
        float m = float.NegativeInfinity, l = 0f;
        for (int k0 = 0; k0 < T; k0 += AttnTile)
        {
            int k1 = k0 + AttnTile < T ? k0 + AttnTile : T;
            int kind = IlgpuMask.ClassifyTile(p.Kind, T, p.BlockSize, q0, q1, k0, k1);
            if (kind == IlgpuMask.TileEmpty) continue; // uniform over the group
            int nk = k1 - k0;
            for (int e = t; e < nk * hd; e += AttnTile)
            {
                int j = e / hd, d = e - j * hd;
                long ko = (baseRow + k0 + j) * rowStride + D + h * hd + d;
                Ks[j * MaxHeadDim + d] = qkv[ko];
                Vs[j * MaxHeadDim + d] = qkv[ko + D];
            }
            Group.Barrier();
            if (active)
            {
                float tmax = float.NegativeInfinity;
                for (int j = 0; j < nk; j++)
                {
                    float s = float.NegativeInfinity;
                    if (kind == IlgpuMask.TileFull || IlgpuMask.Allowed(p.Kind, T, p.BlockSize, i, k0 + j))
                    {
                        s = 0f;
                        for (int d = 0; d < hd; d++) s += q[d] * Ks[j * MaxHeadDim + d];
                    }
                    sc[j] = s;
                    tmax = tmax > s ? tmax : s;
                }
                if (tmax > float.NegativeInfinity)
                {
                    float mNew = m > tmax ? m : tmax;
                    float corr = Fm.Exp(m - mNew);
                    l *= corr;
                    for (int d = 0; d < hd; d++) acc[d] *= corr;
                    for (int j = 0; j < nk; j++)
                    {
                        float s = sc[j];
                        if (s == float.NegativeInfinity) continue;
                        float pj = Fm.Exp(s - mNew);
                        l += pj;
                        for (int d = 0; d < hd; d++) acc[d] += pj * Vs[j * MaxHeadDim + d];
                    }
                    m = mNew;
                }
            }
            Group.Barrier();
        }
        if (active)
        {
            long oo = (baseRow + i) * D + h * hd;
            float inv = l > 0f ? 1f / l : 0f;
            for (int d = 0; d < hd; d++) output[oo + d] = acc[d] * inv;
            lse[((long)b * p.Heads + h) * T + i] = l > 0f ? m + Fm.Log(l) : float.NegativeInfinity;
        }
    }

    /// <summary>D[b,h,i] = Σ_d dO·O, one thread per (b, h, i).</summary>
    public static void AttentionDelta(Index1D idx, ArrayView<float> output, ArrayView<float> dOutput, ArrayView<float> delta, AttnArgs p)
    {
        int T = p.SeqLen, hd = p.HeadDim, D = p.Heads * hd;
        int i = idx % T, bh = idx / T, h = bh % p.Heads, b = bh / p.Heads;
        long o = ((long)b * T + i) * D + h * hd;
        float s = 0;
        for (int d = 0; d < hd; d++) s += output[o + d] * dOutput[o + d];
        delta[idx] = s;
    }

    /// <summary>dQ, one thread per (b, h, i); key tiles classified against the query's 32-row tile.</summary>
    public static void AttentionBackwardDq(Index1D idx, ArrayView<float> qkv, ArrayView<float> lse, ArrayView<float> delta,
        ArrayView<float> dOutput, ArrayView<float> dQkv, AttnArgs p)
    {
        var dq = LocalMemory.Allocate<float>(MaxHeadDim);
        int T = p.SeqLen, hd = p.HeadDim, D = p.Heads * hd;
        int i = idx % T, bh = idx / T, h = bh % p.Heads, b = bh / p.Heads;
        long rowStride = 3L * D, baseRow = (long)b * T;
        long qo = (baseRow + i) * rowStride + h * hd, oo = (baseRow + i) * D + h * hd;
        float li = lse[idx], di = delta[idx];
        for (int d = 0; d < hd; d++) dq[d] = 0f;
        int q0 = i / AttnTile * AttnTile, q1 = q0 + AttnTile < T ? q0 + AttnTile : T;
        for (int k0 = 0; k0 < T; k0 += AttnTile)
        {
            int k1 = k0 + AttnTile < T ? k0 + AttnTile : T;
            int kind = IlgpuMask.ClassifyTile(p.Kind, T, p.BlockSize, q0, q1, k0, k1);
            if (kind == IlgpuMask.TileEmpty) continue;
            for (int j = k0; j < k1; j++)
            {
                if (kind != IlgpuMask.TileFull && !IlgpuMask.Allowed(p.Kind, T, p.BlockSize, i, j)) continue;
                long ko = (baseRow + j) * rowStride + D + h * hd;
                float s = 0, dp = 0;
                for (int d = 0; d < hd; d++) { s += qkv[qo + d] * qkv[ko + d]; dp += dOutput[oo + d] * qkv[ko + D + d]; }
                float pij = Fm.Exp(s * p.Scale - li);
                float ds = pij * (dp - di);
                for (int d = 0; d < hd; d++) dq[d] += ds * qkv[ko + d];
            }
        }
        for (int d = 0; d < hd; d++) dQkv[qo + d] = dq[d] * p.Scale;
    }

    /// <summary>dK and dV, one thread per (b, h, j); query tiles classified against the key's 32-row tile.</summary>
    public static void AttentionBackwardDkv(Index1D idx, ArrayView<float> qkv, ArrayView<float> lse, ArrayView<float> delta,
        ArrayView<float> dOutput, ArrayView<float> dQkv, AttnArgs p)
    {
        var dk = LocalMemory.Allocate<float>(MaxHeadDim);
        var dv = LocalMemory.Allocate<float>(MaxHeadDim);
        int T = p.SeqLen, hd = p.HeadDim, D = p.Heads * hd;
        int j = idx % T, bh = idx / T, h = bh % p.Heads, b = bh / p.Heads;
        long rowStride = 3L * D, baseRow = (long)b * T;
        long ko = (baseRow + j) * rowStride + D + h * hd;
        long lb = ((long)b * p.Heads + h) * T;
        for (int d = 0; d < hd; d++) { dk[d] = 0f; dv[d] = 0f; }
        int k0 = j / AttnTile * AttnTile, k1 = k0 + AttnTile < T ? k0 + AttnTile : T;
        for (int q0 = 0; q0 < T; q0 += AttnTile)
        {
            int q1 = q0 + AttnTile < T ? q0 + AttnTile : T;
            int kind = IlgpuMask.ClassifyTile(p.Kind, T, p.BlockSize, q0, q1, k0, k1);
            if (kind == IlgpuMask.TileEmpty) continue;
            for (int i = q0; i < q1; i++)
            {
                if (kind != IlgpuMask.TileFull && !IlgpuMask.Allowed(p.Kind, T, p.BlockSize, i, j)) continue;
                long qo = (baseRow + i) * rowStride + h * hd, oo = (baseRow + i) * D + h * hd;
                float s = 0, dp = 0;
                for (int d = 0; d < hd; d++) { s += qkv[qo + d] * qkv[ko + d]; dp += dOutput[oo + d] * qkv[ko + D + d]; }
                float pij = Fm.Exp(s * p.Scale - lse[lb + i]);
                float ds = pij * (dp - delta[lb + i]) * p.Scale;
                for (int d = 0; d < hd; d++) { dv[d] += pij * dOutput[oo + d]; dk[d] += ds * qkv[qo + d]; }
            }
        }
        for (int d = 0; d < hd; d++) { dQkv[ko + d] = dk[d]; dQkv[ko + D + d] = dv[d]; }
    }

    /// <summary>Decode: one thread per (b, h, i); cache rows then the block's own keys, online softmax per key.</summary>
    public static void DecodeAttention(Index1D idx, ArrayView<float> qkv, ArrayView<float> kCache, ArrayView<float> vCache,
        ArrayView<float> output, DecodeArgs p)
    {
        var acc = LocalMemory.Allocate<float>(MaxHeadDim);
        int Lb = p.BlockLen, hd = p.HeadDim, D = p.Heads * hd;
        int i = idx % Lb, bh = idx / Lb, h = bh % p.Heads, b = bh / p.Heads;
        long rowStride = 3L * D, baseRow = (long)b * Lb;
        long qo = (baseRow + i) * rowStride + h * hd;
        for (int d = 0; d < hd; d++) acc[d] = 0f;
        float m = float.NegativeInfinity, l = 0f;
        for (int j = 0; j < p.CacheLen; j++)
        {
            long ko = ((long)b * p.CacheCapacity + j) * D + h * hd;
            float s = 0;
            for (int d = 0; d < hd; d++) s += qkv[qo + d] * kCache[ko + d];
            s *= p.Scale;
            float mNew = m > s ? m : s;
            float corr = Fm.Exp(m - mNew), pj = Fm.Exp(s - mNew);
            l = l * corr + pj;
            for (int d = 0; d < hd; d++) acc[d] = acc[d] * corr + pj * vCache[ko + d];
            m = mNew;
        }
        for (int j = 0; j < Lb; j++)
        {
            long ko = (baseRow + j) * rowStride + D + h * hd;
            float s = 0;
            for (int d = 0; d < hd; d++) s += qkv[qo + d] * qkv[ko + d];
            s *= p.Scale;
            float mNew = m > s ? m : s;
            float corr = Fm.Exp(m - mNew), pj = Fm.Exp(s - mNew);
            l = l * corr + pj;
            for (int d = 0; d < hd; d++) acc[d] = acc[d] * corr + pj * qkv[ko + D + d];
            m = mNew;
        }
        long oo = (baseRow + i) * D + h * hd;
        for (int d = 0; d < hd; d++) output[oo + d] = acc[d] / l;
    }

    // ------------------------------------------------------------ loss
    /// <summary>Fused SUBS cross-entropy, one group of RowThreads per row.</summary>
    public static void SubsCrossEntropy(ArrayView<float> logits, ArrayView<int> targets, ArrayView<float> weights, ArrayView<float> loss,
        int vocab, int maskId, float gradScale, int writeGrad)
    {
        var sh = SharedMemory.Allocate<float>(RowThreads);
        int r = Grid.IdxX, t = Group.IdxX;
        long o = (long)r * vocab;
        float w = weights[r];
        if (w == 0f) // uniform over the group
        {
            if (t == 0) loss[r] = 0f;
            if (writeGrad != 0) for (int c = t; c < vocab; c += RowThreads) logits[o + c] = 0f;
            return;
        }
        float mx = float.NegativeInfinity;
        for (int c = t; c < vocab; c += RowThreads) if (c != maskId) mx = XMax(mx, logits[o + c]);
        mx = GroupMax(sh, t, mx);
        float s = 0;
        for (int c = t; c < vocab; c += RowThreads) if (c != maskId) s += Fm.Exp(logits[o + c] - mx);
        float lse = mx + Fm.Log(GroupSum(sh, t, s));
        int target = targets[r];
        if (t == 0) loss[r] = w * (lse - logits[o + target]);
        Group.Barrier(); // everybody has read logits[target] before it is overwritten
        if (writeGrad != 0)
        {
            float g = gradScale * w;
            for (int c = t; c < vocab; c += RowThreads)
            {
                float v = c == maskId ? 0f : Fm.Exp(logits[o + c] - lse) * g;
                if (c == target) v -= g;
                logits[o + c] = v;
            }
        }
    }

    // ------------------------------------------------------------ optimiser
    public static void AdamW(Index1D i, ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v,
        float beta1, float beta2, float eps, float gradScale, float decay, float stepSize, float sqrtBc2)
    {
        float g = grad[i] * gradScale;
        float mi = beta1 * m[i] + (1f - beta1) * g;
        float vi = beta2 * v[i] + (1f - beta2) * g * g;
        m[i] = mi; v[i] = vi;
        param[i] = param[i] * decay - stepSize * mi / (MathF.Sqrt(vi) / sqrtBc2 + eps);
    }

    public static void Ema(Index1D i, ArrayView<float> ema, ArrayView<float> param, float decay) =>
        ema[i] = decay * ema[i] + (1f - decay) * param[i];

    // ------------------------------------------------------------ sampling
    /// <summary>
    /// One group of RowThreads per row. The CPU backend walks the probabilities sorted descending (ties by id); here no
    /// sort is needed: the element where the running sum in that order first reaches a threshold is found by a radix
    /// select on the probability's float bits (<see cref="RadixFind"/>), then walking the ties of that value in id order.
    /// Costs a few passes over the row per draw, whatever the nucleus size.
    /// </summary>
    public static void SampleCategorical(ArrayView<float> logits, int vocab, int maskId, float temperature, float topP,
        ArrayView<float> uniforms, ArrayView<int> tokens, ArrayView<float> probs)
    {
        var shf = SharedMemory.Allocate<float>(RowThreads);
        var shd = SharedMemory.Allocate<double>(RowThreads);
        var shi = SharedMemory.Allocate<int>(RowThreads);
        var bins = SharedMemory.Allocate<double>(RadixBins);
        int r = Grid.IdxX, t = Group.IdxX;
        long o = (long)r * vocab;
        if (temperature <= 0f)
        {
            // argmax, first index among equals (as TensorPrimitives.IndexOfMax)
            float bv = float.NegativeInfinity; int bi = int.MaxValue;
            for (int c = t; c < vocab; c += RowThreads)
            {
                float v = c == maskId ? float.NegativeInfinity : logits[o + c];
                if (bi == int.MaxValue || v > bv) { bv = v; bi = c; }
            }
            shf[t] = bv; shi[t] = bi;
            Group.Barrier();
            if (t == 0)
            {
                for (int k = 1; k < RowThreads; k++)
                {
                    float v2 = shf[k]; int i2 = shi[k];
                    if (i2 != int.MaxValue && (shi[0] == int.MaxValue || v2 > shf[0] || (v2 == shf[0] && i2 < shi[0]))) { shf[0] = v2; shi[0] = i2; }
                }
            }
            if (t == 0) { tokens[r] = shi[0]; probs[r] = 1f; }
            return;
        }
        float inv = 1f / temperature;
        float mx = float.NegativeInfinity;
        for (int c = t; c < vocab; c += RowThreads) if (c != maskId) mx = XMax(mx, logits[o + c] * inv);
        mx = GroupMax(shf, t, mx);
        float sum = 0;
        for (int c = t; c < vocab; c += RowThreads) if (c != maskId) sum += Fm.Exp(logits[o + c] * inv - mx);
        float rsum = 1f / GroupSum(shf, t, sum);
        double u = uniforms[r];
        int pick; double total;
        if (topP >= 1f)
        {
            total = 1.0;
            // vocabulary order: the first positive entry where the running sum exceeds u (else the last positive one)
            pick = FirstCrossing(logits, o, vocab, maskId, inv, mx, rsum, shd, shi, t, 0f, 0.0, u, true, out _);
        }
        else
        {
            // nucleus (as bd3lms): the sorted prefix whose cumulative mass stays <= topP, the top token always kept.
            // cN is the crossing element, the first in sorted order whose running mass exceeds topP: the first left out.
            int cN = -1; float pN = 0f; bool crossingKept = false;
            float vN = RadixFind(logits, o, vocab, maskId, inv, mx, rsum, bins, shi, shd, t, topP, true, out double baseN);
            if (vN > 0f)
            {
                cN = FirstCrossing(logits, o, vocab, maskId, inv, mx, rsum, shd, shi, t, vN, baseN, topP, true, out double massAt);
                pN = Prob(logits, o, cN, maskId, inv, mx, rsum);
                total = massAt - pN;
                // nothing before it: the crossing element is the top token, which always stays
                if (!(total > 0)) { total = massAt; crossingKept = true; }
            }
            else total = MassAbove(logits, o, vocab, maskId, inv, mx, rsum, shd, t, 0f); // the whole vocabulary is the nucleus
            double target = u * total;
            pick = -1;
            float vW = RadixFind(logits, o, vocab, maskId, inv, mx, rsum, bins, shi, shd, t, target, true, out double baseW);
            if (vW > 0f)
            {
                pick = FirstCrossing(logits, o, vocab, maskId, inv, mx, rsum, shd, shi, t, vW, baseW, target, true, out _);
                if (pick >= 0 && cN >= 0)
                {
                    float pp = Prob(logits, o, pick, maskId, inv, mx, rsum);
                    bool outside = pp < pN || (pp == pN && (crossingKept ? pick > cN : pick >= cN));
                    if (outside) pick = -1; // past the nucleus (rounding): its last element stands
                }
            }
            if (pick < 0 && cN >= 0)
            {
                if (crossingKept) pick = cN;
                else
                {
                    // the nucleus's last element: where the running mass first reaches the nucleus mass
                    float vL = RadixFind(logits, o, vocab, maskId, inv, mx, rsum, bins, shi, shd, t, total, false, out double baseL);
                    if (vL > 0f) pick = FirstCrossing(logits, o, vocab, maskId, inv, mx, rsum, shd, shi, t, vL, baseL, total, false, out _);
                }
            }
            if (pick < 0) pick = LastPositive(logits, o, vocab, maskId, inv, mx, rsum, shf, shi, t);
        }
        if (t == 0)
        {
            tokens[r] = pick;
            probs[r] = pick < 0 ? 0f : (float)(Prob(logits, o, pick, maskId, inv, mx, rsum) / total);
        }
    }

    static float Prob(ArrayView<float> logits, long o, int c, int maskId, float inv, float mx, float rsum) =>
        c == maskId ? 0f : Fm.Exp(logits[o + c] * inv - mx) * rsum;

    static double GroupSumD(ArrayView<double> sh, int t, double v)
    {
        sh[t] = v;
        Group.Barrier();
        double r = 0;
        for (int k = 0; k < RowThreads; k++) r += sh[k];
        Group.Barrier();
        return r;
    }

    static int GroupMinI(ArrayView<int> sh, int t, int v)
    {
        sh[t] = v;
        Group.Barrier();
        int r = int.MaxValue;
        for (int k = 0; k < RowThreads; k++) r = sh[k] < r ? sh[k] : r;
        Group.Barrier();
        return r;
    }

    /// <summary>Σ p over p &gt; v (v = 0: all positive mass).</summary>
    static double MassAbove(ArrayView<float> logits, long o, int vocab, int maskId, float inv, float mx, float rsum, ArrayView<double> shd, int t, float v)
    {
        double s = 0;
        for (int c = t; c < vocab; c += RowThreads) { float p = Prob(logits, o, c, maskId, inv, mx, rsum); if (p > v) s += p; }
        return GroupSumD(shd, t, s);
    }

    public const int RadixBins = 256;

    /// <summary>
    /// The probability v of the element where the running sum in descending order first satisfies (sum ≥ threshold, or
    /// &gt; when strict), found by a 4-pass radix select over the float bits (non-negative floats order as their bits):
    /// each pass bins the mass of the candidates by the next 8 bits and keeps the bin where the condition is first met.
    /// Returns 0 when even the whole positive mass does not satisfy the condition; <paramref name="above"/> gets Σ_{p &gt; v} p.
    /// </summary>
    static float RadixFind(ArrayView<float> logits, long o, int vocab, int maskId, float inv, float mx, float rsum, ArrayView<double> bins,
        ArrayView<int> shi, ArrayView<double> shd, int t, double threshold, bool strict, out double above)
    {
        uint prefix = 0, mask = 0;
        double run = 0;
        for (int pass = 0; pass < 4; pass++)
        {
            int shift = 24 - 8 * pass;
            for (int b = t; b < RadixBins; b += RowThreads) bins[b] = 0;
            Group.Barrier();
            for (int c = t; c < vocab; c += RowThreads)
            {
                float p = Prob(logits, o, c, maskId, inv, mx, rsum);
                if (p <= 0f) continue;
                uint bits = (uint)ILGPU.Interop.FloatAsInt(p);
                if ((bits & mask) == prefix) Atomic.Add(ref bins[(int)((bits >> shift) & 255u)], (double)p);
            }
            Group.Barrier();
            if (t == 0)
            {
                double acc = run;
                int sel = -1;
                for (int b = RadixBins - 1; b >= 0; b--)
                {
                    double next = acc + bins[b];
                    if (bins[b] > 0 && (strict ? next > threshold : next >= threshold)) { sel = b; break; }
                    acc = next;
                }
                shi[0] = sel; shd[0] = acc;
            }
            Group.Barrier();
            int selBin = shi[0];
            run = shd[0];
            Group.Barrier();
            if (selBin < 0) { above = run; return 0f; } // uniform over the group
            prefix |= (uint)selBin << shift;
            mask |= 255u << shift;
        }
        above = run;
        return ILGPU.Interop.IntAsFloat(prefix);
    }

    /// <summary>
    /// Among the entries with p == v (or all positive entries when v = 0), in id order, starting from mass baseMass: the first
    /// whose running mass satisfies the condition, with that mass; else the last such entry and the final mass.
    /// Contiguous chunks per thread, an exclusive scan of the chunk sums, then each thread walks its own chunk.
    /// </summary>
    static int FirstCrossing(ArrayView<float> logits, long o, int vocab, int maskId, float inv, float mx, float rsum, ArrayView<double> shd,
        ArrayView<int> shi, int t, float v, double baseMass, double threshold, bool strict, out double massAt)
    {
        int chunk = (vocab + RowThreads - 1) / RowThreads;
        int c0 = t * chunk, c1 = c0 + chunk < vocab ? c0 + chunk : vocab;
        double local = 0;
        int last = -1;
        for (int c = c0; c < c1; c++)
        {
            float p = Prob(logits, o, c, maskId, inv, mx, rsum);
            if (v > 0f ? p == v : p > 0f) { local += p; last = c; }
        }
        shd[t] = local;
        Group.Barrier();
        if (t == 0)
        {
            double run = baseMass;
            for (int k = 0; k < RowThreads; k++) { double x = shd[k]; shd[k] = run; run += x; }
        }
        Group.Barrier();
        double acc = shd[t];
        Group.Barrier();
        int cand = int.MaxValue;
        double candMass = 0;
        for (int c = c0; c < c1; c++)
        {
            float p = Prob(logits, o, c, maskId, inv, mx, rsum);
            if (!(v > 0f ? p == v : p > 0f)) continue;
            acc += p;
            if (strict ? acc > threshold : acc >= threshold) { cand = c; candMass = acc; break; }
        }
        int win = GroupMinI(shi, t, cand);
        if (win != int.MaxValue)
        {
            if (cand == win) shd[0] = candMass;
            Group.Barrier();
            massAt = shd[0];
            Group.Barrier();
            return win;
        }
        // no crossing: the last selected entry and the total mass
        int lastAll = -GroupMinI(shi, t, -last);
        if (last == lastAll && last >= 0) shd[0] = acc;
        Group.Barrier();
        massAt = lastAll >= 0 ? shd[0] : baseMass;
        Group.Barrier();
        return lastAll;
    }

    /// <summary>The last positive entry in descending order: the smallest positive probability, largest id among equals.</summary>
    static int LastPositive(ArrayView<float> logits, long o, int vocab, int maskId, float inv, float mx, float rsum, ArrayView<float> shf, ArrayView<int> shi, int t)
    {
        float mn = float.PositiveInfinity;
        for (int c = t; c < vocab; c += RowThreads) { float p = Prob(logits, o, c, maskId, inv, mx, rsum); if (p > 0f && p < mn) mn = p; }
        mn = -GroupMax(shf, t, -mn);
        int best = -1;
        for (int c = t; c < vocab; c += RowThreads) if (Prob(logits, o, c, maskId, inv, mx, rsum) == mn) best = c;
        return -GroupMinI(shi, t, -best);
    }
}
