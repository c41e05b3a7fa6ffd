namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    /// <summary>
    /// Batch-invariant GEMM: every row of a product gets the same bits whatever the number of rows (see
    /// <see cref="CpuGemm"/>), at some cost for products of few rows. A serving scheduler turns it on so that a request
    /// batched with others computes exactly what it computes alone; off by default.
    /// </summary>
    public bool BatchInvariantGemm { get; set; }

    /// <summary>Cache-blocked, register-tiled fp32 GEMM; see <see cref="CpuGemm"/>.</summary>
    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, FloatView a, int lda, FloatView b, int ldb,
        float beta, FloatView c, int ldc, FloatView? bias = null, int batch = 1, long strideA = 0, long strideB = 0, long strideC = 0)
    {
        ReadOnlySpan<float> bs = bias is { } bv ? Span(bv) : default;
        CpuGemm.Sgemm(transA, transB, m, n, k, alpha, Span(a), lda, Span(b), ldb, beta, Span(c), ldc, bs,
            batch, strideA, strideB, strideC, batchInvariant: BatchInvariantGemm);
    }
}
