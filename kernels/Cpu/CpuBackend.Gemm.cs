namespace FastBlockDiff.Kernels.Cpu;

public sealed partial class CpuBackend
{
    // PLACEHOLDER (being replaced by the cache-blocked, register-tiled GEMM).
    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, FloatView a, int lda, FloatView b, int ldb,
        float beta, FloatView c, int ldc, FloatView? bias = null, int batch = 1, long strideA = 0, long strideB = 0, long strideC = 0)
    {
        var A = Storage(a); var B = Storage(b); var C = Storage(c);
        float[]? bs = bias is { } bv ? Storage(bv) : null; int bo = bias?.Offset ?? 0;
        for (int p = 0; p < batch; p++)
        {
            long ao = a.Offset + p * strideA, bo2 = b.Offset + p * strideB, co = c.Offset + p * strideC;
            Parallel.For(0, m, i =>
            {
                for (int j = 0; j < n; j++)
                {
                    float s = 0;
                    for (int q = 0; q < k; q++)
                        s += A[ao + (transA ? (long)q * lda + i : (long)i * lda + q)] * B[bo2 + (transB ? (long)j * ldb + q : (long)q * ldb + j)];
                    long ci = co + (long)i * ldc + j;
                    C[ci] = alpha * s + (beta == 0 ? 0 : beta * C[ci]) + (bs != null ? bs[bo + j] : 0);
                }
            });
        }
    }
}
