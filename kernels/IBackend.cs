namespace FastBlockDiff.Kernels;

/// <summary>Hyper-parameters of one fused AdamW update.</summary>
/// <param name="GradScale">multiplies every gradient first (1/accumulation × clip factor).</param>
public readonly record struct AdamWStep(float LearningRate, float Beta1, float Beta2, float Epsilon, float WeightDecay, int Step, float GradScale);

/// <summary>
/// The op set every backend implements with identical semantics (DESIGN.md section 3).
/// All matrices are row-major. "Accumulates" means the op adds into its output; otherwise it overwrites.
/// Ops are asynchronous on device backends; downloads and reductions returning a value synchronise.
/// </summary>
public interface IBackend : IDisposable
{
    /// <summary>Short name: cpu, cuda, ilgpu.</summary>
    string Name { get; }
    /// <summary>One line on the device, for logs.</summary>
    string Description { get; }

    /// <summary>A new buffer, zero-filled (engine code relies on it, e.g. for optimiser moments).</summary>
    FloatView AllocFloat(int length);
    /// <summary>A new buffer, zero-filled.</summary>
    IntView AllocInt(int length);
    void Upload(FloatView dst, ReadOnlySpan<float> src);
    void Download(FloatView src, Span<float> dst);
    void Upload(IntView dst, ReadOnlySpan<int> src);
    void Download(IntView src, Span<int> dst);
    void Synchronize();

    // ---- elementwise and reductions ----
    void Fill(FloatView x, float value);
    void Copy(FloatView dst, FloatView src);
    /// <summary>dst[r*dstStride + c] = src[r*srcStride + c] for r &lt; rows, c &lt; cols.</summary>
    void CopyRows(FloatView dst, int dstStride, FloatView src, int srcStride, int rows, int cols);
    /// <summary>y += alpha·x.</summary>
    void Axpy(FloatView y, float alpha, FloatView x);
    /// <summary>x = alpha·x + beta.</summary>
    void ScaleShift(FloatView x, float alpha, float beta);
    /// <summary>dst = a⊙b, or dst += a⊙b when accumulate.</summary>
    void Mul(FloatView dst, FloatView a, FloatView b, bool accumulate);
    /// <summary>Σ x² in double.</summary>
    double SumSquares(FloatView x);
    /// <summary>Σ x in double.</summary>
    double Sum(FloatView x);
    /// <summary>dst[c] (+)= Σ_r src[r, c] over a [rows, cols] matrix.</summary>
    void ColumnSum(FloatView dst, FloatView src, int rows, int cols, bool accumulate);

    // ---- dense algebra ----
    /// <summary>
    /// C = alpha·op(A)·op(B) + beta·C (+ bias[n] on every row), batched with element strides.
    /// op(A) is M×K: A[m*lda+k], or A[k*lda+m] when transA. op(B) is K×N: B[k*ldb+n], or B[n*ldb+k] when transB.
    /// </summary>
    void Gemm(bool transA, bool transB, int m, int n, int k, float alpha, FloatView a, int lda, FloatView b, int ldb,
        float beta, FloatView c, int ldc, FloatView? bias = null, int batch = 1, long strideA = 0, long strideB = 0, long strideC = 0);

    /// <summary>
    /// The MLP's first layer: preActivation = op(A)·op(B) + bias (a contiguous [m, n], kept for the backward), then
    /// output = GELU_tanh(preActivation). Operands as in <see cref="Gemm"/>. Device backends fold the bias and the GELU
    /// into the GEMM's epilogue (one pass over the [m, n] result instead of three).
    /// </summary>
    void GemmBiasGelu(bool transA, bool transB, int m, int n, int k, FloatView a, int lda, FloatView b, int ldb, FloatView bias, FloatView preActivation, FloatView output)
    {
        int cells = checked(m * n);
        Gemm(transA, transB, m, n, k, 1f, a, lda, b, ldb, 0f, preActivation, n, bias);
        GeluForward(preActivation.Slice(0, cells), output.Slice(0, cells));
    }

    /// <summary>
    /// The gradient into the GELU's input: dPre = (op(A)·op(B)) ⊙ GELU_tanh'(preActivation), contiguous [m, n].
    /// Device backends fold the GELU derivative into the GEMM's epilogue.
    /// </summary>
    void GemmGeluBackward(bool transA, bool transB, int m, int n, int k, FloatView a, int lda, FloatView b, int ldb, FloatView preActivation, FloatView dPre)
    {
        int cells = checked(m * n);
        Gemm(transA, transB, m, n, k, 1f, a, lda, b, ldb, 0f, dPre, n);
        GeluBackward(preActivation.Slice(0, cells), dPre.Slice(0, cells), dPre.Slice(0, cells));
    }

    /// <summary>
    /// A linear layer's weight gradients: dWeight[outDim, inDim] += dyᵀ·x and dBias[outDim] += Σ_r dy[r, :], for
    /// dy [rows, outDim] and x [rows, inDim]. Device backends take the bias gradient in the GEMM's epilogue (one pass
    /// over dy instead of two).
    /// </summary>
    void LinearWeightGradients(FloatView dy, FloatView x, FloatView dWeight, FloatView? dBias, int rows, int inDim, int outDim)
    {
        Gemm(true, false, outDim, inDim, rows, 1f, dy, outDim, x, inDim, 1f, dWeight, inDim);
        if (dBias is { } db) ColumnSum(db, dy, rows, outDim, accumulate: true);
    }

    // ---- normalisation and activations ----
    /// <summary>y = (x-mean)·rstd·weight (+bias) per row of dim; saves mean and rstd per row.</summary>
    void LayerNormForward(FloatView x, FloatView weight, FloatView? bias, FloatView y, FloatView mean, FloatView rstd, int rows, int dim, float eps);
    /// <summary>Accumulates dx, dWeight and dBias.</summary>
    void LayerNormBackward(FloatView dy, FloatView x, FloatView weight, FloatView mean, FloatView rstd,
        FloatView dx, FloatView dWeight, FloatView? dBias, int rows, int dim);
    /// <summary>y = GELU_tanh(x).</summary>
    void GeluForward(FloatView x, FloatView y);
    /// <summary>dx = dy·GELU_tanh'(x); dx may alias dy.</summary>
    void GeluBackward(FloatView x, FloatView dy, FloatView dx);
    /// <summary>y = x·sigmoid(x).</summary>
    void SiluForward(FloatView x, FloatView y);
    /// <summary>dx = dy·SiLU'(x); dx may alias dy.</summary>
    void SiluBackward(FloatView x, FloatView dy, FloatView dx);

    // ---- transformer pieces ----
    /// <summary>
    /// In place half-split (GPT-NeoX) rotary on rows of [heads, headDim] at x[r*rowStride]; the angle of
    /// pair i at position p is read from cos/sin tables laid out [maxPos, headDim/2]. inverse rotates by -θ (the backward).
    /// </summary>
    void Rotary(FloatView x, int rows, int rowStride, int heads, int headDim, IntView positions, FloatView cos, FloatView sin, bool inverse);
    /// <summary>output[r] = table[ids[r]], rows of dim.</summary>
    void EmbeddingForward(IntView ids, FloatView table, FloatView output, int rows, int dim);
    /// <summary>dTable[ids[r]] += dOutput[r].</summary>
    void EmbeddingBackward(IntView ids, FloatView dOutput, FloatView dTable, int rows, int dim);
    /// <summary>x[r,c] += gate[c]·dropout(y[r,c]); dropout keeps with <see cref="Dropout.Keep"/> and scales by 1/(1-p).</summary>
    void ResidualGatedForward(FloatView x, FloatView y, FloatView gate, int rows, int dim, float dropP, ulong seed);
    /// <summary>dy = dx·gate·mask/(1-p) (overwrites), dGate[c] += Σ_r dx·dropout(y).</summary>
    void ResidualGatedBackward(FloatView dx, FloatView y, FloatView gate, FloatView dy, FloatView dGate, int rows, int dim, float dropP, ulong seed);

    // ---- attention ----
    /// <summary>Attention over qkv [B, T, 3, H, hd] into output [B, T, H·hd], saving logsumexp [B, H, T]. Empty tiles are skipped.</summary>
    void AttentionForward(AttentionShape shape, FloatView qkv, FloatView output, FloatView lse);
    /// <summary>Writes dQkv (same layout as qkv) from dOutput, recomputing probabilities from lse.</summary>
    void AttentionBackward(AttentionShape shape, FloatView qkv, FloatView output, FloatView lse, FloatView dOutput, FloatView dQkv);
    /// <summary>Block queries against the KV cache plus the block itself (bidirectional inside the block).</summary>
    void DecodeAttention(DecodeShape shape, FloatView qkv, FloatView kCache, FloatView vCache, FloatView output);

    // ---- loss, optimiser, sampling ----
    /// <summary>
    /// Fused SUBS log-softmax + weighted cross-entropy on [rows, vocab] logits. The column maskId is treated
    /// as -inf. Rows with weight 0 (unmasked input, carried over) give loss 0 and zero gradient.
    /// loss[r] = weight[r]·(logsumexp - logit[target]). With writeGrad the logits are overwritten by
    /// gradScale·weight[r]·(softmax - onehot(target)) (0 in the mask column).
    /// </summary>
    void SubsCrossEntropy(FloatView logits, IntView targets, FloatView weights, FloatView loss, int rows, int vocab, int maskId, float gradScale, bool writeGrad);
    /// <summary>Fused AdamW over flat param/grad/moment buffers (decoupled weight decay, bias-corrected).</summary>
    void AdamW(FloatView param, FloatView grad, FloatView m, FloatView v, AdamWStep step);
    /// <summary>ema = decay·ema + (1-decay)·param.</summary>
    void Ema(FloatView ema, FloatView param, float decay);

    // ---- the device-resident step (default bodies read back at once; device backends override them) ----
    /// <summary>
    /// Σ x, or Σ x² when <paramref name="squares"/>, summed in double and left on the device in dst[0..2) as the
    /// double's 8 bytes (<see cref="DoubleSlots"/>; dst starts at an even offset). No host round trip on device backends.
    /// </summary>
    void SumTo(FloatView x, FloatView dst, bool squares)
    {
        double s = squares ? SumSquares(x) : Sum(x);
        Upload(dst.Slice(0, 2), DoubleSlots.Of(s));
    }

    /// <summary>
    /// AdamW whose gradient is first scaled by min(1, maxNorm/‖g‖) (no clipping when maxNorm ≤ 0), ‖g‖² read from the
    /// double in gradSumSquares[0..2) (written by <see cref="SumTo"/>; on the device for device backends: no host
    /// round trip). A non-finite norm leaves the parameters and moments unchanged; the caller sees it when it reads
    /// gradSumSquares.
    /// </summary>
    void AdamWClipped(FloatView param, FloatView grad, FloatView m, FloatView v, AdamWStep step, float maxNorm, FloatView gradSumSquares)
    {
        if (ClipFactor(DoubleSlots.Download(this, gradSumSquares), maxNorm) is float clip)
            AdamW(param, grad, m, v, step with { GradScale = step.GradScale * clip });
    }

    /// <summary>
    /// <see cref="AdamWClipped"/> then the EMA of the updated weights (as <see cref="AdamWEma"/>): the optimiser step of
    /// a training step with the clip factor taken on the device. A non-finite norm leaves the EMA unchanged too.
    /// </summary>
    void AdamWEmaClipped(FloatView param, FloatView grad, FloatView m, FloatView v, FloatView ema, AdamWStep step, float emaDecay, float maxNorm, FloatView gradSumSquares)
    {
        if (ClipFactor(DoubleSlots.Download(this, gradSumSquares), maxNorm) is float clip)
            AdamWEma(param, grad, m, v, ema, step with { GradScale = step.GradScale * clip }, emaDecay);
    }

    /// <summary>min(1, maxNorm/‖g‖) from Σg² (1 when maxNorm ≤ 0), or null when the norm is not finite.</summary>
    static float? ClipFactor(double sumSquares, float maxNorm)
    {
        double norm = Math.Sqrt(sumSquares);
        if (!double.IsFinite(norm)) return null;
        return maxNorm > 0 && norm > maxNorm ? (float)(maxNorm / norm) : 1f;
    }

    /// <summary>
    /// True when the backend's buffers live in device memory, so that reading one back makes the host wait for the
    /// device; the trainer then reads its loss and gradient norm only every few steps. False on the CPU.
    /// </summary>
    bool ReadBackWaits => false;

    /// <summary>
    /// A hint that GEMMs read <paramref name="weights"/> on every step: a backend computing in bf16 keeps a persistent
    /// bf16 copy of it, written by AdamW (and refreshed after any other write), instead of converting per GEMM.
    /// </summary>
    void KeepBf16Copy(FloatView weights) { }
    /// <summary>
    /// AdamW, then the EMA of the updated weights: the same result as <see cref="AdamW"/> followed by <see cref="Ema"/>,
    /// in one pass over memory where the backend fuses them (the CPU does).
    /// </summary>
    void AdamWEma(FloatView param, FloatView grad, FloatView m, FloatView v, FloatView ema, AdamWStep step, float emaDecay)
    {
        AdamW(param, grad, m, v, step);
        Ema(ema, param, emaDecay);
    }
    /// <summary>
    /// Per row: p = softmax(logits/temperature) with the mask column excluded, restricted to the smallest
    /// nucleus of mass ≥ topP and renormalised; draws a token by inverse CDF with uniforms[r] ∈ [0,1)
    /// and writes it with its (renormalised) probability.
    /// </summary>
    void SampleCategorical(FloatView logits, int rows, int vocab, int maskId, float temperature, float topP, FloatView uniforms, IntView tokens, FloatView probs);
    /// <summary>
    /// dst[dstIndex[k]] = src[srcIndex[k]] for k &lt; n: sampled tokens written into the block's ids where they stay on
    /// the device between denoising steps. Device backends run it as a kernel; this default reads and writes through the host.
    /// </summary>
    void ScatterTokens(IntView dst, IntView dstIndex, IntView src, IntView srcIndex, int n)
    {
        if (n <= 0) return;
        var (d, di, sv, si) = (new int[dst.Length], new int[n], new int[src.Length], new int[n]);
        Download(dst, d); Download(dstIndex.Slice(0, n), di); Download(src, sv); Download(srcIndex.Slice(0, n), si);
        for (int k = 0; k < n; k++) d[di[k]] = sv[si[k]];
        Upload(dst, d);
    }
}
