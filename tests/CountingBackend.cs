using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

/// <summary>
/// An IBackend that forwards every op to another backend (the CPU one by default) and remembers every buffer it
/// handed out, so that a test can count the live ones (<see cref="DeviceStorage.IsDisposed"/>).
/// </summary>
sealed class CountingBackend(IBackend? inner = null) : IBackend
{
    public readonly IBackend Inner = inner ?? new CpuBackend();
    public readonly List<DeviceStorage> Allocated = [];
    /// <summary>Buffers allocated through this backend and not yet disposed.</summary>
    public int Live => Allocated.Count(s => !s.IsDisposed);

    FloatView Track(FloatView v) { Allocated.Add(v.Storage); return v; }
    IntView Track(IntView v) { Allocated.Add(v.Storage); return v; }

    public string Name => Inner.Name;
    public string Description => "counting " + Inner.Description;
    public void Dispose() => Inner.Dispose();
    public FloatView AllocFloat(int length) => Track(Inner.AllocFloat(length));
    public IntView AllocInt(int length) => Track(Inner.AllocInt(length));
    public void Upload(FloatView dst, ReadOnlySpan<float> src) => Inner.Upload(dst, src);
    public void Download(FloatView src, Span<float> dst) => Inner.Download(src, dst);
    public void Upload(IntView dst, ReadOnlySpan<int> src) => Inner.Upload(dst, src);
    public void Download(IntView src, Span<int> dst) => Inner.Download(src, dst);
    public void Synchronize() => Inner.Synchronize();
    public void Fill(FloatView x, float value) => Inner.Fill(x, value);
    public void Copy(FloatView dst, FloatView src) => Inner.Copy(dst, src);
    public void CopyRows(FloatView dst, int dstStride, FloatView src, int srcStride, int rows, int cols) => Inner.CopyRows(dst, dstStride, src, srcStride, rows, cols);
    public void Axpy(FloatView y, float alpha, FloatView x) => Inner.Axpy(y, alpha, x);
    public void ScaleShift(FloatView x, float alpha, float beta) => Inner.ScaleShift(x, alpha, beta);
    public void Mul(FloatView dst, FloatView a, FloatView b, bool accumulate) => Inner.Mul(dst, a, b, accumulate);
    public double SumSquares(FloatView x) => Inner.SumSquares(x);
    public double Sum(FloatView x) => Inner.Sum(x);
    public void ColumnSum(FloatView dst, FloatView src, int rows, int cols, bool accumulate) => Inner.ColumnSum(dst, src, rows, cols, accumulate);
    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, FloatView a, int lda, FloatView b, int ldb, float beta, FloatView c, int ldc, FloatView? bias = null, int batch = 1, long strideA = 0, long strideB = 0, long strideC = 0) => Inner.Gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias, batch, strideA, strideB, strideC);
    public void LayerNormForward(FloatView x, FloatView weight, FloatView? bias, FloatView y, FloatView mean, FloatView rstd, int rows, int dim, float eps) => Inner.LayerNormForward(x, weight, bias, y, mean, rstd, rows, dim, eps);
    public void LayerNormBackward(FloatView dy, FloatView x, FloatView weight, FloatView mean, FloatView rstd, FloatView dx, FloatView dWeight, FloatView? dBias, int rows, int dim) => Inner.LayerNormBackward(dy, x, weight, mean, rstd, dx, dWeight, dBias, rows, dim);
    public void GeluForward(FloatView x, FloatView y) => Inner.GeluForward(x, y);
    public void GeluBackward(FloatView x, FloatView dy, FloatView dx) => Inner.GeluBackward(x, dy, dx);
    public void SiluForward(FloatView x, FloatView y) => Inner.SiluForward(x, y);
    public void SiluBackward(FloatView x, FloatView dy, FloatView dx) => Inner.SiluBackward(x, dy, dx);
    public void Rotary(FloatView x, int rows, int rowStride, int heads, int headDim, IntView positions, FloatView cos, FloatView sin, bool inverse) => Inner.Rotary(x, rows, rowStride, heads, headDim, positions, cos, sin, inverse);
    public void EmbeddingForward(IntView ids, FloatView table, FloatView output, int rows, int dim) => Inner.EmbeddingForward(ids, table, output, rows, dim);
    public void EmbeddingBackward(IntView ids, FloatView dOutput, FloatView dTable, int rows, int dim) => Inner.EmbeddingBackward(ids, dOutput, dTable, rows, dim);
    public void ResidualGatedForward(FloatView x, FloatView y, FloatView gate, int rows, int dim, float dropP, ulong seed) => Inner.ResidualGatedForward(x, y, gate, rows, dim, dropP, seed);
    public void ResidualGatedBackward(FloatView dx, FloatView y, FloatView gate, FloatView dy, FloatView dGate, int rows, int dim, float dropP, ulong seed) => Inner.ResidualGatedBackward(dx, y, gate, dy, dGate, rows, dim, dropP, seed);
    public void AttentionForward(AttentionShape shape, FloatView qkv, FloatView output, FloatView lse) => Inner.AttentionForward(shape, qkv, output, lse);
    public void AttentionBackward(AttentionShape shape, FloatView qkv, FloatView output, FloatView lse, FloatView dOutput, FloatView dQkv) => Inner.AttentionBackward(shape, qkv, output, lse, dOutput, dQkv);
    public void DecodeAttention(DecodeShape shape, FloatView qkv, FloatView kCache, FloatView vCache, FloatView output) => Inner.DecodeAttention(shape, qkv, kCache, vCache, output);
    public void SubsCrossEntropy(FloatView logits, IntView targets, FloatView weights, FloatView loss, int rows, int vocab, int maskId, float gradScale, bool writeGrad) => Inner.SubsCrossEntropy(logits, targets, weights, loss, rows, vocab, maskId, gradScale, writeGrad);
    public void AdamW(FloatView param, FloatView grad, FloatView m, FloatView v, AdamWStep step) => Inner.AdamW(param, grad, m, v, step);
    public void Ema(FloatView ema, FloatView param, float decay) => Inner.Ema(ema, param, decay);
    public void SampleCategorical(FloatView logits, int rows, int vocab, int maskId, float temperature, float topP, FloatView uniforms, IntView tokens, FloatView probs) => Inner.SampleCategorical(logits, rows, vocab, maskId, temperature, topP, uniforms, tokens, probs);
    public void SumTo(FloatView x, FloatView dst, bool squares) => Inner.SumTo(x, dst, squares);
    public void AdamWClipped(FloatView param, FloatView grad, FloatView m, FloatView v, AdamWStep step, float maxNorm, FloatView gradSumSquares) =>
        Inner.AdamWClipped(param, grad, m, v, step, maxNorm, gradSumSquares);
    public void AdamWEmaClipped(FloatView param, FloatView grad, FloatView m, FloatView v, FloatView ema, AdamWStep step, float emaDecay, float maxNorm, FloatView gradSumSquares) =>
        Inner.AdamWEmaClipped(param, grad, m, v, ema, step, emaDecay, maxNorm, gradSumSquares);
    public bool ReadBackWaits => Inner.ReadBackWaits;
    public void GemmBiasGelu(bool transA, bool transB, int m, int n, int k, FloatView a, int lda, FloatView b, int ldb, FloatView bias, FloatView preActivation, FloatView output) =>
        Inner.GemmBiasGelu(transA, transB, m, n, k, a, lda, b, ldb, bias, preActivation, output);
    public void GemmGeluBackward(bool transA, bool transB, int m, int n, int k, FloatView a, int lda, FloatView b, int ldb, FloatView preActivation, FloatView dPre) =>
        Inner.GemmGeluBackward(transA, transB, m, n, k, a, lda, b, ldb, preActivation, dPre);
    public void KeepBf16Copy(FloatView weights) => Inner.KeepBf16Copy(weights);
}
