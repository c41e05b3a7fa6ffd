using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>The CPU GEMM against a float64 naive reference: shapes × transposes × alpha/beta/bias × kernels × batch.</summary>
public class GemmTests
{
    // (m, n, k): tiny, awkward (not multiples of any register tile), small-M path, more than one K panel
    // (KC = 256), more than one M block, more than one N panel (NC = 4096 for AVX, 2048 portable).
    public static readonly TheoryData<int, int, int> Shapes = new()
    {
        { 1, 1, 1 }, { 1, 3, 17 }, { 3, 1, 5 }, { 3, 17, 65 }, { 17, 3, 1 }, { 1, 260, 256 }, { 4, 33, 300 },
        { 5, 65, 17 }, { 13, 31, 7 }, { 65, 17, 3 }, { 12, 32, 256 }, { 24, 64, 512 }, { 100, 97, 513 },
        { 130, 260, 256 }, { 301, 70, 40 }, { 37, 129, 257 }, { 7, 2100, 3 }, { 19, 70, 301 }, { 20, 530, 131 },
    };

    static IEnumerable<GemmKernel> Kernels() =>
        new[] { GemmKernel.Avx512, GemmKernel.Avx2, GemmKernel.Portable }.Where(CpuGemm.IsSupported);

    static float[] Random(Random rng, int n, float scale = 1f)
    {
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (rng.NextSingle() * 2 - 1) * scale;
        return x;
    }

    /// <summary>Float64 reference of the result and of the magnitude Σ|terms| that bounds its rounding error.</summary>
    static (double[] Value, double[] Scale) Reference(bool ta, bool tb, int m, int n, int k, float alpha, float[] a, int aOff, int lda,
        float[] b, int bOff, int ldb, float beta, float[] c, int cOff, int ldc, float[]? bias)
    {
        var v = new double[m * n]; var s = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double acc = 0, mag = 0;
                for (int p = 0; p < k; p++)
                {
                    double x = a[aOff + (ta ? p * lda + i : i * lda + p)], y = b[bOff + (tb ? j * ldb + p : p * ldb + j)];
                    acc += x * y; mag += Math.Abs(x * y);
                }
                double r = alpha * acc, sc = Math.Abs(alpha) * mag;
                if (beta != 0) { r += beta * (double)c[cOff + i * ldc + j]; sc += Math.Abs(beta * (double)c[cOff + i * ldc + j]); }
                if (bias != null) { r += bias[j]; sc += Math.Abs(bias[j]); }
                v[i * n + j] = r; s[i * n + j] = sc;
            }
        return (v, s);
    }

    static void AssertClose(double[] want, double[] scale, float[] got, int off, int ldc, int m, int n, string what)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double g = got[off + i * ldc + j], w = want[i * n + j];
                double tol = 3e-6 * scale[i * n + j] + 1e-30;
                if (!(Math.Abs(g - w) <= tol))
                    Assert.Fail($"{what}: C[{i},{j}] = {g}, want {w} (|err| {Math.Abs(g - w):E2} > tol {tol:E2})");
            }
    }

    static void Run(int m, int n, int k, bool ta, bool tb, float alpha, float beta, bool withBias, GemmKernel kernel,
        bool allowSmall, int maxThreads, int seed, bool invariant = false)
    {
        var rng = new Random(seed);
        int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 2, ldc = n + 5;
        int aRows = ta ? k : m, bRows = tb ? n : k;
        var a = Random(rng, Math.Max(1, aRows * lda));
        var b = Random(rng, Math.Max(1, bRows * ldb));
        var c = Random(rng, m * ldc);
        if (beta == 0) Array.Fill(c, float.NaN); // beta = 0 must not read C
        var c0 = (float[])c.Clone();
        float[]? bias = withBias ? Random(rng, n) : null;
        var (want, scale) = Reference(ta, tb, m, n, k, alpha, a, 0, lda, b, 0, ldb, beta, c, 0, ldc, bias);
        CpuGemm.Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias, kernel: kernel, maxThreads: maxThreads,
            allowSmallPath: allowSmall, batchInvariant: invariant);
        string what = $"m={m} n={n} k={k} tA={ta} tB={tb} alpha={alpha} beta={beta} bias={withBias} {kernel} small={allowSmall} threads={maxThreads} invariant={invariant}";
        AssertClose(want, scale, c, 0, ldc, m, n, what);
        // Padding columns of C between rows stay untouched.
        for (int i = 0; i < m; i++)
            for (int j = n; j < ldc; j++)
                Assert.True(c0[i * ldc + j].Equals(c[i * ldc + j]), $"{what}: padding C[{i},{j}] was written");
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void MatchesReference_AllTransposes_AllKernels(int m, int n, int k)
    {
        int seed = m * 1000003 + n * 1009 + k;
        foreach (var kernel in Kernels())
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                {
                    Run(m, n, k, ta, tb, 1f, 0f, false, kernel, allowSmall: true, maxThreads: 0, seed++);
                    Run(m, n, k, ta, tb, -0.75f, 0.5f, true, kernel, allowSmall: true, maxThreads: 0, seed++);
                    Run(m, n, k, ta, tb, 1.5f, 1f, false, kernel, allowSmall: false, maxThreads: 0, seed++);
                    Run(m, n, k, ta, tb, 2f, 0f, true, kernel, allowSmall: false, maxThreads: 1, seed++);
                    Run(m, n, k, ta, tb, -0.75f, 0.5f, true, kernel, allowSmall: true, maxThreads: 0, seed++, invariant: true);
                    Run(m, n, k, ta, tb, 1f, 1f, false, kernel, allowSmall: true, maxThreads: 1, seed++, invariant: true);
                }
    }

    [Fact]
    public void MultipleNPanels_PackedPath()
    {
        // n > NC = 4096 splits the N dimension into panels (and 3·260 > 256 gives two K panels).
        foreach (var kernel in Kernels())
        {
            Run(13, 4200, 300, false, true, 1f, 0.25f, true, kernel, allowSmall: false, maxThreads: 0, seed: 7);
            Run(2, 4200, 5, true, false, 1f, 0f, true, kernel, allowSmall: true, maxThreads: 0, seed: 8);
        }
    }

    [Fact]
    public void VocabularyHeadShapes_PackedPath()
    {
        // The head's N = 50,258 (GPT-2 + MASK): 13 N panels, the last sliver 18 columns wide; its dW (op(A) = dLogitsᵀ,
        // lda = 50,258 + 3, M blocks ending in a partial sliver) and dX (K = 50,258: 197 K panels accumulating).
        // Small other sides keep the float64 reference cheap.
        foreach (var kernel in Kernels())
        {
            Run(14, 50258, 9, false, true, 1f, 0f, true, kernel, allowSmall: false, maxThreads: 0, seed: 11);    // y = x·Wᵀ + b
            Run(50258, 9, 14, true, false, 1f, 1f, false, kernel, allowSmall: false, maxThreads: 0, seed: 12);   // dW += dyᵀ·x
            Run(14, 9, 50258, false, false, 1f, 0f, false, kernel, allowSmall: false, maxThreads: 0, seed: 13);  // dx = dy·W
        }
    }

    [Fact]
    public void RowWisePacking_PartialSliversAcrossPanelsAndPackers()
    {
        // B as it lies is packed row by row into several slivers at once, split between two packers: N panels of
        // 2112 and 2105 columns (the last sliver 25 wide), kc = 131 (not a multiple of 4); A transposed likewise, with
        // 1000 rows (M blocks ending in a partial sliver) and alpha ≠ 1.
        foreach (var kernel in Kernels())
        {
            Run(37, 4217, 131, false, false, 1f, 0.5f, true, kernel, allowSmall: false, maxThreads: 0, seed: 21);
            Run(37, 4217, 131, true, false, -0.5f, 0f, false, kernel, allowSmall: false, maxThreads: 2, seed: 22);
            Run(1000, 37, 45, true, false, 1.5f, 1f, true, kernel, allowSmall: false, maxThreads: 0, seed: 23);
            Run(1000, 37, 45, true, true, 1f, 0f, false, kernel, allowSmall: false, maxThreads: 1, seed: 24);
        }
    }

    [Theory]
    [InlineData(0f, 0f)]
    [InlineData(0f, 2f)]
    [InlineData(1f, 0.5f)]
    public void DegenerateProduct_IsBetaCPlusBias(float alpha, float beta)
    {
        // k = 0 or alpha = 0: C = beta·C + bias, and beta = 0 ignores NaN in C.
        foreach (int k in new[] { 0, 9 })
        {
            if (k != 0 && alpha != 0) continue;
            var rng = new Random(3);
            int m = 5, n = 7;
            var a = Random(rng, Math.Max(1, m * k)); var b = Random(rng, Math.Max(1, k * n));
            var c = Random(rng, m * n); if (beta == 0) Array.Fill(c, float.NaN);
            var bias = Random(rng, n);
            var (want, scale) = Reference(false, false, m, n, k, alpha, a, 0, Math.Max(k, 1), b, 0, n, beta, c, 0, n, bias);
            CpuGemm.Sgemm(false, false, m, n, k, alpha, a, Math.Max(k, 1), b, n, beta, c, n, bias);
            AssertClose(want, scale, c, 0, n, m, n, $"k={k} alpha={alpha} beta={beta}");
        }
    }

    [Theory]
    [InlineData(3, 5, 7, 9, false, false)]      // many tiny products: parallel over the batch
    [InlineData(4, 1, 64, 32, true, false)]     // small-M path per batch item
    [InlineData(2, 33, 70, 65, false, true)]
    [InlineData(2, 170, 160, 170, true, true)]  // large enough to parallelise inside each product
    public void Batched_ThroughBackend(int batch, int m, int n, int k, bool ta, bool tb)
    {
        var be = new CpuBackend();
        var rng = new Random(batch * 31 + m);
        int lda = ta ? m : k, ldb = tb ? k : n, ldc = n;
        long strideA = (long)(ta ? k : m) * lda + 11, strideB = (long)(tb ? n : k) * ldb + 3, strideC = (long)m * ldc + 4;
        int offA = 5, offB = 2, offC = 6;
        var a = Random(rng, offA + (int)(strideA * batch));
        var b = Random(rng, offB + (int)(strideB * batch));
        var c = Random(rng, offC + (int)(strideC * batch));
        var bias = Random(rng, n + 1);
        var va = be.AllocFloat(a.Length); var vb = be.AllocFloat(b.Length); var vc = be.AllocFloat(c.Length); var vbias = be.AllocFloat(bias.Length);
        be.Upload(va, a); be.Upload(vb, b); be.Upload(vc, c); be.Upload(vbias, bias);
        float alpha = 0.5f, beta = -1.25f;
        be.Gemm(ta, tb, m, n, k, alpha, va.Slice(offA), lda, vb.Slice(offB), ldb, beta, vc.Slice(offC), ldc,
            vbias.Slice(1, n), batch, strideA, strideB, strideC);
        var got = new float[c.Length]; be.Download(vc, got);
        var biasN = bias[1..(n + 1)];
        for (int p = 0; p < batch; p++)
        {
            var (want, scale) = Reference(ta, tb, m, n, k, alpha, a, offA + (int)(p * strideA), lda, b, offB + (int)(p * strideB), ldb,
                beta, c, offC + (int)(p * strideC), ldc, biasN);
            AssertClose(want, scale, got, offC + (int)(p * strideC), ldc, m, n, $"batch item {p}");
        }
        // The gaps between batch items of C are untouched.
        for (int p = 0; p < batch; p++)
            for (int q = 0; q < 4; q++)
            {
                int idx = offC + (int)(p * strideC) + m * ldc + q;
                if (idx < c.Length) Assert.Equal(c[idx], got[idx]);
            }
        Assert.Equal(c[..offC], got[..offC]);
    }

    [Fact]
    public void PoisonedC_BetaZero_ThroughBackend_AllShapesOfTheEngine()
    {
        // Shapes the engine uses: tokens × width × width, vocabulary head, single-token decode.
        var be = new CpuBackend();
        foreach (var (m, n, k, tb) in new[] { (256, 768, 256, true), (64, 260, 256, true), (1, 768, 256, true), (1, 260, 256, false), (2, 1024, 256, false) })
        {
            var rng = new Random(m + n);
            var a = Random(rng, m * k); var b = Random(rng, k * n); var bias = Random(rng, n);
            var va = be.AllocFloat(a.Length); var vb = be.AllocFloat(b.Length); var vc = be.AllocFloat(m * n); var vbias = be.AllocFloat(n);
            be.Upload(va, a); be.Upload(vb, b); be.Upload(vbias, bias); be.Fill(vc, float.NaN);
            be.Gemm(false, tb, m, n, k, 1f, va, k, vb, tb ? k : n, 0f, vc, n, vbias);
            var got = new float[m * n]; be.Download(vc, got);
            var (want, scale) = Reference(false, tb, m, n, k, 1f, a, 0, k, b, 0, tb ? k : n, 0f, got, 0, n, bias);
            AssertClose(want, scale, got, 0, n, m, n, $"m={m} n={n} k={k} tB={tb}");
        }
    }

    [Fact]
    public void RejectsBuffersTooSmall()
    {
        var a = new float[10]; var b = new float[10]; var c = new float[10];
        Assert.Throws<ArgumentException>(() => CpuGemm.Sgemm(false, false, 4, 4, 4, 1f, a, 4, b, 4, 0f, c, 4));
        Assert.Throws<ArgumentException>(() => CpuGemm.Sgemm(false, false, 2, 2, 2, 1f, a, 1, b, 2, 0f, c, 2));
    }
}
