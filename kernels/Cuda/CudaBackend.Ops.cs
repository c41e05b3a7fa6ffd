using FastBlockDiff.Interop;

namespace FastBlockDiff.Kernels.Cuda;

public sealed unsafe partial class CudaBackend
{
    const string EW = "elementwise.cu", NORMS = "norms.cu", LOSS = "loss.cu", SAMPLE = "sampling.cu";

    // ---- elementwise and reductions ----
    public void Fill(FloatView x, float value) { Wrote(x); Flat(EW, "fbd_fill", x.Length, Ptr(x), value, x.Length); }

    public void Copy(FloatView dst, FloatView src)
    {
        if (src.Length > dst.Length) throw new ArgumentException($"copy of {src.Length} elements into a view of {dst.Length}");
        if (src.Length == 0) return;
        Wrote(dst);
        Enter();
        Cu.CopyDtoDAsync(Ptr(dst), Ptr(src), src.Length * 4L, stream);
    }

    public void CopyRows(FloatView dst, int dstStride, FloatView src, int srcStride, int rows, int cols)
    {
        if (rows <= 0 || cols <= 0) return;
        Wrote(dst);
        Launch(EW, "fbd_copy_rows", (Math.Min(Div(cols, Threads), 64u), (uint)Math.Min(rows, 65535), 1), (Threads, 1, 1), 0,
            Ptr(dst), dstStride, Ptr(src), srcStride, rows, cols);
    }

    public void Axpy(FloatView y, float alpha, FloatView x) { Wrote(y); Flat(EW, "fbd_axpy", y.Length, Ptr(y), alpha, Ptr(x), y.Length); }
    public void ScaleShift(FloatView x, float alpha, float beta) { Wrote(x); Flat(EW, "fbd_scale_shift", x.Length, Ptr(x), alpha, beta, x.Length); }
    public void Mul(FloatView dst, FloatView a, FloatView b, bool accumulate)
    {
        Wrote(dst);
        Flat(EW, "fbd_mul", dst.Length, Ptr(dst), Ptr(a), Ptr(b), accumulate ? 1 : 0, dst.Length);
    }

    public double SumSquares(FloatView x) => Reduce(x, true);
    public double Sum(FloatView x) => Reduce(x, false);

    double Reduce(FloatView x, bool squares)
    {
        if (x.Length == 0) return 0;
        uint blocks = Math.Min(Blocks(x.Length), 1024u);
        Launch(EW, "fbd_reduce_sum", (blocks, 1, 1), (Threads, 1, 1), 0, Ptr(x), x.Length, squares ? 1 : 0, partials.Pointer);
        var host = new double[blocks];
        fixed (double* p = host) { Cu.CopyDtoHAsync(p, partials.Pointer, blocks * 8L, stream); stream.Synchronize(); }
        double total = 0;
        foreach (var v in host) total += v;
        return total;
    }

    public void ColumnSum(FloatView dst, FloatView src, int rows, int cols, bool accumulate)
    {
        if (cols <= 0) return;
        if (!accumulate) { Enter(); Cu.MemsetD32Async(Ptr(dst), 0, cols, stream); }
        if (rows <= 0) return;
        int chunk = RowsPerChunk(rows, cols);
        Launch(EW, "fbd_column_sum", (Div(cols, 32), Div(rows, chunk), 1), (32, 8, 1), 0, Ptr(dst), Ptr(src), rows, cols, chunk);
    }

    // rows per block of the (32 columns x 8 row-lanes) column reductions: enough blocks to fill the device
    int RowsPerChunk(int rows, int cols)
    {
        long colBlocks = (cols + 31) / 32, want = Math.Max(1, MultiprocessorCount) * 8L;
        long chunks = Math.Clamp(want / colBlocks, 1, Math.Max(1, rows / 32));
        return (int)Math.Max(8, (rows + chunks - 1) / chunks);
    }

    void AddBias(FloatView c, int ldc, FloatView bias, int rows, int cols, long strideC, int batch) =>
        Launch(EW, "fbd_add_bias_rows", (Math.Min(Div(cols, Threads), 16u), (uint)Math.Min(rows, 65535), (uint)Math.Min(batch, 65535)), (Threads, 1, 1), 0,
            Ptr(c), ldc, Ptr(bias), rows, cols, strideC, batch);

    // ---- normalisation and activations ----
    public void LayerNormForward(FloatView x, FloatView weight, FloatView? bias, FloatView y, FloatView mean, FloatView rstd, int rows, int dim, float eps)
    {
        if (rows <= 0) return;
        Wrote(y);
        // in bf16 mode the output is also written rounded to bf16, for the GEMM that reads it next (no conversion pass there)
        var output = y.Slice(0, checked(rows * dim));
        ulong y16 = Bf16Gemm ? LayerNormTwin(output) : 0;
        Launch(NORMS, "fbd_layernorm_fwd", ((uint)rows, 1, 1), (RowThreads(dim), 1, 1), 0,
            Ptr(x), Ptr(weight), Ptr(bias), Ptr(y), y16, Ptr(mean), Ptr(rstd), rows, dim, eps);
        if (y16 != 0) twinStamp = ops;
    }

    public void LayerNormBackward(FloatView dy, FloatView x, FloatView weight, FloatView mean, FloatView rstd,
        FloatView dx, FloatView dWeight, FloatView? dBias, int rows, int dim)
    {
        if (rows <= 0) return;
        Launch(NORMS, "fbd_layernorm_bwd_dx", ((uint)rows, 1, 1), (RowThreads(dim), 1, 1), 0,
            Ptr(dy), Ptr(x), Ptr(weight), Ptr(mean), Ptr(rstd), Ptr(dx), rows, dim);
        int chunk = RowsPerChunk(rows, dim);
        Launch(NORMS, "fbd_layernorm_bwd_dw", (Div(dim, 32), Div(rows, chunk), 1), (32, 8, 1), 0,
            Ptr(dy), Ptr(x), Ptr(mean), Ptr(rstd), Ptr(dWeight), Ptr(dBias), rows, dim, chunk);
    }

    public void GeluForward(FloatView x, FloatView y) => Flat(EW, "fbd_gelu_fwd", x.Length, Ptr(x), Ptr(y), x.Length);
    public void GeluBackward(FloatView x, FloatView dy, FloatView dx) => Flat(EW, "fbd_gelu_bwd", x.Length, Ptr(x), Ptr(dy), Ptr(dx), x.Length);
    public void SiluForward(FloatView x, FloatView y) => Flat(EW, "fbd_silu_fwd", x.Length, Ptr(x), Ptr(y), x.Length);
    public void SiluBackward(FloatView x, FloatView dy, FloatView dx) => Flat(EW, "fbd_silu_bwd", x.Length, Ptr(x), Ptr(dy), Ptr(dx), x.Length);

    // ---- transformer pieces ----
    public void Rotary(FloatView x, int rows, int rowStride, int heads, int headDim, IntView positions, FloatView cos, FloatView sin, bool inverse) =>
        Launch(NORMS, "fbd_rotary", ((uint)Math.Clamp(rows, 1, 65535), 1, 1), (RowThreads(heads * (headDim / 2)), 1, 1), 0,
            Ptr(x), rows, rowStride, heads, headDim, Ptr(positions), Ptr(cos), Ptr(sin), inverse ? -1f : 1f);

    public void EmbeddingForward(IntView ids, FloatView table, FloatView output, int rows, int dim)
    {
        if (rows <= 0) return;
        flagPending = true;
        Launch(NORMS, "fbd_embedding_fwd", ((uint)Math.Clamp(rows, 1, 65535), 1, 1), (RowThreads(dim), 1, 1), 0,
            Ptr(ids), Ptr(table), Ptr(output), rows, dim, table.Length / dim, flag.Pointer);
    }

    public void EmbeddingBackward(IntView ids, FloatView dOutput, FloatView dTable, int rows, int dim) =>
        Launch(NORMS, "fbd_embedding_bwd", ((uint)Math.Clamp(rows, 1, 65535), 1, 1), (RowThreads(dim), 1, 1), 0,
            Ptr(ids), Ptr(dOutput), Ptr(dTable), rows, dim, dTable.Length / dim);

    static float KeepScale(float p) => p > 0 ? 1f / (1f - p) : 1f;

    public void ResidualGatedForward(FloatView x, FloatView y, FloatView gate, int rows, int dim, float dropP, ulong seed) =>
        Flat(NORMS, "fbd_residual_gated_fwd", (long)rows * dim, Ptr(x), Ptr(y), Ptr(gate), rows, dim, dropP, KeepScale(dropP), seed);

    public void ResidualGatedBackward(FloatView dx, FloatView y, FloatView gate, FloatView dy, FloatView dGate, int rows, int dim, float dropP, ulong seed)
    {
        if (rows <= 0 || dim <= 0) return;
        int chunk = RowsPerChunk(rows, dim);
        Launch(NORMS, "fbd_residual_gated_bwd", (Div(dim, 32), Div(rows, chunk), 1), (32, 8, 1), 0,
            Ptr(dx), Ptr(y), Ptr(gate), Ptr(dy), Ptr(dGate), rows, dim, dropP, KeepScale(dropP), seed, chunk);
    }

    // ---- loss, optimiser, sampling ----
    public void SubsCrossEntropy(FloatView logits, IntView targets, FloatView weights, FloatView loss, int rows, int vocab, int maskId, float gradScale, bool writeGrad) =>
        Launch(LOSS, "fbd_subs_ce", ((uint)rows, 1, 1), (Math.Min(RowThreads(vocab) * 2, 512u), 1, 1), 0,
            Ptr(logits), Ptr(targets), Ptr(weights), Ptr(loss), rows, vocab, maskId, gradScale, writeGrad ? 1 : 0);

    public void AdamW(FloatView param, FloatView grad, FloatView m, FloatView v, AdamWStep s) => AdamWDevice(param, grad, m, v, null, s, 0f, 0f, null);

    public void AdamWEma(FloatView param, FloatView grad, FloatView m, FloatView v, FloatView ema, AdamWStep s, float emaDecay) =>
        AdamWDevice(param, grad, m, v, ema, s, emaDecay, 0f, null);

    public void AdamWClipped(FloatView param, FloatView grad, FloatView m, FloatView v, AdamWStep s, float maxNorm, FloatView gradSumSquares) =>
        AdamWDevice(param, grad, m, v, null, s, 0f, maxNorm, gradSumSquares);

    public void AdamWEmaClipped(FloatView param, FloatView grad, FloatView m, FloatView v, FloatView ema, AdamWStep s, float emaDecay, float maxNorm, FloatView gradSumSquares) =>
        AdamWDevice(param, grad, m, v, ema, s, emaDecay, maxNorm, gradSumSquares);

    void AdamWDevice(FloatView param, FloatView grad, FloatView m, FloatView v, FloatView? ema, AdamWStep s, float emaDecay, float maxNorm, FloatView? gradSumSquares)
    {
        // the same float formulas as the CPU reference
        float bc1 = 1f - MathF.Pow(s.Beta1, s.Step), bc2 = 1f - MathF.Pow(s.Beta2, s.Step);
        float decay = 1f - s.LearningRate * s.WeightDecay, stepSize = s.LearningRate / bc1, sqrtBc2 = MathF.Sqrt(bc2);
        // the bf16 weight copy is written in the same pass when param is the mirrored buffer, else marked stale
        ulong p16 = Bf16CopyFor(param, writing: true);
        if (ema is { } e) Wrote(e);
        Flat(EW, "fbd_adamw_dev", param.Length, Ptr(param), p16, Ptr(grad), Ptr(m), Ptr(v), s.Beta1, s.Beta2, s.Epsilon, decay, stepSize, sqrtBc2,
            s.GradScale, gradSumSquares is { } ss ? DoublePtr(ss) : 0UL, maxNorm, Ptr(ema), emaDecay, param.Length);
    }

    /// <summary>The address of the double in slots [0, 2) of v (8-byte aligned: v starts at an even offset of its buffer).</summary>
    static ulong DoublePtr(FloatView v)
    {
        if (v.Length < 2 || v.Offset % 2 != 0)
            throw new ArgumentException($"a double needs two float slots at an even offset, got a view of {v.Length} at offset {v.Offset}");
        return Ptr(v);
    }

    public void SumTo(FloatView x, FloatView dst, bool squares)
    {
        ulong d = DoublePtr(dst);
        Wrote(dst);
        if (x.Length == 0) { Enter(); Cu.MemsetD32Async(d, 0, 2, stream); return; }
        uint blocks = Math.Min(Blocks(x.Length), 1024u);
        Launch(EW, "fbd_reduce_sum", (blocks, 1, 1), (Threads, 1, 1), 0, Ptr(x), x.Length, squares ? 1 : 0, partials.Pointer);
        Launch(EW, "fbd_sum_partials", (1, 1, 1), (Threads, 1, 1), 0, partials.Pointer, (int)blocks, d);
    }

    /// <summary>Buffers live in device memory: a read-back waits for the device.</summary>
    public bool ReadBackWaits => true;

    public void Ema(FloatView ema, FloatView param, float decay) { Wrote(ema); Flat(EW, "fbd_ema", ema.Length, Ptr(ema), Ptr(param), decay, ema.Length); }

    public void SampleCategorical(FloatView logits, int rows, int vocab, int maskId, float temperature, float topP, FloatView uniforms, IntView tokens, FloatView probs)
    {
        if (rows <= 0) return;
        ulong p = Scratch("sample.p", (long)rows * vocab * 4);
        Launch(SAMPLE, "fbd_sample", ((uint)rows, 1, 1), (256, 1, 1), 0,
            Ptr(logits), rows, vocab, maskId, temperature, topP, Ptr(uniforms), Ptr(tokens), Ptr(probs), p);
    }

    public void ScatterTokens(IntView dst, IntView dstIndex, IntView src, IntView srcIndex, int n) =>
        Flat(SAMPLE, "fbd_scatter_tokens", n, Ptr(dst), Ptr(dstIndex), Ptr(src), Ptr(srcIndex), n);
}
