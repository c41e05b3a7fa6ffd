using System.Diagnostics;
using FastBlockDiff.Kernels;

namespace FastBlockDiff.Bench;

/// <summary>
/// An IBackend that forwards every op to another one and adds up the wall time of each op by name (synchronising after
/// each on a device backend), for the split of a training step between its ops (`train-quick --split`). Transfers are
/// forwarded untimed.
/// </summary>
public sealed class OpTimingBackend(IBackend inner) : IBackend
{
    public readonly IBackend Inner = inner;
    readonly Dictionary<string, (double Seconds, int Calls)> _ops = [];

    /// <summary>Seconds and calls per op since the last <see cref="Reset"/>, largest first.</summary>
    public IEnumerable<(string Op, double Seconds, int Calls)> Totals => _ops.Select(kv => (kv.Key, kv.Value.Seconds, kv.Value.Calls)).OrderByDescending(x => x.Seconds);
    public void Reset() => _ops.Clear();

    void Time(string op, Action body)
    {
        long t0 = Stopwatch.GetTimestamp();
        body();
        if (Inner.ReadBackWaits) Inner.Synchronize();
        var (s, c) = _ops.GetValueOrDefault(op);
        _ops[op] = (s + Stopwatch.GetElapsedTime(t0).TotalSeconds, c + 1);
    }

    T Time<T>(string op, Func<T> body)
    {
        T result = default!;
        Time(op, () => { result = body(); });
        return result;
    }

    public string Name => Inner.Name;
    public string Description => "op-timed " + Inner.Description;
    public void Dispose() => Inner.Dispose();
    public FloatView AllocFloat(int length) => Inner.AllocFloat(length);
    public IntView AllocInt(int length) => Inner.AllocInt(length);
    public void Upload(FloatView dst, ReadOnlySpan<float> src) => Inner.Upload(dst, src);
    public void Download(FloatView src, Span<float> dst) => Inner.Download(src, dst);
    public void Upload(IntView dst, ReadOnlySpan<int> src) => Inner.Upload(dst, src);
    public void Download(IntView src, Span<int> dst) => Inner.Download(src, dst);
    public void Synchronize() => Inner.Synchronize();
    public bool ReadBackWaits => Inner.ReadBackWaits;
    public void KeepBf16Copy(FloatView weights) => Inner.KeepBf16Copy(weights);

    public void Fill(FloatView x, float value) => Time("Fill", () => Inner.Fill(x, value));
    public void Copy(FloatView dst, FloatView src) => Time("Copy", () => Inner.Copy(dst, src));
    public void CopyRows(FloatView dst, int dstStride, FloatView src, int srcStride, int rows, int cols) => Time("CopyRows", () => Inner.CopyRows(dst, dstStride, src, srcStride, rows, cols));
    public void Axpy(FloatView y, float alpha, FloatView x) => Time("Axpy", () => Inner.Axpy(y, alpha, x));
    public void ScaleShift(FloatView x, float alpha, float beta) => Time("ScaleShift", () => Inner.ScaleShift(x, alpha, beta));
    public void Mul(FloatView dst, FloatView a, FloatView b, bool accumulate) => Time("Mul", () => Inner.Mul(dst, a, b, accumulate));
    public double SumSquares(FloatView x) => Time("SumSquares", () => Inner.SumSquares(x));
    public double Sum(FloatView x) => Time("Sum", () => Inner.Sum(x));
    public void ColumnSum(FloatView dst, FloatView src, int rows, int cols, bool accumulate) => Time("ColumnSum", () => Inner.ColumnSum(dst, src, rows, cols, accumulate));
    public void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, FloatView a, int lda, FloatView b, int ldb, float beta, FloatView c, int ldc,
        FloatView? bias = null, int batch = 1, long strideA = 0, long strideB = 0, long strideC = 0) =>
        Time($"Gemm {(transA ? 'T' : 'N')}{(transB ? 'T' : 'N')} {m}x{n}x{k}{(batch > 1 ? $" x{batch}" : "")}",
            () => Inner.Gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bias, batch, strideA, strideB, strideC));
    public void GemmBiasGelu(bool transA, bool transB, int m, int n, int k, FloatView a, int lda, FloatView b, int ldb, FloatView bias, FloatView preActivation, FloatView output) =>
        Time("GemmBiasGelu", () => Inner.GemmBiasGelu(transA, transB, m, n, k, a, lda, b, ldb, bias, preActivation, output));
    public void GemmGeluBackward(bool transA, bool transB, int m, int n, int k, FloatView a, int lda, FloatView b, int ldb, FloatView preActivation, FloatView dPre) =>
        Time("GemmGeluBackward", () => Inner.GemmGeluBackward(transA, transB, m, n, k, a, lda, b, ldb, preActivation, dPre));
    public void LayerNormForward(FloatView x, FloatView weight, FloatView? bias, FloatView y, FloatView mean, FloatView rstd, int rows, int dim, float eps) =>
        Time("LayerNormForward", () => Inner.LayerNormForward(x, weight, bias, y, mean, rstd, rows, dim, eps));
    public void LayerNormBackward(FloatView dy, FloatView x, FloatView weight, FloatView mean, FloatView rstd, FloatView dx, FloatView dWeight, FloatView? dBias, int rows, int dim) =>
        Time("LayerNormBackward", () => Inner.LayerNormBackward(dy, x, weight, mean, rstd, dx, dWeight, dBias, rows, dim));
    public void GeluForward(FloatView x, FloatView y) => Time("GeluForward", () => Inner.GeluForward(x, y));
    public void GeluBackward(FloatView x, FloatView dy, FloatView dx) => Time("GeluBackward", () => Inner.GeluBackward(x, dy, dx));
    public void SiluForward(FloatView x, FloatView y) => Time("SiluForward", () => Inner.SiluForward(x, y));
    public void SiluBackward(FloatView x, FloatView dy, FloatView dx) => Time("SiluBackward", () => Inner.SiluBackward(x, dy, dx));
    public void Rotary(FloatView x, int rows, int rowStride, int heads, int headDim, IntView positions, FloatView cos, FloatView sin, bool inverse) =>
        Time("Rotary", () => Inner.Rotary(x, rows, rowStride, heads, headDim, positions, cos, sin, inverse));
    public void EmbeddingForward(IntView ids, FloatView table, FloatView output, int rows, int dim) => Time("EmbeddingForward", () => Inner.EmbeddingForward(ids, table, output, rows, dim));
    public void EmbeddingBackward(IntView ids, FloatView dOutput, FloatView dTable, int rows, int dim) => Time("EmbeddingBackward", () => Inner.EmbeddingBackward(ids, dOutput, dTable, rows, dim));
    public void ResidualGatedForward(FloatView x, FloatView y, FloatView gate, int rows, int dim, float dropP, ulong seed) =>
        Time("ResidualGatedForward", () => Inner.ResidualGatedForward(x, y, gate, rows, dim, dropP, seed));
    public void ResidualGatedBackward(FloatView dx, FloatView y, FloatView gate, FloatView dy, FloatView dGate, int rows, int dim, float dropP, ulong seed) =>
        Time("ResidualGatedBackward", () => Inner.ResidualGatedBackward(dx, y, gate, dy, dGate, rows, dim, dropP, seed));
    public void AttentionForward(AttentionShape shape, FloatView qkv, FloatView output, FloatView lse) => Time("AttentionForward", () => Inner.AttentionForward(shape, qkv, output, lse));
    public void AttentionBackward(AttentionShape shape, FloatView qkv, FloatView output, FloatView lse, FloatView dOutput, FloatView dQkv) =>
        Time("AttentionBackward", () => Inner.AttentionBackward(shape, qkv, output, lse, dOutput, dQkv));
    public void DecodeAttention(DecodeShape shape, FloatView qkv, FloatView kCache, FloatView vCache, FloatView output) =>
        Time("DecodeAttention", () => Inner.DecodeAttention(shape, qkv, kCache, vCache, output));
    public void SubsCrossEntropy(FloatView logits, IntView targets, FloatView weights, FloatView loss, int rows, int vocab, int maskId, float gradScale, bool writeGrad) =>
        Time("SubsCrossEntropy", () => Inner.SubsCrossEntropy(logits, targets, weights, loss, rows, vocab, maskId, gradScale, writeGrad));
    public void AdamW(FloatView param, FloatView grad, FloatView m, FloatView v, AdamWStep step) => Time("AdamW", () => Inner.AdamW(param, grad, m, v, step));
    public void Ema(FloatView ema, FloatView param, float decay) => Time("Ema", () => Inner.Ema(ema, param, decay));
    public void AdamWEma(FloatView param, FloatView grad, FloatView m, FloatView v, FloatView ema, AdamWStep step, float emaDecay) =>
        Time("AdamWEma", () => Inner.AdamWEma(param, grad, m, v, ema, step, emaDecay));
    public void SumTo(FloatView x, FloatView dst, bool squares) => Time(squares ? "SumTo (squares)" : "SumTo", () => Inner.SumTo(x, dst, squares));
    public void AdamWClipped(FloatView param, FloatView grad, FloatView m, FloatView v, AdamWStep step, float maxNorm, FloatView gradSumSquares) =>
        Time("AdamWClipped", () => Inner.AdamWClipped(param, grad, m, v, step, maxNorm, gradSumSquares));
    public void AdamWEmaClipped(FloatView param, FloatView grad, FloatView m, FloatView v, FloatView ema, AdamWStep step, float emaDecay, float maxNorm, FloatView gradSumSquares) =>
        Time("AdamWEmaClipped", () => Inner.AdamWEmaClipped(param, grad, m, v, ema, step, emaDecay, maxNorm, gradSumSquares));
    public void SampleCategorical(FloatView logits, int rows, int vocab, int maskId, float temperature, float topP, FloatView uniforms, IntView tokens, FloatView probs) =>
        Time("SampleCategorical", () => Inner.SampleCategorical(logits, rows, vocab, maskId, temperature, topP, uniforms, tokens, probs));
}
