using System.Numerics.Tensors;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Bench;

/// <summary>
/// Bench-only peer: the same attention as <see cref="IBackend.AttentionForward"/> done densely, the way a framework
/// without tile skipping does it: S = scale·Q·Kᵀ over the whole T×T square (a batched GEMM over heads), plus an
/// additive mask tensor (0 / -inf, materialised once like a boolean attn_mask), row softmax, O = P·V (GEMM). The
/// backward is the textbook dense one from the saved P: dP = dO·Vᵀ, dS = P⊙(dP − rowsum(dO⊙O)), dQ = scale·dS·K,
/// dK = scale·dSᵀ·Q, dV = Pᵀ·dO. GEMMs go through the backend's Gemm (the same code our engine uses); mask and softmax
/// run on host spans, so this peer exists for the CPU backend only. Memory is O(H·T²) per sequence.
/// </summary>
public sealed class DenseMaskedAttention : IDisposable
{
    readonly IBackend _b;
    readonly AttentionShape _s;
    readonly FloatView _sBuf, _dpBuf;
    readonly float[] _bias;

    public DenseMaskedAttention(IBackend backend, AttentionShape shape)
    {
        if (backend is not CpuBackend) throw new NotSupportedException("DenseMaskedAttention runs mask+softmax on host spans: CPU backend only");
        shape.Validate();
        _b = backend; _s = shape;
        long sq = (long)shape.Heads * shape.SeqLen * shape.SeqLen;
        if (sq > int.MaxValue) throw new ArgumentException($"dense attention would need {sq} floats per sequence");
        _sBuf = backend.AllocFloat((int)sq);
        _dpBuf = backend.AllocFloat((int)sq);
        int T = shape.SeqLen;
        _bias = new float[T * T];
        for (int i = 0; i < T; i++)
            for (int j = 0; j < T; j++)
                _bias[i * T + j] = Bd3Mask.Allowed(shape.Mask, T, shape.BlockSize, i, j) ? 0f : float.NegativeInfinity;
    }

    public void Dispose() { _sBuf.Storage.Dispose(); _dpBuf.Storage.Dispose(); }

    /// <summary>Forward of every sequence; the probabilities of the last sequence stay in the S buffer (the backward recomputes per sequence).</summary>
    public void Forward(FloatView qkv, FloatView output, FloatView lse)
    {
        for (int b = 0; b < _s.Batch; b++) ForwardOne(b, qkv, output, lse);
    }

    void ForwardOne(int b, FloatView qkv, FloatView output, FloatView lse)
    {
        int T = _s.SeqLen, H = _s.Heads, hd = _s.HeadDim, D = _s.ModelDim, st = 3 * D;
        float scale = 1f / MathF.Sqrt(hd);
        var q = qkv.Slice(b * T * st);
        _b.Gemm(false, true, T, T, hd, scale, q, st, q.Slice(D), st, 0f, _sBuf, T, batch: H, strideA: hd, strideB: hd, strideC: (long)T * T);
        float[] sa = CpuBackend.Storage(_sBuf), la = CpuBackend.Storage(lse), bias = _bias;
        int so = _sBuf.Offset, lo = lse.Offset;
        Parallel.For(0, H * T, r =>
        {
            int h = r / T, i = r % T;
            var row = sa.AsSpan(so + r * T, T);
            TensorPrimitives.Add(row, bias.AsSpan(i * T, T), row);
            float max = TensorPrimitives.Max(row);
            TensorPrimitives.Subtract(row, max, row);
            TensorPrimitives.Exp(row, row);
            float sum = TensorPrimitives.Sum(row);
            TensorPrimitives.Multiply(row, 1f / sum, row);
            la[lo + (b * H + h) * T + i] = max + MathF.Log(sum);
        });
        _b.Gemm(false, false, T, hd, T, 1f, _sBuf, T, q.Slice(2 * D), st, 0f, output.Slice(b * T * D), D,
            batch: H, strideA: (long)T * T, strideB: hd, strideC: hd);
    }

    /// <summary>Dense backward into dQkv (overwrites), recomputing each sequence's P first.</summary>
    public void Backward(FloatView qkv, FloatView output, FloatView lse, FloatView dOutput, FloatView dQkv)
    {
        int T = _s.SeqLen, H = _s.Heads, hd = _s.HeadDim, D = _s.ModelDim, st = 3 * D;
        float scale = 1f / MathF.Sqrt(hd);
        for (int b = 0; b < _s.Batch; b++)
        {
            ForwardOne(b, qkv, output, lse); // P of this sequence into _sBuf
            var q = qkv.Slice(b * T * st);
            var dOut = dOutput.Slice(b * T * D);
            var dq = dQkv.Slice(b * T * st);
            _b.Gemm(false, true, T, T, hd, 1f, dOut, D, q.Slice(2 * D), st, 0f, _dpBuf, T, batch: H, strideA: hd, strideB: hd, strideC: (long)T * T);
            float[] pa = CpuBackend.Storage(_sBuf), dpa = CpuBackend.Storage(_dpBuf), oa = CpuBackend.Storage(output), ga = CpuBackend.Storage(dOutput);
            int po = _sBuf.Offset, dpo = _dpBuf.Offset, oo = output.Offset + b * T * D, go = dOutput.Offset + b * T * D;
            Parallel.For(0, H * T, r =>
            {
                int h = r / T, i = r % T;
                float di = TensorPrimitives.Dot(oa.AsSpan(oo + i * D + h * hd, hd), ga.AsSpan(go + i * D + h * hd, hd));
                var dpr = dpa.AsSpan(dpo + r * T, T);
                TensorPrimitives.Subtract(dpr, di, dpr);
                TensorPrimitives.Multiply(dpr, pa.AsSpan(po + r * T, T), dpr); // dS
            });
            // dQ = scale·dS·K, dK = scale·dSᵀ·Q, dV = Pᵀ·dO
            _b.Gemm(false, false, T, hd, T, scale, _dpBuf, T, q.Slice(D), st, 0f, dq, st, batch: H, strideA: (long)T * T, strideB: hd, strideC: hd);
            _b.Gemm(true, false, T, hd, T, scale, _dpBuf, T, q, st, 0f, dq.Slice(D), st, batch: H, strideA: (long)T * T, strideB: hd, strideC: hd);
            _b.Gemm(true, false, T, hd, T, 1f, _sBuf, T, dOut, D, 0f, dq.Slice(2 * D), st, batch: H, strideA: (long)T * T, strideB: hd, strideC: hd);
        }
    }

}
