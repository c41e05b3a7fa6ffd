using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>
/// The CPU GEMM is batch-invariant: a row of op(A) gives the same bits of C whatever the number of other rows
/// around it (which decides the small or packed path, the register tile and the thread of that row), so a request
/// served in a batch gets exactly what it gets alone.
/// </summary>
public class GemmBatchInvarianceTests
{
    static readonly int[] RowCounts = [1, 3, 17, 64, 300];

    static IEnumerable<GemmKernel> Kernels() =>
        new[] { GemmKernel.Avx512, GemmKernel.Avx2, GemmKernel.Portable }.Where(CpuGemm.IsSupported);

    static float[] Random(Random rng, int n)
    {
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = rng.NextSingle() * 2 - 1;
        return x;
    }

    /// <summary>
    /// Row <paramref name="at"/> of C for an m-row product whose row <paramref name="at"/> of op(A) is
    /// <paramref name="row"/> (and of C beforehand <paramref name="cRow"/>), the other rows random.
    /// </summary>
    static float[] RowOfProduct(int m, int at, float[] row, float[] cRow, float[] b, bool ta, bool tb, int n, int k,
        float alpha, float beta, float[]? bias, GemmKernel kernel, int threads, Random rng)
    {
        int lda = ta ? m : k, ldb = tb ? k : n, ldc = n;
        var a = Random(rng, Math.Max(1, m * k));
        for (int p = 0; p < k; p++) a[ta ? p * lda + at : at * lda + p] = row[p];
        var c = Random(rng, m * ldc);
        cRow.CopyTo(c, at * ldc);
        CpuGemm.Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias, kernel: kernel, maxThreads: threads, batchInvariant: true);
        return c[(at * ldc)..(at * ldc + n)];
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(17, 5)]
    [InlineData(40, 256)]       // one full K panel (KC = 256)
    [InlineData(77, 300)]       // two K panels, edge tiles along N for every kernel
    [InlineData(260, 513)]      // three K panels; N of the byte vocabulary
    public void ARowGetsTheSameBitsAmongAnyNumberOfRows(int n, int k)
    {
        var rng = new Random(n * 7919 + k);
        foreach (var kernel in Kernels())
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                    foreach (var (alpha, beta, withBias) in new[] { (1f, 0f, true), (0.7f, 1f, false), (-1.3f, 0.35f, true) })
                    {
                        var b = Random(rng, Math.Max(1, k * n));
                        var row = Random(rng, k);
                        var cRow = Random(rng, n);
                        float[]? bias = withBias ? Random(rng, n) : null;
                        var alone = RowOfProduct(1, 0, row, cRow, b, ta, tb, n, k, alpha, beta, bias, kernel, 0, rng);
                        foreach (int m in RowCounts)
                            foreach (int at in new[] { 0, m / 2, m - 1 }.Distinct())
                                foreach (int threads in m >= 64 ? new[] { 1, 0 } : [0])   // one thread or all: other splits of M and N
                                {
                                    var got = RowOfProduct(m, at, row, cRow, b, ta, tb, n, k, alpha, beta, bias, kernel, threads, rng);
                                    for (int j = 0; j < n; j++)
                                        if (BitConverter.SingleToInt32Bits(got[j]) != BitConverter.SingleToInt32Bits(alone[j]))
                                            Assert.Fail($"{kernel} tA={ta} tB={tb} n={n} k={k} alpha={alpha} beta={beta} bias={withBias}: " +
                                                $"row {at} of {m} (threads {threads}) has C[{j}] = {got[j]:R}, alone {alone[j]:R}");
                                }
                    }
    }
}
