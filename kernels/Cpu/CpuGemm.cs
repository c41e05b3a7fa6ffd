using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FastBlockDiff.Kernels.Cpu;

/// <summary>Which micro-kernel the CPU GEMM uses. Auto picks the widest the CPU runs natively.</summary>
public enum GemmKernel { Auto, Avx512, Avx2, Portable }

/// <summary>
/// fp32 GEMM of the CPU backend, Goto/BLIS style:
/// <list type="bullet">
/// <item>loop over N panels (NC) and K panels (KC); each K×N panel of op(B) is packed once into NR-wide
/// slivers [kc][NR] shared by all threads;</item>
/// <item>work items are (M block of MC rows) × (range of B slivers); each packs its block of op(A), scaled
/// by alpha, into MR-tall slivers [kc][MR] (a thread's own pooled buffer, sized for L2), then runs the
/// micro-kernel over every MR×NR tile: a B sliver stays in L1 while the A slivers stream from L2. Transposed A with
/// alpha = 1 (the weight gradients dYᵀ·X) already holds each step's MR values side by side: the kernel reads it
/// where it lies and only a partial last sliver is packed;</item>
/// <item>the micro-kernel keeps the MR×NR tile of C in registers (AVX-512: 12×32, AVX2+FMA: 6×16,
/// portable Vector128: 4×8) and applies beta/bias on the first K panel only (later panels accumulate),
/// so beta = 0 never reads C. Edge tiles go through a small scratch tile.</item>
/// </list>
/// Small M takes a direct path without packing A: M ≤ 4 (decoding one token) for any transposes, and M ≤ 20
/// (a decoded block of a few sequences) for A·Bᵀ, the layout of the linear layers.
/// Transposes are absorbed by the packing routines, which read every operand along its rows (B as it lies and
/// A transposed are dealt row by row to the slivers; B transposed and A as it lies go through 4×4 transposes).
/// <para>Batch-invariant on request (<c>batchInvariant</c>): every C[i, j] then comes out of the same floating-point
/// operations whatever M, the path, the tile or the thread that computes row i — the K panels depend on K alone
/// (<see cref="KcStep"/>), within a panel the sum over k runs in order, one vector lane per column, from zero (fused
/// multiply-adds, or multiply then add for the portable kernel), and each panel's sum meets bias and C in one
/// epilogue. Row i of a product is thus the same bits in a batch of any size (a serving scheduler relies on it);
/// only the kernel kind changes the rounding. The packed path is invariant either way; by default products of at most
/// 8 rows with Bᵀ, and of one row, take another order instead (dot products along k, or no K panels), up to twice as
/// fast there (they read Bᵀ as it lies, where the invariant order must transpose it), so a row of a small product
/// may differ in its last bits from the same row in a large one.</para>
/// </summary>
public static unsafe partial class CpuGemm
{
    /// <summary>Rows up to which the unpacked small-M path is used, for any transposes.</summary>
    public const int SmallM = 4;
    /// <summary>Rows up to which A·Bᵀ (A not transposed), the layout of the linear layers, takes the unpacked path.</summary>
    public const int SmallTransBM = 20;
    /// <summary>Rows up to which the default (not batch-invariant) small path takes dot products along k for Bᵀ.</summary>
    const int DotPathMaxM = 8;

    readonly struct KernelInfo(GemmKernel kind, int mr, int nr, int kc, int mc, int nc,
        delegate*<int, float*, nint, float*, float*, nint, float, float*, void> fn,
        delegate*<int, float*, float*, float*, float*, float*, float*, float*, void> rows)
    {
        public readonly GemmKernel Kind = kind;
        public readonly int MR = mr, NR = nr, KC = kc, MC = mc, NC = nc;
        /// <summary>The micro-kernel: an MR×NR tile from A (packed, or transposed where it lies) and packed B.</summary>
        public readonly delegate*<int, float*, nint, float*, float*, nint, float, float*, void> Fn = fn;
        /// <summary>The small-M path's kernel: 4 rows of A as they lie × a packed B sliver of NR, same arithmetic.</summary>
        public readonly delegate*<int, float*, float*, float*, float*, float*, float*, float*, void> Rows = rows;
    }

    static KernelInfo Info(GemmKernel kind) => kind switch
    {
        // KC·NR·4 bytes of B sliver sit in L1 (48 KiB on Zen 5); MC·KC·4 of packed A in L2; KC·NC·4 of packed B in L3.
        GemmKernel.Avx512 => new(kind, 12, 32, 256, 288, 4096, &Kernel512, &Rows512),
        GemmKernel.Avx2 => new(kind, 6, 16, 256, 144, 4096, &Kernel256, &Rows256),
        _ => new(GemmKernel.Portable, 4, 8, 256, 128, 2048, &Kernel128, &Rows128),
    };

    /// <summary>The kernel Auto resolves to on this CPU.</summary>
    public static GemmKernel Best { get; } =
        Avx512F.IsSupported && Vector512.IsHardwareAccelerated ? GemmKernel.Avx512
        : Fma.IsSupported && Avx2.IsSupported ? GemmKernel.Avx2
        : GemmKernel.Portable;

    /// <summary>Whether this CPU can run a given kernel.</summary>
    public static bool IsSupported(GemmKernel kind) => kind switch
    {
        GemmKernel.Avx512 => Avx512F.IsSupported,
        GemmKernel.Avx2 => Fma.IsSupported && Avx2.IsSupported,
        _ => true,
    };

    /// <summary>
    /// C = alpha·op(A)·op(B) + beta·C (+ bias[n] on every row), row-major, batched with element strides
    /// (same semantics as <see cref="IBackend.Gemm"/>). op(A) is M×K: A[m*lda+k], or A[k*lda+m] when transA;
    /// op(B) is K×N: B[k*ldb+n], or B[n*ldb+k] when transB. An empty bias means none. beta = 0 never reads C.
    /// </summary>
    /// <param name="maxThreads">0: all processors.</param>
    /// <param name="allowSmallPath">false forces the packed path even for tiny M (tests).</param>
    /// <param name="batchInvariant">true: a row's result does not depend on M (see the class notes); slower for small M.</param>
    public static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc,
        ReadOnlySpan<float> bias = default, int batch = 1, long strideA = 0, long strideB = 0, long strideC = 0,
        GemmKernel kernel = GemmKernel.Auto, int maxThreads = 0, bool allowSmallPath = true, bool batchInvariant = false)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(m);
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        ArgumentOutOfRangeException.ThrowIfNegative(batch);
        if (m == 0 || n == 0 || batch == 0) return;
        if (kernel == GemmKernel.Auto) kernel = Best;
        if (!IsSupported(kernel)) throw new PlatformNotSupportedException($"GEMM kernel {kernel} is not supported on this CPU");
        if (ldc < n) throw new ArgumentException($"ldc {ldc} < n {n}");
        if (k > 0)
        {
            if (lda < (transA ? m : k)) throw new ArgumentException($"lda {lda} too small for {(transA ? "transposed " : "")}A ({m}×{k})");
            if (ldb < (transB ? k : n)) throw new ArgumentException($"ldb {ldb} too small for {(transB ? "transposed " : "")}B ({k}×{n})");
        }
        long extA = k == 0 ? 0 : transA ? (long)(k - 1) * lda + m : (long)(m - 1) * lda + k;
        long extB = k == 0 ? 0 : transB ? (long)(n - 1) * ldb + k : (long)(k - 1) * ldb + n;
        long extC = (long)(m - 1) * ldc + n;
        Check("A", a.Length, extA, strideA, batch);
        Check("B", b.Length, extB, strideB, batch);
        Check("C", c.Length, extC, strideC, batch);
        if (!bias.IsEmpty && bias.Length < n) throw new ArgumentException($"bias has {bias.Length} elements, needs {n}");

        int threads = maxThreads > 0 ? Math.Min(maxThreads, Environment.ProcessorCount) : Environment.ProcessorCount;
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* pc = c) fixed (float* pbias = bias)
        {
            var g = new Problem
            {
                TransA = transA, TransB = transB, M = m, N = n, K = k, Alpha = alpha, A = pa, Lda = lda, B = pb, Ldb = ldb,
                Beta = beta, C = pc, Ldc = ldc, Bias = bias.IsEmpty ? null : pbias, Info = Info(kernel),
                Threads = threads, AllowSmall = allowSmallPath, Invariant = batchInvariant,
            };
            double flops = 2.0 * m * n * Math.Max(k, 1);
            if (batch > 1 && threads > 1 && flops < 8e6)
            {
                // Many small products: one per worker, each single-threaded.
                var template = g;
                template.Threads = 1;
                Parallel.For(0, batch, new ParallelOptions { MaxDegreeOfParallelism = threads }, p =>
                {
                    var q = template;
                    q.A += p * strideA; q.B += p * strideB; q.C += p * strideC;
                    Run(q);
                });
            }
            else
            {
                for (int p = 0; p < batch; p++)
                {
                    var q = g;
                    q.A += p * strideA; q.B += p * strideB; q.C += p * strideC;
                    Run(q);
                }
            }
        }
    }

    static void Check(string name, int length, long extent, long stride, int batch)
    {
        if (stride < 0) throw new ArgumentException($"stride of {name} is negative");
        long need = extent + (batch - 1) * stride;
        if (need > length) throw new ArgumentException($"{name} needs {need} elements from its offset, has {length}");
    }

    /// <summary>One (unbatched) product; pointers are already offset and pinned by the caller.</summary>
    struct Problem
    {
        public bool TransA, TransB, AllowSmall, Invariant;
        public int M, N, K, Threads;
        public float Alpha, Beta;
        public float* A, B, C, Bias;
        public nint Lda, Ldb, Ldc;
        public KernelInfo Info;
    }

    static void Run(in Problem g)
    {
        if (g.K == 0 || g.Alpha == 0) { ScaleOnly(g); return; }
        if (g.AllowSmall && (g.M <= SmallM || (g.M <= SmallTransBM && g.TransB && !g.TransA)))
        {
            // measured (bench gemm-invariant-quick): the row kernels win once enough rows share the transposition of
            // a sliver of Bᵀ, and for B as it lies from two rows on
            if (g.Invariant || !(g.M == 1 || (g.TransB && g.M <= DotPathMaxM))) RowsPath(g);
            else DotPath(g);
            return;
        }
        Blocked(g);
    }

    /// <summary>C = beta·C + bias (the product vanishes).</summary>
    static void ScaleOnly(in Problem g)
    {
        for (int i = 0; i < g.M; i++)
        {
            float* c = g.C + i * g.Ldc;
            for (int j = 0; j < g.N; j++)
                c[j] = (g.Beta == 0 ? 0f : g.Beta * c[j]) + (g.Bias != null ? g.Bias[j] : 0f);
        }
    }

    /// <summary>
    /// c = s (beta = 0), s + c (beta = 1) or beta·c + s, s being a panel's sum plus the bias: the micro-kernels'
    /// epilogue element by element (fused multiply-add where they fuse it), for tiles they do not write themselves.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store(float* c, float* s, int count, float beta, bool fused)
    {
        if (beta == 0) for (int j = 0; j < count; j++) c[j] = s[j];
        else if (beta == 1) for (int j = 0; j < count; j++) c[j] = s[j] + c[j];
        else if (fused) for (int j = 0; j < count; j++) c[j] = MathF.FusedMultiplyAdd(beta, c[j], s[j]);
        else for (int j = 0; j < count; j++) c[j] = beta * c[j] + s[j];
    }

    /// <summary>Size of the K panels: balanced, so that k = 260 gives two panels of 130, not 256 + 4. Depends on k alone.</summary>
    static int KcStep(int k, int kc) => CeilDiv(k, CeilDiv(k, kc));

    /// <summary>
    /// Copies op(B)[pc .. pc+kc, j0 .. j0+width) into d as [kc][width], columns past N zeroed; transposes when B is.
    /// </summary>
    static void PackSliver(in Problem g, float* d, int j0, int pc, int kc, int width)
    {
        int cols = Math.Min(width, g.N - j0);
        if (!g.TransB)
        {
            float* src = g.B + pc * g.Ldb + j0;
            if (cols == width)
                for (int p = 0; p < kc; p++, src += g.Ldb)
                    Buffer.MemoryCopy(src, d + p * width, width * sizeof(float), width * sizeof(float));
            else
                for (int p = 0; p < kc; p++, src += g.Ldb)
                {
                    float* dp = d + p * width;
                    int c = 0;
                    for (; c < cols; c++) dp[c] = src[c];
                    for (; c < width; c++) dp[c] = 0;
                }
            return;
        }
        // op(B)[p, j] = B[j*ldb + p]: read each column of op(B) contiguously, write with stride width.
        int c4 = 0;
        for (; c4 + 4 <= cols; c4 += 4)
        {
            float* s0p = g.B + (j0 + c4) * g.Ldb + pc;
            int p = 0;
            for (; p + 4 <= kc; p += 4) Transpose4x4(s0p + p, g.Ldb, d + p * width + c4, width, 1f);
            float* s1p = s0p + g.Ldb, s2p = s1p + g.Ldb, s3p = s2p + g.Ldb;
            for (float* dp = d + p * width + c4; p < kc; p++, dp += width)
            {
                dp[0] = s0p[p]; dp[1] = s1p[p]; dp[2] = s2p[p]; dp[3] = s3p[p];
            }
        }
        for (; c4 < cols; c4++)
        {
            float* sp = g.B + (j0 + c4) * g.Ldb + pc;
            float* dp = d + c4;
            for (int p = 0; p < kc; p++, dp += width) *dp = sp[p];
        }
        if (cols < width)
            for (int p = 0; p < kc; p++)
                new Span<float>(d + p * width + cols, width - cols).Clear();
    }

    // ------------------------------------------------------------------ packed, blocked path

    static int CeilDiv(int a, int b) => (a + b - 1) / b;
    static int RoundUp(int a, int b) => CeilDiv(a, b) * b;

    static void Blocked(Problem g)
    {
        var ki = g.Info;
        int m = g.M, n = g.N, k = g.K, MR = ki.MR, NR = ki.NR;
        int threads = 2.0 * m * n * k < 2e6 ? 1 : g.Threads;

        int kcStep = KcStep(k, ki.KC);
        int ncStep = RoundUp(CeilDiv(n, CeilDiv(n, ki.NC)), NR);
        int mSlivers = CeilDiv(m, MR);
        // Blocks of at most MC rows; with several threads, aim at ~4 blocks per thread (of at least ~96 rows)
        // so that the dynamic scheduling of Parallel.For can even out a core that is busy with something else.
        int mBlocks = CeilDiv(m, ki.MC);
        if (threads > 1) mBlocks = Math.Max(mBlocks, Math.Min(4 * threads, m / 96));
        if (threads > 1 && mBlocks % threads != 0 && mSlivers >= threads) mBlocks = RoundUp(mBlocks, threads);
        int mcStep = RoundUp(CeilDiv(m, mBlocks), MR);
        mBlocks = CeilDiv(m, mcStep);

        float[] bArr = ArrayPool<float>.Shared.Rent(kcStep * ncStep + 16);
        try
        {
            fixed (float* bRaw = bArr)
            {
                var job = new BlockJob
                {
                    G = g, BPack = Align64(bRaw), McStep = mcStep, MBlocks = mBlocks,
                };
                for (int jc = 0; jc < n; jc += ncStep)
                {
                    int nc = Math.Min(ncStep, n - jc);
                    int nSlivers = CeilDiv(nc, NR);
                    int nChunks = threads > 1 && mBlocks < threads ? Math.Min(nSlivers, CeilDiv(threads, mBlocks)) : 1;
                    for (int pc = 0; pc < k; pc += kcStep)
                    {
                        int kc = Math.Min(kcStep, k - pc);
                        job.Jc = jc; job.Nc = nc; job.Pc = pc; job.Kc = kc; job.NSlivers = nSlivers; job.NChunks = nChunks;
                        // Pack this K×N panel of op(B).
                        int packers = threads > 1 && (long)kc * nc >= 32768 ? Math.Min(threads, nSlivers) : 1;
                        if (packers == 1) job.PackB(0, nSlivers);
                        else Parallel.For(0, packers, w => job.PackB(nSlivers * w / packers, nSlivers * (w + 1) / packers));
                        int tasks = mBlocks * nChunks;
                        if (threads == 1 || tasks == 1) for (int t = 0; t < tasks; t++) job.Compute(t);
                        else Parallel.For(0, tasks, new ParallelOptions { MaxDegreeOfParallelism = threads }, job.Compute);
                    }
                }
            }
        }
        finally { ArrayPool<float>.Shared.Return(bArr); }
    }

    /// <summary>dst[c*dstStride + r] = scale·src[r*srcStride + c] for r, c &lt; 4.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Transpose4x4(float* src, nint srcStride, float* dst, nint dstStride, float scale)
    {
        if (Sse.IsSupported)
        {
            var r0 = Sse.LoadVector128(src); var r1 = Sse.LoadVector128(src + srcStride);
            var r2 = Sse.LoadVector128(src + 2 * srcStride); var r3 = Sse.LoadVector128(src + 3 * srcStride);
            var t0 = Sse.UnpackLow(r0, r1);   // a0 b0 a1 b1
            var t1 = Sse.UnpackLow(r2, r3);   // c0 d0 c1 d1
            var t2 = Sse.UnpackHigh(r0, r1);  // a2 b2 a3 b3
            var t3 = Sse.UnpackHigh(r2, r3);  // c2 d2 c3 d3
            var o0 = Sse.MoveLowToHigh(t0, t1);
            var o1 = Sse.MoveHighToLow(t1, t0);
            var o2 = Sse.MoveLowToHigh(t2, t3);
            var o3 = Sse.MoveHighToLow(t3, t2);
            if (scale != 1f)
            {
                var sv = Vector128.Create(scale);
                o0 *= sv; o1 *= sv; o2 *= sv; o3 *= sv;
            }
            Sse.Store(dst, o0); Sse.Store(dst + dstStride, o1); Sse.Store(dst + 2 * dstStride, o2); Sse.Store(dst + 3 * dstStride, o3);
        }
        else
        {
            for (int r = 0; r < 4; r++)
                for (int c = 0; c < 4; c++) dst[c * dstStride + r] = scale * src[r * srcStride + c];
        }
    }

    static float* Align64(float* p) => (float*)(((nint)p + 63) & ~(nint)63);

    sealed class BlockJob
    {
        public Problem G;
        public float* BPack;
        public int McStep, MBlocks, Jc, Nc, Pc, Kc, NSlivers, NChunks;

        /// <summary>Packs B slivers [s0, s1) of the current panel: sliver s holds [kc][NR] of op(B), zero-padded.</summary>
        public void PackB(int s0, int s1)
        {
            int NR = G.Info.NR;
            if (!G.TransB)
            {
                PackRowsOfB(s0, s1);
                return;
            }
            for (int s = s0; s < s1; s++) PackSliver(G, BPack + (long)s * Kc * NR, Jc + s * NR, Pc, Kc, NR);
        }

        /// <summary>
        /// <see cref="PackB"/> for B as it lies: row p of the panel holds the slivers' NR-wide pieces side by side, so it
        /// is read once, in order, and dealt out to the slivers (sliver by sliver would walk all kc rows, ldb apart,
        /// once per sliver: a new page every 128 bytes when B is wide).
        /// </summary>
        void PackRowsOfB(int s0, int s1)
        {
            int NR = G.Info.NR, kc = Kc;
            int cols = Math.Min(s1 * NR, Nc) - s0 * NR;  // columns of op(B) these slivers hold
            int full = cols / NR;                        // slivers without padding
            float* src = G.B + Pc * G.Ldb + Jc + s0 * NR;
            float* dst = BPack + (long)s0 * kc * NR;
            for (int p = 0; p < kc; p++, src += G.Ldb)
            {
                float* dp = dst + p * NR;
                for (int u = 0; u < full; u++, dp += (long)kc * NR)
                    Buffer.MemoryCopy(src + u * NR, dp, NR * sizeof(float), NR * sizeof(float));
                if (full < s1 - s0)
                {
                    int c = 0, rest = cols - full * NR;
                    for (; c < rest; c++) dp[c] = src[full * NR + c];
                    for (; c < NR; c++) dp[c] = 0;
                }
            }
        }

        /// <summary>Packs rows [i0, i0+mc) × the current K panel of alpha·op(A) into MR-tall slivers [kc][MR].</summary>
        void PackA(float* dst, int i0, int mc)
        {
            int MR = G.Info.MR, kc = Kc;
            float alpha = G.Alpha;
            if (G.TransA)
            {
                // op(A)[i, p] = A[p*lda + i]: row p of A holds the block's mc values contiguously. Read it once, in
                // order, and deal MR values to each sliver: A's rows lie lda apart (dLogits of the vocabulary head:
                // 200 KB), so going sliver by sliver down the rows would touch a new page for every 48 bytes.
                int full = mc / MR * MR;
                float* src = G.A + Pc * G.Lda + i0;
                for (int p = 0; p < kc; p++, src += G.Lda)
                {
                    float* dp = dst + p * MR;
                    for (int ir = 0; ir < full; ir += MR, dp += (long)MR * kc)
                    {
                        int r = 0;
                        for (; r + 8 <= MR; r += 8) Vector256.Store(Vector256.Load(src + ir + r) * alpha, dp + r);
                        for (; r + 4 <= MR; r += 4) Vector128.Store(Vector128.Load(src + ir + r) * alpha, dp + r);
                        for (; r < MR; r++) dp[r] = alpha * src[ir + r];
                    }
                    if (full < mc)
                    {
                        int r = 0;
                        for (; r < mc - full; r++) dp[r] = alpha * src[full + r];
                        for (; r < MR; r++) dp[r] = 0;
                    }
                }
                return;
            }
            for (int ir = 0; ir < mc; ir += MR)
            {
                int rows = Math.Min(MR, mc - ir);
                float* d = dst + (long)ir * kc;
                // op(A)[i, p] = A[i*lda + p]: read rows contiguously, write with stride MR.
                int r = 0;
                for (; r + 4 <= rows; r += 4)
                {
                    // 4×4 transposes, scalar for the last kc % 4 columns.
                    float* src = G.A + (i0 + ir + r) * G.Lda + Pc;
                    int p = 0;
                    for (; p + 4 <= kc; p += 4) Transpose4x4(src + p, G.Lda, d + p * MR + r, MR, alpha);
                    for (; p < kc; p++)
                        for (int q = 0; q < 4; q++) d[p * MR + r + q] = alpha * src[q * G.Lda + p];
                }
                for (; r < rows; r++)
                {
                    float* src = G.A + (i0 + ir + r) * G.Lda + Pc;
                    float* dp = d + r;
                    if (alpha == 1) for (int p = 0; p < kc; p++, dp += MR) *dp = src[p];
                    else for (int p = 0; p < kc; p++, dp += MR) *dp = alpha * src[p];
                }
                for (r = rows; r < MR; r++)
                {
                    float* dp = d + r;
                    for (int p = 0; p < kc; p++, dp += MR) *dp = 0;
                }
            }
        }

        /// <summary>Work item t: one M block against one range of B slivers of the current panel.</summary>
        public void Compute(int t)
        {
            var ki = G.Info;
            int MR = ki.MR, NR = ki.NR, kc = Kc;
            int ib = t / NChunks, ch = t % NChunks;
            int i0 = ib * McStep, mc = Math.Min(McStep, G.M - i0);
            int s0 = NSlivers * ch / NChunks, s1 = NSlivers * (ch + 1) / NChunks;
            bool first = Pc == 0;
            float beta = first ? G.Beta : 1f;
            float* tile = stackalloc float[MR * NR + 16];
            tile = Align64(tile);
            float* edgeBias = stackalloc float[NR];
            bool fused = ki.Kind != GemmKernel.Portable;
            float[] aArr = ArrayPool<float>.Shared.Rent(RoundUp(mc, MR) * kc + 16);
            try
            {
                fixed (float* aRaw = aArr)
                {
                    float* apack = Align64(aRaw);
                    // Transposed A unscaled is read where it lies: row p of A holds a sliver's MR values side by side,
                    // which is what the kernel reads at each step (lda apart instead of MR), so only a partial last
                    // sliver is packed. The products are the packed path's (alpha = 1 packs exact copies).
                    int direct = G.TransA && G.Alpha == 1f ? mc / MR * MR : 0;
                    if (direct < mc) PackA(apack, i0 + direct, mc - direct);
                    for (int s = s0; s < s1; s++)
                    {
                        int j = Jc + s * NR, nr = Math.Min(NR, G.N - j);
                        float* bp = BPack + (long)s * kc * NR;
                        float* bias = first && G.Bias != null ? G.Bias + j : null;
                        if (bias != null && nr < NR)
                            for (int q = 0; q < NR; q++) edgeBias[q] = q < nr ? bias[q] : 0f;
                        for (int ir = 0; ir < mc; ir += MR)
                        {
                            int i = i0 + ir, mr = Math.Min(MR, mc - ir);
                            float* ap = ir < direct ? G.A + Pc * G.Lda + i : apack + (long)(ir - direct) * kc;
                            nint aStep = ir < direct ? G.Lda : MR;
                            float* c = G.C + i * G.Ldc + j;
                            if (mr == MR && nr == NR) ki.Fn(kc, ap, aStep, bp, c, G.Ldc, beta, bias);
                            else
                            {
                                // the kernel's sums plus bias into a scratch tile, then its epilogue on the valid part
                                ki.Fn(kc, ap, aStep, bp, tile, NR, 0f, bias == null ? null : nr < NR ? edgeBias : bias);
                                for (int r = 0; r < mr; r++) Store(c + r * G.Ldc, tile + r * NR, nr, beta, fused);
                            }
                        }
                    }
                }
            }
            finally { ArrayPool<float>.Shared.Return(aArr); }
        }
    }
}
